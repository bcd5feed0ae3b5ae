"""Run independent training jobs in parallel processes (one torch thread each).

Small networks do not use two cores well from one process; separate processes do. Workers are
started with ``spawn`` (forking a process whose torch thread pools already exist can hang).

Jobs run with subnormal floats flushed to zero on the CPU: where a parameter's gradient is
exactly zero (weights of ReLU units inactive on the batch), Adam's first moment shrinks by 0.9
per step into the subnormal range, where the CPU's arithmetic is many times slower (a residual
MLP 4x200 step went from 11.6 to 17 ms over 1500 steps with them, and stayed at 10.5 ms
without; docs/performance.md). Values below 1.2e-38 become 0, nothing else changes.

With ``cache=FOLDER``, each finished job's result is written there (JSON, atomically) under
a name derived from the job's settings and the package version; a later call with the same
jobs reads it back instead of training again, so a long study that was interrupted resumes
where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import check_positive_int
from ..io import atomic_write_text

__all__ = ["run_jobs", "default_workers", "job_key", "encode_result", "decode_result"]

logger = logging.getLogger(__name__)


def default_workers(device: str | torch.device = "cpu") -> int:
    """One worker per CPU core on the CPU; one process for a GPU."""
    if torch.device(device).type == "cuda":
        return 1
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else (os.cpu_count() or 1))


def _init_worker() -> None:
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)


@contextmanager
def _flush_denormal():
    """Flush subnormals in this process while the jobs run (the default, off, afterwards)."""
    changed = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if changed:
            torch.set_flush_denormal(False)


# ---- the result cache ------------------------------------------------------------------------
def _encode(obj: Any) -> Any:
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v) for k, v in obj.items()}
        return {"__items__": [[_encode(k), _encode(v)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return {"__tensor__": _encode(obj.detach().cpu().numpy())}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype), "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a job result")


def _decode(obj: Any) -> Any:
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__items__" in obj:
        return {_decode(k): _decode(v) for k, v in obj["__items__"]}
    if "__tuple__" in obj:
        return tuple(_decode(v) for v in obj["__tuple__"])
    if "__tensor__" in obj:
        return torch.from_numpy(_decode(obj["__tensor__"]))
    if "__ndarray__" in obj:
        return np.array(obj["__ndarray__"], dtype=obj["dtype"]).reshape(obj["shape"])
    return {k: _decode(v) for k, v in obj.items()}


def encode_result(result: dict[str, Any]) -> str:
    """A job result as JSON text: numpy arrays, tensors, tuples and non-string keys are tagged
    so that :func:`decode_result` gives them back as they were. Raises ``TypeError`` for other
    objects."""
    return json.dumps(_encode(result))


def decode_result(text: str) -> dict[str, Any]:
    """The inverse of :func:`encode_result`."""
    return _decode(json.loads(text))


#: job entries that do not change its result, left out of :func:`job_key`
UNKEYED = ("label", "data_root")


def job_key(fn: Callable, job: dict[str, Any]) -> str:
    """A file name for ``fn(job)``'s result: the function, the job's settings (all but
    :data:`UNKEYED`: its ``label``, which names it in reports, and ``data_root``, where the data
    lie) and the package version, hashed (a change of any of them is a different job)."""
    from .. import __version__

    settings = {k: v for k, v in job.items() if k not in UNKEYED}
    text = json.dumps([f"{fn.__module__}.{fn.__qualname__}", __version__, _encode(settings)],
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _read_cached(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return decode_result(path.read_text())["result"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        logger.warning("ignoring unreadable cached result %s (%s); running the job again",
                       path, type(e).__name__)
        return None


def _store(path: Path, job: dict[str, Any], result: dict[str, Any]) -> None:
    try:
        text = encode_result({"job": job, "result": result})
    except TypeError as e:
        logger.warning("not caching %s: %s", job.get("label", path.name), e)
        return
    atomic_write_text(text, path)


# ---- running ---------------------------------------------------------------------------------
def run_jobs(
    fn: Callable[[dict[str, Any]], dict[str, Any]],
    jobs: Sequence[dict[str, Any]],
    workers: int = 1,
    report: Callable[[str], None] | None = None,
    cache: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """``[fn(job) for job in jobs]``, in ``workers`` processes; results in the order of ``jobs``.

    ``fn`` must be a module-level function (it is pickled). ``workers``: an integer >= 1 (1
    runs the jobs one after the other in this process). ``report`` receives one line per
    finished job. ``cache``: a folder where each result is kept and from which results of
    earlier calls with the same jobs are read back (see the module docstring).

    :raises ConfigError: for ``workers`` that is not an integer >= 1
    """
    workers = check_positive_int("workers", workers)
    report = report or (lambda line: logger.info(line))
    t0 = time.perf_counter()
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    paths: list[Path | None] = [None] * len(jobs)
    if cache is not None:
        folder = Path(cache)
        folder.mkdir(parents=True, exist_ok=True)
        for i, job in enumerate(jobs):
            paths[i] = folder / f"{job_key(fn, job)}.json"
            results[i] = _read_cached(paths[i])
        cached = sum(r is not None for r in results)
        if cached:
            report(f"{cached} of {len(jobs)} run(s) read back from {folder}")
    todo = [i for i, r in enumerate(results) if r is None]

    def finish(done: int, i: int, result: dict[str, Any]) -> None:
        results[i] = result
        if paths[i] is not None:
            _store(paths[i], jobs[i], result)
        report(f"[{done}/{len(todo)}] {jobs[i].get('label', i)} "
               f"({time.perf_counter() - t0:.0f} s)")

    if workers <= 1 or len(todo) <= 1:
        with _flush_denormal():
            for done, i in enumerate(todo, start=1):
                finish(done, i, fn(jobs[i]))
        return results  # type: ignore[return-value]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                             initializer=_init_worker) as pool:
        futures = {pool.submit(fn, jobs[i]): i for i in todo}
        for done, future in enumerate(as_completed(futures), start=1):
            finish(done, futures[future], future.result())
    return results  # type: ignore[return-value]
