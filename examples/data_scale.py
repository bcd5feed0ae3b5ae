"""The Python defaults on data of any scale: plain Pyro SVI, the 2D problem multiplied by a factor.

Berger & Sebag's point is that a VAE fails when the sharpness of p(x|z) does not match the scale
of the data. A learned sigma that starts at 1 (the paper's start) starts collapsed on data whose
spread is well below 1 (Theorem 1: every z decoded to the mean is an optimum for sigma above the
spread). ``LearnedScalarScale()`` / ``LearnedVectorScale()`` without ``init_scale`` start at half
the spread of the first batch they see, and ``lv.mlp_vae`` standardises its networks' inputs and
outputs on that batch (``standardize=True``). This script trains the same residual-MLP VAE with
``pyro.infer.SVI`` and ``Trace_ELBO`` (KL warm-up through ``lv.annealed``) on the 2D problem
times ``--scales``, with each sigma start (``data``: the default; ``paper``: 1) and each kind of
networks (``standardized``: the default; ``paper``: ``standardize=False``), and reports the
held-out ELBO converted to the unit-scale data (``ELBO + D log(scale)``, so that rows at
different scales compare), the KL per point, the learned sigma over the scale, and how many runs
ended collapsed (KL below ``lv.vae.COLLAPSE_NATS``).

    python examples/data_scale.py --out scale.json      # 5 scales x 4 settings x 3 seeds
    python examples/data_scale.py --smoke
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO

import pyro_lvae as lv
from pyro_lvae.vae import COLLAPSE_NATS

STARTS = {"data": {}, "paper": {"init_scale": 1.0}}
NETWORKS = {"standardized": True, "paper": False}
OBSERVATIONS = {"LS": lv.LearnedScalarScale, "LV": lv.LearnedVectorScale}


def train_one(scale: float, start: str, networks: str, seed: int,
              args: argparse.Namespace) -> dict:
    """Train one VAE with plain SVI on the 2D problem times ``scale``; held-out numbers."""
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    gen = torch.Generator().manual_seed(seed)
    data = lv.datasets.manifold2d(args.points, gen) * scale
    test = lv.datasets.manifold2d(2000, gen) * scale
    observation = OBSERVATIONS[args.variant](**STARTS[start])
    vae = lv.mlp_vae(2, 2, observation, hidden=args.hidden, blocks=args.blocks,
                     standardize=NETWORKS[networks])
    model, guide = lv.annealed(vae.model), lv.annealed(vae.guide)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": args.lr}), Trace_ELBO())
    warmup = lv.LinearWarmup(args.steps // 3, start=0.5, end=1.0)
    row = {"scale": scale, "start": start, "networks": networks, "seed": seed}
    for step in range(args.steps):
        batch = data[torch.randint(len(data), (args.batch,), generator=gen)]
        if not math.isfinite(svi.step(warmup(step), batch)):
            return {**row, "diverged": step}
    held_out = lv.evaluate.elbo_parts(vae, test)
    return {**row, "elbo_unit": held_out["elbo"] + 2 * math.log(scale), "kl": held_out["kl"],
            "sigma_over_scale": float(vae.sigma(test[:500]).mean()) / scale,
            "collapsed": held_out["kl"] < COLLAPSE_NATS}


def table(rows: list[dict]) -> str:
    """A Markdown table: per scale, start and networks, the mean and range over seeds."""
    lines = ["| scale | sigma start | networks | held-out ELBO, unit scale (mean, range) | "
             "KL nats/pt | sigma / scale | collapsed runs |",
             "|---:|---|---|---|---:|---:|---:|"]
    for key in sorted({(r["scale"], r["start"], r["networks"]) for r in rows}):
        group = [r for r in rows if (r["scale"], r["start"], r["networks"]) == key]
        done = [r for r in group if "elbo_unit" in r]
        head = f"| {key[0]:g} | {key[1]} | {key[2]} |"
        if not done:
            lines.append(f"{head} diverged | | | |")
            continue
        elbos = [r["elbo_unit"] for r in done]
        kl = sum(r["kl"] for r in done) / len(done)
        sigma = sum(r["sigma_over_scale"] for r in done) / len(done)
        lines.append(
            f"{head} {sum(elbos) / len(elbos):.3f} ({min(elbos):.3f} to {max(elbos):.3f}) | "
            f"{kl:.3f} | {sigma:.4f} | {sum(r['collapsed'] for r in done)}/{len(group)} |"
        )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> list[dict]:
    if args.smoke:
        args.scales, args.seeds, args.steps, args.hidden, args.blocks = [0.1, 10.0], [0], 30, 8, 1
        args.points = 200
    out = Path(args.out) if args.out else None
    rows = json.loads(out.read_text()) if out and out.exists() else []
    seen = {(r["scale"], r["start"], r["networks"], r["seed"]) for r in rows}
    for scale in args.scales:
        for start in args.starts:
            for networks in args.networks:
                for seed in args.seeds:
                    if (scale, start, networks, seed) in seen:
                        continue
                    row = train_one(scale, start, networks, seed, args)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                    if out:  # resumable: every finished run is kept
                        out.write_text(json.dumps(rows, indent=1))
    print(table(rows))
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scales", type=float, nargs="+", default=[0.05, 0.2, 1.0, 5.0, 20.0])
    p.add_argument("--starts", nargs="+", choices=list(STARTS), default=list(STARTS))
    p.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=list(NETWORKS))
    p.add_argument("--variant", choices=list(OBSERVATIONS), default="LS")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--points", type=int, default=10000, help="training points")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--out", help="JSON file of finished runs (resumed if present)")
    p.add_argument("--smoke", action="store_true")
    return p


if __name__ == "__main__":
    main(parser().parse_args())
