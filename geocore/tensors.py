"""Tensors leaving the network: detached, on the CPU, as numpy arrays. Every layer may use these.

torch is not imported here: a tensor is known by its `detach` method, so importing this costs nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def as_numpy(x: Any, dtype: Any = None) -> np.ndarray:
    """A tensor (any device, with or without grad; bf16 too) or anything array-like → a numpy array, of `dtype`
    when given (no copy where none is needed)."""
    if hasattr(x, "detach") and hasattr(x, "numpy"):  # a torch tensor
        x = x.detach().to("cpu")
        if str(x.dtype) == "torch.bfloat16":  # no numpy dtype for it
            x = x.float()
        x = x.numpy()
    return np.asarray(x, dtype)


def on_cpu(x: Any, dtype: Any = None) -> Any:
    """A tensor detached and on the CPU (of the torch `dtype` when given); anything else through `torch.as_tensor`."""
    if not hasattr(x, "detach"):
        import torch

        x = torch.as_tensor(x)
    return x.detach().to("cpu", dtype)
