"""The cost of a training step with each prior p(z).

Times ``fit``'s direct loss and its backward pass plus an Adam step (the work of one training
step) for an LV-VAE on the artificial problem with every prior, interleaved repetitions,
CPU time of this process (one thread by default), median over repetitions. Prints
milliseconds per step and the ratio to the standard Normal prior.

    python benchmarks/priors.py                   # hidden 64, 2 blocks, batch 100
    python benchmarks/priors.py --steps 20 --repeats 1 --hidden 8
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import pyro
import torch

import pyro_lvae as lv
from pyro_lvae.direct_elbo import direct_elbo_terms

PRIORS = {
    "normal": lambda: lv.StandardNormal(),
    "mixture-10": lambda: lv.MixturePrior(10),
    "vamp-50": lambda: lv.VampPrior(50),
    "flow-affine-autoregressive": lambda: lv.FlowPrior("affine-autoregressive"),
    "flow-spline-coupling": lambda: lv.FlowPrior("spline-coupling"),
}


def parser() -> argparse.ArgumentParser:
    """The benchmark's arguments."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100, help="steps per repetition")
    p.add_argument("--repeats", type=int, default=5, help="repetitions per prior")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    return p


def _steps(vae, opt, x, steps) -> float:
    gc.collect()
    start = time.process_time()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        direct_elbo_terms(vae, x).loss.backward()
        opt.step()
    return (time.process_time() - start) / steps * 1e3


def main(args: argparse.Namespace) -> dict[str, float]:
    """Milliseconds per step for each prior (median over repetitions)."""
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(0)
    x = lv.datasets.manifold2d(args.batch_size)
    runs = {}
    for name, make in PRIORS.items():
        vae = lv.mlp_vae(2, 2, lv.LearnedVectorScale(init_scale=0.5), hidden=args.hidden,
                         blocks=args.blocks, prior=make())
        runs[name] = (vae, torch.optim.Adam(vae.parameters(), 1e-3), [])
    with pyro.validation_enabled(False):
        for _ in range(args.repeats):
            for vae, opt, times in runs.values():
                times.append(_steps(vae, opt, x, args.steps))
    result = {name: statistics.median(times) for name, (_, _, times) in runs.items()}
    for name, ms in result.items():
        print(f"{name:28s} {ms:8.2f} ms/step  {ms / result['normal']:5.2f}x")
    return result


if __name__ == "__main__":
    main(parser().parse_args())
