"""Does a discretised-likelihood VAE overfit scikit-learn's digits? Follow the held-out bits/dim.

The observations study trains its digit models (residual MLP 2x200, latent 8, batch 100, Adam
1e-3, KL weight from 0.5 to 1 over 1000 steps) for 6000 steps on 1257 training digits, about
480 passes. This script trains the same model with each discretised likelihood, scores the
held-out digits every ``--every`` steps (``lv.training.HeldOutEvaluation``) and, at the end,
the training and held-out digits, in bits per dimension of the digits as 8-bit images.

    python examples/digits_overfitting.py               # 2 models x 6000 steps, a few minutes
    python examples/digits_overfitting.py --steps 600 --every 200
"""

from __future__ import annotations

import argparse
import math

import pyro
import torch

import pyro_lvae as lv
from pyro_lvae.annealing import parse_schedule
from pyro_lvae.datasets import bits_per_dim
from pyro_lvae.experiments.studies.imagesets import load_split


def bits(elbo: float) -> float:
    """Bits per dimension of a digit (64 values on the 8-bit grid) from an ELBO in nats."""
    return bits_per_dim(-elbo, 64, "unit-levels", discrete=True)


def run(kind: str, steps: int, every: int, seed: int) -> dict:
    """Train one model; print and return its held-out curve and final bits/dim."""
    split = load_split("digits")
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    vae = lv.mlp_vae(64, 8, lv.observations.build(kind), hidden=200, blocks=2,
                     standardize=False)
    history = lv.fit(vae, split.train, steps=steps, batch_size=100, optimizer=lv.fused_adam(1e-3),
                     beta=parse_schedule("linear:1000:0.5:1"), seed=seed,
                     tools=[lv.training.ProgressBar(False),
                            lv.training.HeldOutEvaluation(split.test, every=every)])
    curve = [(step + 1, bits(float(v))) for step, v in enumerate(history["heldout_elbo"])
             if math.isfinite(float(v))]
    with torch.no_grad():
        train = lv.evaluate.elbo_parts(vae, split.train, num_particles=4)["elbo"]
        held_out = lv.evaluate.elbo_parts(vae, split.test, num_particles=4)["elbo"]
    best = min(curve, key=lambda c: c[1])
    print(f"{kind}: held-out bits/dim every {every} steps: "
          + ", ".join(f"{s}: {b:.3f}" for s, b in curve))
    print(f"  best {best[1]:.3f} at step {best[0]}; at the end: training {bits(train):.3f}, "
          f"held-out {bits(held_out):.3f}", flush=True)
    return {"curve": curve, "train": bits(train), "held_out": bits(held_out)}


def main(argv: list[str] | None = None) -> dict:
    """Both discretised models; returns ``{kind: run(...)}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return {kind: run(kind, args.steps, args.every, args.seed)
            for kind in ("discretized-normal", "discretized-logistic")}


if __name__ == "__main__":
    main()
