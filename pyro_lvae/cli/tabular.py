"""``pyro-lvae tabular fit`` (a VAE for a CSV table) and ``tabular sample`` (synthetic rows)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..annealing import parse_schedule
from ..errors import ConfigError
from ..tabular import SIGMA_MODES
from ..tabular.encoding import INTEGER_MODES
from ..training import resolve_device
from ..training.records import RunClock
from .options import (
    add_device,
    add_network_options,
    add_observation_options,
    add_out,
    add_quiet,
    add_seed,
    add_training_options,
)
from .output import (
    check_folder_name,
    check_output,
    info_stream,
    names,
    write_json,
    write_output,
)

#: file suffixes ``tabular sample -o`` accepts (it writes CSV); no suffix is fine too
CSV_SUFFIXES = (".csv",)
#: what ``tabular fit`` writes besides the model's files (TabularModel.FILES)
_FIT_RECORDS = ("history.csv", "summary.json")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``tabular`` with its actions ``fit`` and ``sample``."""
    tab = sub.add_parser("tabular", help="fit a VAE to a CSV table and sample synthetic rows")
    tsub = tab.add_subparsers(dest="tabular_command", metavar="ACTION", required=True)
    _add_fit_parser(tsub)
    _add_sample_parser(tsub)


def _add_fit_parser(tsub: argparse._SubParsersAction) -> None:
    tf = tsub.add_parser("fit", help="fit a VAE to a CSV table",
                         description="Encode a CSV table (continuous, integer, binary and "
                         "categorical columns; exact inverse) and train a VAE with a mixed "
                         "observation model. Writes model.pt, transform.json, config.json, "
                         "checkpoint.pt, history.csv and summary.json into --out (a folder "
                         "that holds any of them is refused).")
    tf.add_argument("data", help="the CSV file (a header row, one row per record)")
    add_out(tf, "folder to write the model into", required=True)
    tf.add_argument("--categorical", default=None,
                    help="numeric columns to treat as categories, comma-separated (text and "
                         "boolean columns always are)")
    tf.add_argument("--numeric", default=None,
                    help="two-valued numeric columns to keep continuous (else binary)")
    tf.add_argument("--continuous", choices=("standard", "quantile"), default="standard",
                    help="encoding of continuous columns: standardise (default) or map to "
                         "normal scores through their empirical distribution (multi-modal or "
                         "skewed columns)")
    tf.add_argument("--integers", choices=INTEGER_MODES, default="discrete",
                    help="integer-valued numeric columns: discrete (the mass of a Normal on "
                         "their integer values, the default) or continuous (a Normal density)")
    tf.add_argument("--missing", choices=("error", "drop"), default="error",
                    help="missing values: refuse them (default) or drop their rows")
    obs = tf.add_argument_group("observation model")
    obs.add_argument("--sigma-mode", choices=SIGMA_MODES, default="learned-channel",
                     metavar="{" + ",".join(SIGMA_MODES) + "}",
                     help="sigma of continuous columns: fixed, learned-scalar, learned-channel "
                          "(one per column, the default), learned-vector (per row and column "
                          "from the decoder, the LV-VAE of tables) or tvae (per column, "
                          "clamped to [0.01, 1]); learned-column and decoder are former names")
    add_observation_options(tf, group=obs, min_scale=1e-3, sigma_text="fixed sigma, or the "
                            "initial sigma of learned modes (default 1; 0.1 for tvae)")
    add_network_options(tf, hidden=128, blocks=2, latent_dim=8)
    add_training_options(tf, steps=3000, batch_size=128, beta="1",
                         notes={"batch_size": "rows per step; default 128"})
    add_seed(tf)
    add_device(tf)
    add_quiet(tf)
    tf.set_defaults(func=cmd_tabular_fit)


def _add_sample_parser(tsub: argparse._SubParsersAction) -> None:
    ts = tsub.add_parser("sample", help="sample synthetic rows from a fitted model",
                         description="Write synthetic rows with the original columns, types "
                         "and categories.")
    ts.add_argument("model", help="the folder written by pyro-lvae tabular fit")
    ts.add_argument("-n", type=int, required=True, help="number of rows")
    ts.add_argument("-o", "--output", metavar="FILE", required=True,
                    help="CSV file to write (.csv or no suffix; a device or a pipe is written "
                         "in place); - writes the rows on standard output and the messages on "
                         "standard error")
    ts.add_argument("--continuous", choices=("sample", "mean"), default="sample",
                    help="continuous columns drawn from p(x|z) (default) or at its mean")
    ts.add_argument("--discrete", choices=("sample", "argmax"), default="sample",
                    help="binary and categorical columns drawn (default) or at their likelier "
                         "value (TVAE's decoding)")
    add_seed(ts, default=None)
    ts.set_defaults(func=cmd_tabular_sample)


def cmd_tabular_fit(args: argparse.Namespace) -> int:
    """Fit a :class:`~pyro_lvae.tabular.TabularModel` to a CSV file; write it and its
    summary into ``--out``."""
    from .. import evaluate
    from ..tabular import TabularModel, read_csv

    check_folder_name(args.out, "--out")
    out = Path(args.out)
    TabularModel.check_new_folder(out, also=_FIT_RECORDS, flag="--out")
    table = read_csv(args.data)
    beta = parse_schedule(args.beta_schedule)
    resolve_device(args.device)
    with RunClock() as clock:
        model = TabularModel.fit(
            table, categorical=names(args.categorical), numeric=names(args.numeric),
            continuous=args.continuous, integers=args.integers, missing=args.missing,
            sigma_mode=args.sigma_mode, sigma=args.sigma, min_scale=args.min_scale,
            latent_dim=args.latent_dim, hidden=args.hidden, blocks=args.blocks,
            steps=args.steps, batch_size=args.batch_size, lr=args.lr, beta=beta,
            seed=args.seed, device=args.device, progress=not args.quiet, out=out)
    model.history.to_csv(out / "history.csv")
    x = model.transformer.transform(table, missing=args.missing).to(model.vae.device)
    summary = {"rows": len(x), "columns": {c.name: c.kind for c in model.transformer.columns},
               "integer_columns": model.transformer.integer_columns,
               **evaluate.elbo_parts(model.vae, x, num_particles=4),
               "active_units": evaluate.active_units(model.vae, x)[0],
               "latent_dim": args.latent_dim, "sigma_mode": args.sigma_mode,
               "final_sigma": float(model.history["sigma"][-1]),
               **clock.record(model.vae.device)}
    write_json(summary, out / "summary.json")
    kinds = ", ".join(f"{n} {k}" for n, k in summary["columns"].items())
    print(f"fitted {len(x)} rows ({kinds}); ELBO {summary['elbo']:.3f} nats/row on the "
          f"training table, {summary['active_units']} of {args.latent_dim} latent units active")
    integers = model.transformer.integer_columns
    if integers:
        print(f"read as integers (the mass of a Normal on their integer values): "
              f"{', '.join(integers)}; name a column in --categorical to model it as classes")
    print(f"wrote {out}/: model.pt transform.json config.json checkpoint.pt history.csv "
          f"summary.json")
    return 0


def cmd_tabular_sample(args: argparse.Namespace) -> int:
    """Sample ``-n`` rows from a fitted model into a CSV file (``-``: standard output)."""
    from ..tabular import TabularModel

    if args.n < 1:
        raise ConfigError(f"Expected -n >= 1 but got {args.n}")
    check_output(args.output, CSV_SUFFIXES, "CSV", "-o")
    model = TabularModel.load(args.model, map_location="cpu")
    table = model.sample(args.n, continuous=args.continuous, discrete=args.discrete,
                         seed=args.seed)
    write_output(table.to_csv(index=False), args.output)
    where = "standard output" if args.output == "-" else args.output
    print(f"wrote {args.n} rows of {len(table.columns)} columns to {where}",
          file=info_stream(args.output))
    return 0
