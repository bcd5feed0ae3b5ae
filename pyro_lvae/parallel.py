"""Run independent training jobs in parallel processes (one torch thread each).

Small networks do not use two cores well from one process; separate processes do. Workers are
started with ``spawn`` (forking a process whose torch thread pools already exist can hang).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import torch

__all__ = ["run_jobs", "default_workers"]

logger = logging.getLogger(__name__)


def default_workers(device: str | torch.device = "cpu") -> int:
    """One worker per CPU core on the CPU; one process for a GPU."""
    if torch.device(device).type == "cuda":
        return 1
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else (os.cpu_count() or 1))


def _init_worker() -> None:
    torch.set_num_threads(1)


def run_jobs(
    fn: Callable[[dict[str, Any]], dict[str, Any]],
    jobs: Sequence[dict[str, Any]],
    workers: int = 1,
    report: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """``[fn(job) for job in jobs]``, in ``workers`` processes; results in the order of ``jobs``.

    ``fn`` must be a module-level function (it is pickled). ``report`` receives one line per
    finished job.
    """
    report = report or (lambda line: logger.info(line))
    t0 = time.perf_counter()
    if workers <= 1 or len(jobs) <= 1:
        results = []
        for i, job in enumerate(jobs):
            results.append(fn(job))
            seconds = time.perf_counter() - t0
            report(f"[{i + 1}/{len(jobs)}] {job.get('label', i)} ({seconds:.0f} s)")
        return results
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                             initializer=_init_worker) as pool:
        futures = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
        for done, future in enumerate(as_completed(futures), start=1):
            i = futures[future]
            results[i] = future.result()
            report(f"[{done}/{len(jobs)}] {jobs[i].get('label', i)} "
                   f"({time.perf_counter() - t0:.0f} s)")
    return results  # type: ignore[return-value]
