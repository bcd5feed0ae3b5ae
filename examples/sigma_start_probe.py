"""How long LV-VAE's start from the data lasts: its mean sigma over the first steps.

A learned sigma starts at half the data's spread by default (``lv.initial_scale``), below the
collapsed solution. LV-VAE's sigma is an output of the decoder, so it can move away from that
start within a few steps. This script trains LV-VAE (``learned-vector``, default start) on the
2D problem with the observations study's training (fresh batches of 100, Adam 1e-3, KL weight
0.5 to 1 over 1000 steps) in three settings and prints the mean sigma of the training batch at a
few steps:

- ``study``: the observations study's model (latent 1, residual MLP 2x100, ``standardize=False``);
- ``study, standardised``: the same with ``standardize=True`` (``lv.mlp_vae``'s default);
- ``collapse study``: the collapse study's model (latent 2, residual MLP 4x200).

    python examples/sigma_start_probe.py            # 300 steps, 3 seeds: about a minute
    python examples/sigma_start_probe.py --smoke    # 20 steps, one seed, two settings
"""

from __future__ import annotations

import argparse

import numpy as np
import pyro

from pyro_lvae import observations
from pyro_lvae.annealing import parse_schedule
from pyro_lvae.datasets import manifold2d
from pyro_lvae.training import ProgressBar, fit, fused_adam
from pyro_lvae.vae import mlp_vae

#: setting -> (latent size, hidden units, residual blocks, standardize)
SETTINGS = {"study": (1, 100, 2, False), "study, standardised": (1, 100, 2, True),
            "collapse study": (2, 200, 4, False)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300, help="training steps per run")
    p.add_argument("--seeds", type=int, default=3, help="seeds per setting")
    p.add_argument("--smoke", action="store_true", help="20 steps, one seed, two settings")
    return p


def main(args: argparse.Namespace) -> dict[tuple[str, int], np.ndarray]:
    """The mean sigma of every training step, per (setting, seed)."""
    steps, seeds, settings = args.steps, args.seeds, list(SETTINGS)
    if args.smoke:
        steps, seeds, settings = 20, 1, settings[:2]
    shown = [s for s in (0, 10, 25, 50, 100, 200, steps - 1) if s < steps]
    print(f"mean sigma of LV-VAE (start: half the data's spread) at steps {shown}")
    out = {}
    for name in settings:
        latent, hidden, blocks, standardize = SETTINGS[name]
        for seed in range(seeds):
            pyro.set_rng_seed(seed)
            pyro.clear_param_store()
            vae = mlp_vae(2, latent, observations.build("learned-vector"), hidden=hidden,
                          blocks=blocks, standardize=standardize)
            history = fit(vae, manifold2d, steps=steps, batch_size=100,
                          optimizer=fused_adam(1e-3), beta=parse_schedule("linear:1000:0.5:1"),
                          seed=seed, tools=[ProgressBar(False)])
            sigma = np.asarray(history["sigma"], dtype=float)
            out[name, seed] = sigma
            print(f"{name:>20} seed {seed}: " + "  ".join(f"{sigma[s]:.2f}" for s in shown),
                  flush=True)
    return out


if __name__ == "__main__":
    main(parser().parse_args())
