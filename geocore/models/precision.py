"""Numeric precision of inference: `fp32`, `bf16`, or `auto` (bf16 where the hardware runs it fast).

bf16 runs the heavy image/text towers under `torch.autocast(dtype=bfloat16)`; everything that decides
an answer stays float32: the GPS location encoder (random Fourier features at σ = 2^8 have phases of
thousands of radians, which bf16's 8-bit mantissa would scramble), the gallery scan and the softmax.

The choice is a context, not a model attribute, so one model shared by several app sessions (threads) can
serve each at its own precision:

    with use_precision("auto", model.device, model):  # the model: `auto` keeps small ones in fp32
        pred = model.predict(pixels)

Models wrap their backbone calls in `compute_autocast(device)`, which reads the current choice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path

import torch

from geocore.errors import InputError

PRECISIONS = ("auto", "fp32", "bf16")
# `auto` keeps fp32 for models smaller than this: measured on an AVX512-BF16 CPU (bench/RESULTS.md, "Precision"),
# bf16 ran ViT-B/16 and ViT-L/14 2.1–2.3× faster but the 14M-parameter geoclip-tiny 3× slower (casts dominate).
BF16_MIN_PARAMETERS = 50_000_000
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs with native bf16 dot products

_CURRENT: ContextVar[str] = ContextVar("geocore_precision", default="fp32")


@lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The native-bf16 instruction sets this CPU reports (AMX, AVX512-BF16); () when none or unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:  # not Linux: fall back to what PyTorch's dispatcher saw
        return ("amx_bf16",) if "AMX" in torch.backends.cpu.get_cpu_capability().upper() else ()
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
            break
    return tuple(f for f in CPU_BF16_FLAGS if f in flags)


def fast_bf16(device: torch.device | str) -> bool:
    """True where bf16 matrix products run faster than fp32: a CUDA GPU with bf16, or a CPU with AMX/AVX512-BF16."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(cpu_bf16_flags())
    return False


def parameter_count(model: torch.nn.Module | None) -> int | None:
    return None if model is None else sum(p.numel() for p in model.parameters())


def resolve_precision(precision: str | None, device: torch.device | str = "cpu",
                      model: torch.nn.Module | None = None) -> str:
    """`auto` | `fp32` | `bf16` (None = `fp32`) → the precision actually used on `device`: `fp32` or `bf16`.
    `auto` with a `model` of fewer than `BF16_MIN_PARAMETERS` parameters stays fp32 (bf16 would be slower)."""
    choice = (precision or "fp32").lower()
    if choice not in PRECISIONS:
        raise InputError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if choice == "auto":
        small = model is not None and parameter_count(model) < BF16_MIN_PARAMETERS
        return "bf16" if fast_bf16(device) and not small else "fp32"
    return choice


def precision_reason(choice: str, device: torch.device | str, model: torch.nn.Module | None = None) -> str:
    """What `--precision choice` runs on `device`, in words: "bf16 (auto: this CPU has avx512_bf16)", "fp32 (auto:
    a 14.1M-parameter model, too small for bf16 to pay)", "fp32 (chosen)", "bf16 (chosen; this CPU has no native
    bf16, so it may be slower than fp32)"."""
    used = resolve_precision(choice, device, model)
    device = torch.device(device)
    if choice.lower() != "auto":
        slow = used == "bf16" and not fast_bf16(device)
        return f"{used} (chosen" + (f"; this {device.type.upper()} has no native bf16, so it may be slower than fp32)"
                                   if slow else ")")
    n = parameter_count(model)
    if fast_bf16(device) and n is not None and n < BF16_MIN_PARAMETERS:
        return f"{used} (auto: a {n / 1e6:.1f}M-parameter model, too small for bf16 to pay)"
    if device.type == "cuda":
        why = "this GPU runs bf16" if used == "bf16" else "this GPU has no bf16"
    elif device.type == "cpu":
        flags = cpu_bf16_flags()
        why = f"this CPU has {' and '.join(flags)}" if flags else "this CPU has no AMX or AVX512-BF16"
    else:
        why = f"no fast bf16 known on {device.type}"
    return f"{used} (auto: {why})"


def current_precision() -> str:
    """The precision in force in this thread/context (`fp32` unless inside `use_precision`)."""
    return _CURRENT.get()


@contextlib.contextmanager
def use_precision(precision: str | None, device: torch.device | str = "cpu",
                  model: torch.nn.Module | None = None) -> Iterator[str]:
    """Run the enclosed inference at `precision` (resolved for `device` and `model`); yields the resolved name."""
    resolved = resolve_precision(precision, device, model)
    token = _CURRENT.set(resolved)
    try:
        yield resolved
    finally:
        _CURRENT.reset(token)


def compute_autocast(device: torch.device | str) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` when the current precision is bf16, else nothing. Models wrap their backbones."""
    if _CURRENT.get() != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def full_precision(device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast off: for the parts that must stay float32 (location encoder, gallery scan, softmax)."""
    return torch.autocast(torch.device(device).type, enabled=False)
