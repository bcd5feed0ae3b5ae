"""A VAE for a mixed table: fit, sample synthetic rows, compare them with held-out real rows.

The wine table bundled with scikit-learn (13 continuous columns and a three-class target) is
split 70/30; a VAE whose continuous columns have a sigma per row and column output by the
decoder (the LV-VAE of tables) is fitted on the training rows with
``pyro_lvae.tabular.TabularModel``; synthetic rows keep the original columns, types and
categories; ``pyro_lvae.tabular.metrics`` scores them against the held-out rows. Needs the
``tabular`` extra (pandas, scikit-learn).

    python examples/tables.py
    python examples/tables.py --smoke
"""

from __future__ import annotations

import argparse

from sklearn.datasets import load_wine

from pyro_lvae.tabular import TabularModel
from pyro_lvae.tabular.metrics import all_metrics


def main(args: argparse.Namespace) -> dict:
    df = load_wine(as_frame=True).frame.sample(frac=1, random_state=args.seed)
    df["target"] = df["target"].map(lambda v: f"class {v}")
    train, test = df.iloc[:125], df.iloc[125:]
    model = TabularModel.fit(train, sigma_mode=args.sigma_mode, steps=30 if args.smoke else
                             args.steps, hidden=16 if args.smoke else 128, seed=args.seed)
    synth = model.sample(len(train), seed=args.seed)
    print(synth.head())
    metrics = all_metrics(train, test, synth, model.transformer, target="target")
    metrics.pop("per_column")
    for key, value in metrics.items():
        print(f"{key:24s} {value}")
    return metrics


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sigma-mode", default="learned-vector")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true")
    return p


if __name__ == "__main__":
    main(parser().parse_args())
