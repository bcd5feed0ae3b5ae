"""pyro-lvae inside a hand-written Pyro script: SVI, KL annealing, Predictive.

The VAE's ``model`` and ``guide`` are ordinary Pyro programs: this script trains an LS-VAE
(learned scalar sigma, Berger & Sebag Eq. 10) with ``pyro.infer.SVI`` and a Pyro optimiser,
anneals the KL term with ``lv.weight_latents`` around each step, and draws posterior samples
with ``pyro.infer.Predictive``. The learned sigma is a ``PyroParam`` of the model module, so the
same code trains it with a torch optimiser over ``Trace_ELBO()(model, guide).parameters()``.

    python examples/plain_pyro.py            # 2000 steps
    python examples/plain_pyro.py --smoke
"""

from __future__ import annotations

import argparse

import pyro
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO

import pyro_lvae as lv


def main(args: argparse.Namespace) -> float:
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    hidden, steps = (16, 30) if args.smoke else (200, args.steps)
    vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale(init_scale=1.0), hidden=hidden).to(device)
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    warmup = lv.LinearWarmup(steps // 3, start=0.5, end=1.0)
    for step in range(steps):
        x = lv.datasets.manifold2d(100).to(device)
        with lv.weight_latents(warmup(step)):
            loss = svi.step(x)
        if step % max(steps // 10, 1) == 0 or step == steps - 1:
            sigma = float(vae.observation.scale.detach())
            print(f"step {step:5d}  loss/point {loss / 100:8.3f}  sigma {sigma:.4f}")
    x = lv.datasets.manifold2d(5).to(device)
    z = Predictive(vae.model, guide=vae.guide, num_samples=100)(x)["z"]
    print("posterior std of z for 5 points:", z.std(0).mean(-1).cpu().numpy().round(3))
    return float(vae.observation.scale.detach())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cuda", action="store_true")
    p.add_argument("--smoke", action="store_true")
    return p


if __name__ == "__main__":
    main(parser().parse_args())
