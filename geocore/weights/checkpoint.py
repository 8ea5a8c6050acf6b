"""The one checkpoint format of every geocore model: a .safetensors file of tensors whose header holds the
model's registry name and its JSON config (architecture, cells, backbone, gallery choice).

    save_checkpoint(path, "translocator", model.state_dict(), model.config)
    ckpt = load_checkpoint(path)       # Checkpoint(model="translocator", config={...}, tensors={...})

Files are written atomically (a temporary file renamed over the target), so a kill mid-write leaves the old
file or none. safetensors holds no code: loading never executes anything from the file.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from geocore.errors import InputError

FORMAT = "geocore-checkpoint-v1"
SUFFIX = ".safetensors"


@dataclass(frozen=True)
class Checkpoint:
    model: str  # registry name, e.g. "geoclip", "translocator"
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]


def checkpoint_path(path: str | Path) -> Path:
    """`path` with the .safetensors suffix (added when it has none; another suffix is an InputError)."""
    path = Path(path)
    if path.suffix == "":
        return path.with_suffix(SUFFIX)
    if path.suffix != SUFFIX:
        raise InputError(f"{path}: checkpoints are .safetensors files")
    return path


def save_checkpoint(path: str | Path, model: str, state_dict: Mapping[str, torch.Tensor],
                    config: Mapping[str, Any]) -> Path:
    """Write tensors + {model, config} atomically; returns the file's path."""
    from safetensors.torch import save_file

    path = checkpoint_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    meta = {"format": FORMAT, "model": model, "config": json.dumps(dict(config))}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, expect_model: str | None = None) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`; InputError naming the file for anything else."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # truncated, foreign or not a safetensors file at all
        raise InputError(f"{path}: not a geocore checkpoint ({type(err).__name__}); expected a .safetensors "
                         "file written by geocore training") from None
    if meta.get("format") != FORMAT or "model" not in meta:
        raise InputError(f"{path}: not a geocore checkpoint (no '{FORMAT}' header)")
    try:
        config = json.loads(meta.get("config", "{}"))
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: checkpoint config is not JSON ({err})") from None
    if expect_model is not None and meta["model"] != expect_model:
        raise InputError(f"{path}: a {meta['model']} checkpoint, not {expect_model}")
    return Checkpoint(meta["model"], config, tensors)
