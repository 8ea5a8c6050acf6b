"""Devices, nodes and strategy as Lightning's Trainer takes them, with the one rule training and prediction share:
DDP when a run spans more than one device or node."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from geocore.errors import InputError

ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
STRATEGIES = ("auto", "ddp")  # ddp: one process per device, started by Lightning, torchrun or SLURM


@dataclass(frozen=True)
class DeviceOptions:
    """Where a run goes: `accelerator`, `devices` per node (a count, -1 for all, or a list of indices),
    `num_nodes`, and `strategy` (None: ddp when the run spans more than one device or node, else auto)."""

    accelerator: str = "auto"
    devices: int | str | list[int] = 1
    num_nodes: int = 1
    strategy: str | None = None

    @property
    def distributed(self) -> bool:
        """More than one process: several nodes, several devices, or all of them (-1, "auto": may be several)."""
        d = self.devices
        many = (len(d) > 1 if isinstance(d, list) else d in (-1, "-1", "auto") or (isinstance(d, int) and d > 1))
        return self.num_nodes > 1 or many

    @property
    def trainer_strategy(self) -> str:
        """The strategy handed to Lightning: the one asked for, else ddp for a distributed run, else auto."""
        return self.strategy or ("ddp" if self.distributed else "auto")

    def world_size(self) -> int:
        """Processes in the run when it is known from the options (all devices, -1, counts as one per node)."""
        d = self.devices
        per_node = len(d) if isinstance(d, list) else (d if isinstance(d, int) and d > 0 else 1)
        return self.num_nodes * per_node


def device_options(*, device: str | None = None, accelerator: str | None = None, devices: int | None = None,
                   num_nodes: int | None = None, strategy: str | None = None) -> DeviceOptions:
    """Check a command's device options (naming the bad one) and turn them into `DeviceOptions`.

    `device` is the older `--device cpu|cuda|cuda:N` (one device); it cannot be combined with `--accelerator` or
    `--devices`."""
    if device is not None:
        if accelerator is not None or devices is not None:
            raise InputError(f"--device {device}: pass either --device or --accelerator/--devices, not both")
        accelerator, devices = _from_device(device)
    accelerator = (accelerator or "auto").lower()
    if accelerator not in ACCELERATORS:
        raise InputError(f"--accelerator {accelerator}: expected one of {', '.join(ACCELERATORS)}")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise InputError(f"--accelerator {accelerator}: CUDA is not available on this machine (use --accelerator cpu)")
    if strategy is not None and strategy.lower() not in STRATEGIES:
        raise InputError(f"--strategy {strategy}: expected one of {', '.join(STRATEGIES)} (ddp runs one process per "
                         "device, started by Lightning, torchrun or SLURM)")
    for name, value in (("--devices", devices), ("--num-nodes", num_nodes)):
        if isinstance(value, int) and value < 1 and not (name == "--devices" and value == -1):
            raise InputError(f"{name} {value}: expected a whole number >= 1")
    return DeviceOptions(accelerator=accelerator, devices=devices if devices is not None else 1,
                         num_nodes=num_nodes or 1, strategy=strategy.lower() if strategy else None)


def _from_device(device: str) -> tuple[str, int | list[int]]:
    """`cpu`, `cuda` or `cuda:N` → (accelerator, devices); a clear error when CUDA is asked for and absent."""
    if device == "cpu":
        return "cpu", 1
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
        return "gpu", [int(device[5:])] if ":" in device else 1
    raise InputError(f"--device {device}: expected cpu, cuda or cuda:N")
