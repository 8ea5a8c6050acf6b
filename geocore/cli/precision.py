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


def describe_precision(choice: str, device: Any, model: Any = None) -> tuple[str, str]:
    """(precision used, "precision: bf16 (auto: this CPU has avx512_bf16)") for `--precision choice` on `device`."""
    from geocore.models.precision import precision_reason, resolve_precision

    return resolve_precision(choice, device, model), f"precision: {precision_reason(choice, device, model)}"
