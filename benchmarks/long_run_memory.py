"""Memory over a long training run: does the process stay flat?

Trains an LS-VAE on the artificial problem with ``pyro_lvae.fit`` for many steps (default
100,000) while a thread samples the process's resident memory (VmRSS) every half second. Prints
the memory at the start, middle and end of training, the growth per 10,000 steps fitted over
the second half, the size of the per-step history (8 columns of 8 bytes per step: the only
growth expected), and the number of entries in Pyro's param store before and after.

    python benchmarks/long_run_memory.py                    # 100k steps (minutes on a CPU)
    python benchmarks/long_run_memory.py --steps 20000 --csv rss.csv
"""

from __future__ import annotations

import argparse
import csv
import threading
import time

import numpy as np
import pyro
import torch

import pyro_lvae as lv


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found (this benchmark reads Linux's /proc)")


def main(args: argparse.Namespace) -> dict[str, float]:
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(0)
    vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale(init_scale=1.0), hidden=args.hidden,
                     blocks=args.blocks, standardize=False)
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        t0 = time.perf_counter()
        while not stop.is_set():
            samples.append((time.perf_counter() - t0, rss_mb()))
            stop.wait(0.5)

    store_before = len(pyro.get_param_store().keys())
    # warm up allocators and Pyro before measuring
    lv.fit(vae, lv.datasets.manifold2d, steps=200, seed=0, tools=[lv.training.ProgressBar(False)])
    store_warm = len(pyro.get_param_store().keys())
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    history = lv.fit(vae, lv.datasets.manifold2d, steps=args.steps, seed=1,
                     tools=[lv.training.ProgressBar(False),
                            lv.training.Checks(every=args.check_every)])
    seconds = time.perf_counter() - t0
    stop.set()
    thread.join()
    store_after = len(pyro.get_param_store().keys())
    t, mem = np.array(samples).T
    steps_at = t / seconds * args.steps
    half = steps_at >= args.steps / 2
    slope = np.polyfit(steps_at[half], mem[half], 1)[0] * 10_000 if half.sum() > 2 else np.nan
    history_mb = sum(history[c].nbytes for c in history.COLUMNS) / 2**20
    result = {
        "steps": args.steps, "seconds": seconds, "rss_start_mb": float(mem[0]),
        "rss_middle_mb": float(mem[len(mem) // 2]), "rss_end_mb": float(mem[-1]),
        "growth_mb_per_10k_steps_second_half": float(slope), "history_mb": history_mb,
        "param_store_entries_before": store_before, "param_store_entries_warm": store_warm,
        "param_store_entries_after": store_after,
    }
    for k, v in result.items():
        print(f"{k:38s} {v:.3f}" if isinstance(v, float) else f"{k:38s} {v}")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["seconds", "step_estimate", "rss_mb"])
            w.writerows(zip(t.round(2), steps_at.round(), mem.round(2), strict=True))
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--blocks", type=int, default=1)
    p.add_argument("--check-every", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--csv", default=None, help="write the memory trace here")
    return p


if __name__ == "__main__":
    main(parser().parse_args())
