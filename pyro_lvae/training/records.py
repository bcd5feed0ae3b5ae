"""What a run's record says about how it ran: wall-clock and CPU seconds of training and the
device, for every command's ``summary.json``.

Example::

    >>> from pyro_lvae.training.records import RunClock
    >>> with RunClock() as clock:
    ...     _ = sum(range(1000))
    >>> sorted(clock.record("cpu"))
    ['device', 'device_name', 'train_cpu_seconds', 'train_seconds']
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import torch

__all__ = ["RunClock", "device_name"]


def _processor() -> str:
    """The processor's model name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def device_name(device: str | torch.device) -> str:
    """A readable name of ``device``: the GPU's model for CUDA devices, the processor and the
    number of torch threads for the CPU."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        processor = _processor()
        return (f"{processor}, {os.cpu_count()} logical cores, "
                f"{torch.get_num_threads()} torch threads")
    return str(device)


class RunClock:
    """Times a block: wall-clock seconds (``time.perf_counter``) and this process's CPU
    seconds over all its threads (``time.process_time``; worker processes, such as a
    ``DataLoader``'s, are not counted)."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> RunClock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu

    def record(self, device: str | torch.device) -> dict[str, Any]:
        """``train_seconds`` (wall), ``train_cpu_seconds``, and the ``device`` the block ran
        on with its ``device_name``."""
        return {"train_seconds": round(self.wall, 2), "train_cpu_seconds": round(self.cpu, 2),
                "device": str(device), "device_name": device_name(device)}
