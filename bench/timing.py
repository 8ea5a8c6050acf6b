"""Timing helpers for benchmarks: medians of repeated runs, with min–max, the machine's description, and writing
one section of RESULTS.md."""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Timing:
    median_s: float
    min_s: float
    max_s: float
    runs: int

    def fmt(self, unit: str = "ms") -> str:
        k = {"s": 1.0, "ms": 1e3, "us": 1e6}[unit]
        return f"{self.median_s * k:,.1f} {unit} ({self.min_s * k:,.1f}–{self.max_s * k:,.1f})"


def measure(fn: Callable[[], object], runs: int = 5, warmup: int = 1) -> Timing:
    """Median, min and max wall time of `fn` over `runs` runs after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return Timing(statistics.median(times), min(times), max(times), runs)


def machine() -> str:
    """One line: CPU, cores, memory, torch, device."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {gpu}")


RESULTS = Path(__file__).with_name("RESULTS.md")


def write_section(lines: list[str], heading: str, out: Path = RESULTS) -> None:
    """Put `lines` (a section starting with `## heading`) into RESULTS.md in place of that section, or at the end."""
    text = out.read_text(encoding="utf-8") if out.exists() else "# Benchmark results\n"
    block = "\n".join(lines) + "\n"
    pattern = re.compile(r"^## " + re.escape(heading) + r".*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: block + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
    out.write_text(text, encoding="utf-8")
