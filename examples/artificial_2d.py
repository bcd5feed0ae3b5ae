"""F-VAE, LS-VAE, LV-VAE, F*-VAE and the replayed sigma schedule on the artificial 2D problem.

Berger & Sebag (arXiv:2003.01972, Section 4) compare observation models on points along a 1D
curve with three noise levels. This script trains each variant with plain ``lv.fit``, then
builds the two controls of the paper from the LS-VAE run: F*-VAE (sigma fixed at LS-VAE's final
value, via ``lv.fixed_star``) and a fixed-sigma VAE that replays LS-VAE's sigma trajectory
(``lv.ScheduledScale.from_history``). It prints held-out ELBOs and writes a figure.

    python examples/artificial_2d.py --steps 3000 --out runs/artificial
    python examples/artificial_2d.py --smoke        # seconds, tiny networks
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyro

import pyro_lvae as lv
from pyro_lvae.experiments.plots import points_figure, training_figure
from pyro_lvae.experiments.points import figure_row, held_out, summarize


def main(args: argparse.Namespace) -> dict[str, dict]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = {"hidden": 8, "blocks": 1} if args.smoke else {"hidden": 200, "blocks": 4}
    steps = 20 if args.smoke else args.steps
    beta = lv.parse_schedule(args.beta_schedule)
    x, region = held_out()
    results, rows, histories = {}, [], {}

    def train(name, observation, like=None):
        pyro.set_rng_seed(args.seed)
        vae = lv.mlp_vae(2, 2, observation, **size, standardize=False) if like is None else like
        history = lv.fit(vae, lv.datasets.manifold2d, steps=steps, beta=beta, seed=args.seed,
                         device=args.device)
        results[name] = summarize(vae, x, region)
        rows.append(figure_row(vae, name, x))
        histories[name] = history
        print(f"{name:<18} held-out ELBO {results[name]['elbo']:8.3f}   "
              f"sigma {results[name]['sigma']:.4f}")
        return vae, history

    train("F-VAE sigma=1", lv.FixedScale(1.0))
    train("F-VAE sigma=0.1", lv.FixedScale(0.1))
    ls, ls_history = train("LS-VAE", lv.LearnedScalarScale(init_scale=1.0))
    train("LV-VAE", lv.LearnedVectorScale(init_scale=1.0))
    pyro.set_rng_seed(args.seed)
    train("F*-VAE", None, like=lv.fixed_star(ls))
    train("replayed schedule", lv.ScheduledScale.from_history(ls_history))
    points_figure(rows).savefig(out / "variants.png", dpi=90)
    training_figure(histories).savefig(out / "training.png", dpi=90)
    print(f"figures in {out}/")
    return results


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--beta-schedule", default="linear:1000:0.5:1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/artificial")
    p.add_argument("--smoke", action="store_true", help="tiny networks and 20 steps")
    return p


if __name__ == "__main__":
    main(parser().parse_args())
