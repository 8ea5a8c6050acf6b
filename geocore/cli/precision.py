"""`--precision auto|fp32|bf16`, shared by the inference commands, and the line that says what it chose.

Nothing heavy at import time (`geocore --help` stays free of torch): `geocore.models.precision` is imported
inside the functions.
"""

from __future__ import annotations

from typing import Any

import typer

PRECISION_OPT = typer.Option(
    "auto", "--precision",
    help="Precision of the image/text towers: auto (bf16 where the hardware runs it fast: a CUDA GPU, or a CPU "
         "with AMX or AVX512-BF16; else fp32), fp32 or bf16. The location encoder, gallery scan and softmax "
         "never run in bf16.")


def check_precision(choice: str) -> None:
    """Validate `--precision` before anything is loaded: InputError naming the option for a bad value."""
    from geocore.models.precision import resolve_precision

    resolve_precision(choice, "cpu")


def describe_precision(choice: str, device: Any) -> tuple[str, str]:
    """(precision used, "precision: bf16 (auto: CPU has avx512_bf16)") for `--precision choice` on `device`."""
    import torch

    from geocore.models.precision import cpu_bf16_flags, fast_bf16, resolve_precision

    used = resolve_precision(choice, device)
    device = torch.device(device)
    if choice.lower() != "auto":
        slow = used == "bf16" and not fast_bf16(device)
        return used, f"precision: {used}" + (f" (no native bf16 on this {device.type}: may be slower than fp32)"
                                             if slow else "")
    if device.type == "cuda":
        why = "CUDA GPU with bf16" if used == "bf16" else "CUDA GPU without bf16"
    elif device.type == "cpu":
        flags = cpu_bf16_flags()
        why = f"CPU has {' and '.join(flags)}" if flags else "CPU has no AMX or AVX512-BF16"
    else:
        why = f"no fast bf16 known on {device.type}"
    return used, f"precision: {used} (auto: {why})"
