"""Data-parallel scaling: samples per second with 1 and N processes (torch.distributed, gloo
on the CPU, nccl on GPUs).

Each configuration trains the same model with ``pyro_lvae.fit`` for a fixed number of steps at a
fixed batch size per process (weak scaling: N processes see N times the samples per step) and
reports samples per second of the whole group. On a CPU, 1 process with all threads is the
baseline to beat. Configurations: ``processes x threads``.

    python benchmarks/scaling.py                      # 1x1, 1x2, 2x1 on this CPU
    python benchmarks/scaling.py --configs 1x1,4x1 --device cuda
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import pyro_lvae as lv


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model(kind: str):
    if kind == "mlp":
        return lv.mlp_vae(2, 2, lv.LearnedVectorScale(init_scale=1.0), hidden=200, blocks=4,
                          standardize=False)
    return lv.conv_vae((1, 28, 28), 32, lv.LearnedVectorScale(init_scale=1.0), width=16,
                       convs=3, blocks=2)


def _data(kind: str):
    if kind == "mlp":
        return lv.datasets.manifold2d, None
    images = torch.randint(0, 256, (8192, 1, 28, 28), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    return images, lv.datasets.Dequantize()


def _worker(rank, world, threads, port, kind, steps, batch, device, out):
    torch.set_num_threads(threads)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        backend = "nccl" if device == "cuda" else "gloo"
        if device == "cuda":
            torch.cuda.set_device(rank)
        dist.init_process_group(backend, rank=rank, world_size=world)
    dev = f"cuda:{rank}" if device == "cuda" else "cpu"
    data, transform = _data(kind)
    vae = _model(kind)
    lv.fit(vae, data, steps=max(5, steps // 10), batch_size=batch, seed=0, device=dev,
           transform=transform, tools=[lv.training.ProgressBar(False)])  # warm-up
    if world > 1:
        dist.barrier()
    t0 = time.perf_counter()
    lv.fit(vae, data, steps=steps, batch_size=batch, seed=1, device=dev, transform=transform,
           tools=[lv.training.ProgressBar(False)])
    seconds = time.perf_counter() - t0
    if rank == 0:
        Path(out).write_text(str(seconds))
    if world > 1:
        dist.destroy_process_group()


def measure(kind: str, processes: int, threads: int, steps: int, batch: int,
            device: str = "cpu") -> float:
    """Samples per second of the group."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "seconds"
        args = (processes, threads, _port(), kind, steps, batch, device, str(out))
        if processes == 1:
            _worker(0, *args)
        else:
            mp.start_processes(_worker, args=args, nprocs=processes, start_method="spawn")
        seconds = float(out.read_text())
    return processes * batch * steps / seconds


def main(args: argparse.Namespace) -> list[dict]:
    configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]
    rows = []
    for kind, batch, steps in (("mlp", 100, args.steps), ("conv", 64, max(10, args.steps // 20))):
        base = None
        for processes, threads in configs:
            rate = measure(kind, processes, threads, steps, batch, args.device)
            base = base or rate
            rows.append({"model": kind, "processes": processes, "threads": threads,
                         "batch_per_process": batch, "samples_per_second": rate,
                         "speed-up": rate / base})
            print(f"{kind:4s} {processes} process(es) x {threads} thread(s): {rate:8.0f} "
                  f"samples/s ({rate / base:.2f}x the first configuration)", flush=True)
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="1x1,1x2,2x1", help="processes x threads, comma-separated")
    p.add_argument("--steps", type=int, default=400, help="steps for the MLP (conv: 1/20)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    return p


if __name__ == "__main__":
    main(parser().parse_args())
