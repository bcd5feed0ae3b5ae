"""Count VAEs side by side with scvi-tools' SCVI on the same cells.

scanpy's ``pbmc68k_reduced`` (700 blood cells x 765 genes, integer counts recovered by
:func:`pyro_lvae.datasets.pbmc68k_reduced`), one held-out split (20% of the cells, the same
indices for both libraries), matched networks (one hidden layer of 128 units in the encoder and
the decoder, latent size 10: SCVI's defaults ``n_hidden=128, n_latent=10, n_layers=1``), the
same epochs, batch size (128) and learning rate (1e-3), one thread, several seeds. Per model:

- **marginal LL (own)**: each library's own importance-sampled estimate of ``log p(x)`` per
  held-out cell with the same number of samples: SCVI's ``get_marginal_ll`` (per cell, averaged
  here over cells), pyro-lvae's :func:`pyro_lvae.evaluate.iwae`;
- **marginal LL (lv.evaluate)**: :func:`pyro_lvae.evaluate.iwae` applied to both, to SCVI's
  trained networks through a small Pyro adapter (:class:`ScviPrograms`), so that one estimator
  judges both;
- **ELBO**: the held-out ELBO per cell (SCVI's ``get_elbo``, one draw of z with the analytic KL;
  pyro-lvae's :func:`pyro_lvae.evaluate.elbo_parts`, one draw of z and of the KL estimate);
- **k-NN accuracy** (k = 15, 5-fold cross-validation) and **silhouette** of the cell types
  (``bulk_labels``) in the held-out cells' latent means (scikit-learn);
- **seconds per epoch**: the wall-clock and the CPU time (of the process, every thread) of the
  whole training call over the epochs.

Needs scvi-tools (``pip install scvi-tools scanpy``), which pyro-lvae itself never requires;
``--ours-only`` runs pyro-lvae's side alone.

    python benchmarks/counts_scvi.py --out counts_scvi.json        # 3 seeds, 300 epochs
    python benchmarks/counts_scvi.py --quick                       # 1 seed, 10 epochs
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch

import pyro_lvae as lv
from pyro_lvae.experiments.count_tasks import HELD_OUT, SPLIT_SEED, latent_agreement

#: the models compared: (row name, likelihood, SCVI's dispersion); pyro-lvae's dispersion is
#: :data:`DISPERSION` of SCVI's
MODELS = (
    ("NB, dispersion per gene", "nb", "gene"),
    ("NB, dispersion per cell and gene", "nb", "gene-cell"),
    ("ZINB, dispersion per gene", "zinb", "gene"),
    ("ZINB, dispersion per cell and gene", "zinb", "gene-cell"),
)
#: SCVI's dispersion -> pyro-lvae's
DISPERSION = {"gene": "learned", "gene-cell": "decoder"}
#: the contestants: SCVI with its defaults (a KL warm-up over 400 epochs), SCVI without the
#: warm-up (the KL at full weight from the start, as pyro-lvae trains), pyro-lvae
LIBRARIES = ("scvi-tools", "scvi-tools, no warm-up", "pyro-lvae")


@dataclass(frozen=True)
class Setting:
    """What both libraries share: network sizes, training and evaluation."""

    hidden: int = 128
    latent: int = 10
    epochs: int = 300
    batch_size: int = 128
    lr: float = 1e-3
    samples: int = 1000
    neighbours: int = 15
    folds: int = 5


# ---------------------------------------------------------------- the shared harness


def epoch_batches(x: torch.Tensor, batch_size: int, seed: int) -> torch.utils.data.DataLoader:
    """Shuffled epochs of ``x`` that keep the last, smaller batch, as SCVI's loader does."""
    return torch.utils.data.DataLoader(x, batch_size=batch_size, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))


def count_parameters(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> int:
    """The number of trainable numbers in ``module``, less the parameters whose names start
    with one of ``skip``."""
    return sum(p.numel() for name, p in module.named_parameters()
               if p.requires_grad and not name.startswith(skip))


class Clock:
    """Wall-clock and CPU seconds of this process (every thread) from its creation to
    :meth:`stop`: on a shared machine the CPU time is the one that the load of other processes
    does not inflate."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self._start = (time.perf_counter(), time.process_time())

    def stop(self) -> Clock:
        self.wall = time.perf_counter() - self._start[0]
        self.cpu = time.process_time() - self._start[1]
        return self


def _quiet_fit_tools() -> list:
    return [lv.training.ProgressBar(False)]


# ---------------------------------------------------------------- pyro-lvae


def ours_observation(likelihood: str, dispersion: str) -> Any:
    """pyro-lvae's observation model for SCVI's ``gene_likelihood`` and ``dispersion``: the
    scVI mean (a softmax over genes times the observed library size)."""
    kind = {"nb": lv.NegativeBinomialCounts, "zinb": lv.ZeroInflatedNBCounts}[likelihood]
    return kind(dispersion=DISPERSION[dispersion], mean="scvi")


def build_ours(genes: int, likelihood: str, dispersion: str, setting: Setting) -> lv.VAE:
    """One hidden layer of ``setting.hidden`` units in the encoder and the decoder (residual
    MLPs without residual blocks), latent size ``setting.latent``."""
    return lv.mlp_vae(genes, setting.latent, ours_observation(likelihood, dispersion),
                      hidden=setting.hidden, blocks=0)


def train_ours(x: torch.Tensor, likelihood: str, dispersion: str, setting: Setting,
               seed: int) -> tuple[lv.VAE, Clock]:
    """A VAE trained on the counts ``x`` for ``setting.epochs`` epochs; ``(vae, the clock of
    training)`` (building, data start and every epoch)."""
    clock = Clock()
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    vae = build_ours(x.shape[1], likelihood, dispersion, setting)
    steps = setting.epochs * math.ceil(x.shape[0] / setting.batch_size)
    lv.fit(vae, epoch_batches(x, setting.batch_size, seed), steps=steps, lr=setting.lr,
           seed=seed, device="cpu", tools=_quiet_fit_tools())
    return vae, clock.stop()


def evaluate_ours(vae: lv.VAE, x: torch.Tensor, labels: torch.Tensor, setting: Setting,
                  seed: int = 0) -> dict[str, float]:
    """Held-out numbers of a trained pyro-lvae VAE (see the module's docstring)."""
    vae.eval()
    pyro.set_rng_seed(seed)
    ll = float(lv.evaluate.iwae(vae, x, num_samples=setting.samples))
    elbo = lv.evaluate.elbo_parts(vae, x)
    z = vae.encode(x, mode="mean").detach()
    return {"marginal_ll_own": ll, "marginal_ll_lv": ll, "elbo": elbo["elbo"],
            **latent_agreement(z, labels, setting.neighbours, setting.folds)}


# ---------------------------------------------------------------- scvi-tools


def scvi_module() -> Any:
    """scvi-tools, imported, or a clear error where it is missing."""
    try:
        import scvi
    except ImportError as e:
        raise SystemExit(
            f"scvi-tools is not installed ({e}). This benchmark compares against it: "
            "pip install scvi-tools scanpy (pyro-lvae never needs it), or run pyro-lvae's "
            "side alone with --ours-only") from None
    return scvi


def _anndata(x: torch.Tensor) -> Any:
    import anndata

    return anndata.AnnData(x.numpy().astype(np.float32))


def scvi_used_parameters(model: Any, likelihood: str, dispersion: str) -> int:
    """The parameters of SCVI's module that its training uses: without the library encoder
    (built but unused with the observed library size), the per-cell dispersion head with
    ``dispersion="gene"`` and the zero-inflation head with ``gene_likelihood="nb"``."""
    skip = ["l_encoder."]
    skip.append("decoder.px_r_decoder." if dispersion == "gene" else "px_r")
    if likelihood == "nb":
        skip.append("decoder.px_dropout_decoder.")
    return count_parameters(model.module, tuple(skip))


def train_scvi(x: torch.Tensor, likelihood: str, dispersion: str, setting: Setting,
               seed: int, warmup: bool = True) -> tuple[Any, Clock]:
    """SCVI trained on the counts ``x`` (all of them: ``train_size=1``, no validation split)
    with its defaults otherwise (batch norm in both networks, dropout 0.1 in the encoder, Adam
    with ``eps=0.01`` and weight decay 1e-6, a KL warm-up over 400 epochs, or none with
    ``warmup=False``); ``(model, the clock of training)`` (setup, building and every epoch)."""
    scvi = scvi_module()
    clock = Clock()
    scvi.settings.seed = seed
    adata = _anndata(x)
    scvi.model.SCVI.setup_anndata(adata)
    plan = {"lr": setting.lr} if warmup else {"lr": setting.lr, "n_epochs_kl_warmup": None}
    model = scvi.model.SCVI(adata, n_hidden=setting.hidden, n_latent=setting.latent,
                            n_layers=1, dispersion=dispersion, gene_likelihood=likelihood)
    model.train(max_epochs=setting.epochs, batch_size=setting.batch_size, train_size=1.0,
                plan_kwargs=plan, accelerator="cpu", devices=1,
                enable_progress_bar=False, logger=False, enable_checkpointing=False,
                enable_model_summary=False)
    clock.stop()
    if len(model.train_indices) != x.shape[0]:
        raise RuntimeError(f"SCVI trained on {len(model.train_indices)} of {x.shape[0]} cells")
    return model, clock


class ScviPrograms:
    """A trained SCVI module seen as a Pyro model and guide, so that
    :func:`pyro_lvae.evaluate.iwae` estimates its marginal log-likelihood: the guide draws
    ``z ~ q(z | x)`` from SCVI's encoder, the model scores ``z`` under N(0, I) and the counts
    under SCVI's own ``p(x | z, library)`` (its distribution objects, with the observed library
    size); nothing of SCVI's model is rewritten."""

    def __init__(self, model: Any) -> None:
        self.module = model.module
        self.module.eval()
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.model = _ScviModel(self.module)
        self.guide = _ScviGuide(self.module)

    def check_initialized(self, query: str = "") -> None:
        """A trained SCVI module has no pending state."""


class _ScviPart:
    def __init__(self, module: Any) -> None:
        self.module = module

    def check_data(self, x: torch.Tensor, finite: bool | None = None) -> None:
        if not torch.isfinite(x).all():
            raise ValueError("non-finite counts")

    def _batch_index(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 1, dtype=torch.long)


class _ScviGuide(_ScviPart):
    def __call__(self, x: torch.Tensor) -> None:
        qz, _ = self.module.z_encoder(torch.log1p(x), self._batch_index(x))
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(qz.loc, qz.scale).to_event(1))


class _ScviModel(_ScviPart):
    def __call__(self, x: torch.Tensor) -> None:
        latent = self.module.n_latent
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(latent), 1.0).to_event(1))
            library = torch.log(x.sum(-1, keepdim=True)).expand(*z.shape[:-1], 1)
            index = self._batch_index(x)
            if z.dim() == 3:
                index = index.expand(z.shape[0], *index.shape)
            px = self.module.generative(z, library, index)["px"]
            pyro.factor("x", px.log_prob(x).sum(-1))


def evaluate_scvi(model: Any, x: torch.Tensor, labels: torch.Tensor, setting: Setting,
                  seed: int = 0) -> dict[str, float]:
    """Held-out numbers of a trained SCVI model (see the module's docstring). SCVI's
    ``get_marginal_ll(return_mean=True)`` averages the means of its minibatches (unequal
    sizes); here the per-cell values are averaged over cells."""
    scvi = scvi_module()
    adata = _anndata(x)
    model.module.eval()
    scvi.settings.seed = seed
    own = model.get_marginal_ll(adata, n_mc_samples=setting.samples, return_mean=False,
                                n_mc_samples_per_pass=min(100, setting.samples))
    pyro.set_rng_seed(seed)
    ours = lv.evaluate.iwae(ScviPrograms(model), x, num_samples=setting.samples)
    elbo = float(model.get_elbo(adata))
    z = torch.as_tensor(model.get_latent_representation(adata))
    return {"marginal_ll_own": float(own.mean()), "marginal_ll_lv": float(ours),
            "elbo": elbo, **latent_agreement(z, labels, setting.neighbours, setting.folds)}


# ---------------------------------------------------------------- the comparison


def run_one(library: str, likelihood: str, dispersion: str, train: torch.Tensor,
            test: torch.Tensor, test_labels: torch.Tensor, setting: Setting,
            seed: int) -> dict[str, Any]:
    """Train and evaluate one model of one library with one seed: a row of the results."""
    if library == "pyro-lvae":
        vae, seconds = train_ours(train, likelihood, dispersion, setting, seed)
        params = count_parameters(vae)
        numbers = evaluate_ours(vae, test, test_labels, setting, seed)
    else:
        model, seconds = train_scvi(train, likelihood, dispersion, setting, seed,
                                    warmup=library == "scvi-tools")
        params = scvi_used_parameters(model, likelihood, dispersion)
        numbers = evaluate_scvi(model, test, test_labels, setting, seed)
    return {"library": library, "likelihood": likelihood, "dispersion": dispersion,
            "seed": seed, "parameters": params,
            "seconds_per_epoch": seconds.wall / setting.epochs,
            "cpu_seconds_per_epoch": seconds.cpu / setting.epochs,
            **numbers}


METRICS = (("marginal_ll_own", "marginal LL, own estimator", 1),
           ("marginal_ll_lv", "marginal LL, lv.evaluate.iwae", 1),
           ("elbo", "ELBO", 1),
           ("knn_accuracy", "k-NN accuracy", 3),
           ("silhouette", "silhouette", 3),
           ("seconds_per_epoch", "s / epoch", 3),
           ("cpu_seconds_per_epoch", "CPU s / epoch", 3))


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds of every metric, per library and model."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["likelihood"], row["dispersion"], row["library"]), []).append(row)
    out = []
    for (likelihood, dispersion, library), members in groups.items():
        entry = {"library": library, "likelihood": likelihood, "dispersion": dispersion,
                 "seeds": len(members), "parameters": members[0]["parameters"]}
        for key, _, _ in METRICS:
            values = [m[key] for m in members]
            entry[key] = statistics.mean(values)
            entry[key + "_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(entry)
    return out


def markdown(summary: list[dict[str, Any]]) -> str:
    """The table: one row per library and model, mean ± standard deviation over seeds."""
    names = {(lik, disp): name for name, lik, disp in MODELS}
    head = ("| model | library | parameters | "
            + " | ".join(title for _, title, _ in METRICS) + " |")
    lines = [head, "|" + "---|" * 3 + "---:|" * len(METRICS)]
    for entry in summary:
        cells = [f"{entry[k]:.{d}f} ± {entry[k + '_sd']:.{d}f}" for k, _, d in METRICS]
        dispersion = entry["dispersion"]
        label = DISPERSION[dispersion] if entry["library"] == "pyro-lvae" else dispersion
        lines.append(f"| {names[(entry['likelihood'], dispersion)]} | {entry['library']} "
                     f"(`{label}`) | {entry['parameters']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def environment() -> dict[str, str]:
    """Versions and machine."""
    import os
    from importlib import metadata

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "pyro-ppl": pyro.__version__, "pyro-lvae": getattr(lv, "__version__", "?"),
            "machine": platform.machine(), "processor": platform.processor(),
            "cpus": str(os.cpu_count()), "cuda": str(torch.cuda.is_available())}
    for name in ("scvi-tools", "scanpy", "anndata", "lightning", "scikit-learn"):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = "not installed"
    return info


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole comparison: every model of :data:`MODELS`, both libraries, every seed."""
    torch.set_num_threads(args.threads)
    libraries = ("pyro-lvae",) if args.ours_only else LIBRARIES
    if args.libraries:
        libraries = tuple(name.strip() for name in args.libraries.split(","))
        unknown = set(libraries) - set(LIBRARIES)
        if unknown:
            raise SystemExit(f"unknown --libraries {sorted(unknown)}; choose from {LIBRARIES}")
    if libraries != ("pyro-lvae",):
        scvi_module().settings.verbosity = logging.WARNING
        for name in ("lightning", "lightning.pytorch", "lightning.pytorch.utilities.rank_zero",
                     "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
    epochs = args.epochs or (10 if args.quick else 300)
    seeds = args.seeds or (1 if args.quick else 3)
    setting = Setting(epochs=epochs, batch_size=args.batch_size,
                      samples=args.samples or (100 if args.quick else 1000))
    data = lv.datasets.pbmc68k_reduced()
    train_idx, test_idx = lv.datasets.held_out_split(data.counts.shape[0], args.held_out,
                                                     args.split_seed)
    train, test = data.counts[train_idx], data.counts[test_idx]
    test_labels = data.labels[test_idx]
    print(f"{len(train_idx)} training and {len(test_idx)} held-out cells x "
          f"{data.counts.shape[1]} genes; {epochs} epochs of batch {setting.batch_size}, "
          f"{seeds} seed(s), {setting.samples} importance samples, {args.threads} thread(s)",
          flush=True)
    rows: list[dict[str, Any]] = []
    result = {"setting": setting.__dict__, "held_out": args.held_out,
              "split_seed": args.split_seed, "threads": args.threads,
              "train_cells": len(train_idx), "test_cells": len(test_idx),
              "command": " ".join(sys.argv), "environment": environment(), "runs": rows}
    for _, likelihood, dispersion in MODELS:
        if args.models and f"{likelihood}:{dispersion}" not in args.models.split(","):
            continue
        for seed in range(seeds):
            for library in libraries:
                row = run_one(library, likelihood, dispersion, train, test, test_labels,
                              setting, seed)
                rows.append(row)
                print(f"{library:22s} {likelihood:4s} {dispersion:9s} seed {seed}: "
                      f"LL {row['marginal_ll_own']:.2f} (lv {row['marginal_ll_lv']:.2f}), "
                      f"ELBO {row['elbo']:.2f}, k-NN {row['knn_accuracy']:.3f}, "
                      f"silhouette {row['silhouette']:.3f}, "
                      f"{row['seconds_per_epoch']:.3f} s/epoch "
                      f"({row['cpu_seconds_per_epoch']:.3f} CPU), {row['parameters']:,} params",
                      flush=True)
                if args.out:  # after every run: a long run's finished part survives
                    _write(args.out, result)
    return finish(result, args.out)


def _write(path: str, result: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(result, f, indent=1)


def finish(result: dict[str, Any], out: str | None) -> dict[str, Any]:
    """Summarise ``result["runs"]``, print the table, write the JSON to ``out``."""
    result["summary"] = summarise(result["runs"])
    result["table"] = markdown(result["summary"])
    print()
    print(result["table"])
    if out:
        _write(out, result)
    return result


def merge(paths: list[str], out: str | None) -> dict[str, Any]:
    """One table from the runs of several result files of the same setting (runs of subsets
    of the models side by side, ``--models``)."""
    parts = []
    for path in paths:
        with open(path) as f:
            parts.append(json.load(f))
    for part in parts[1:]:
        for key in ("setting", "held_out", "split_seed", "threads"):
            if part[key] != parts[0][key]:
                raise SystemExit(f"{key} differs between {paths[0]} and the other files")
    result = {k: v for k, v in parts[0].items() if k not in ("summary", "table")}
    result["runs"] = [row for part in parts for row in part["runs"]]
    result["command"] = [part["command"] for part in parts]
    return finish(result, out)


def parser() -> argparse.ArgumentParser:
    """The benchmark's arguments."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 300; "
                   "--quick: 10)")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..n-1 (default 3; --quick: 1)")
    p.add_argument("--samples", type=int, default=None,
                   help="importance samples per cell (default 1000; --quick: 100)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--held-out", type=float, default=HELD_OUT,
                   help="fraction of held-out cells (default: the counts study's)")
    p.add_argument("--split-seed", type=int, default=SPLIT_SEED)
    p.add_argument("--threads", type=int, default=1, help="torch threads for both libraries")
    p.add_argument("--models", default=None,
                   help="a subset, e.g. nb:gene,zinb:gene-cell (default: all four)")
    p.add_argument("--libraries", default=None,
                   help="a subset of: " + ", ".join(LIBRARIES) + " (comma-separated)")
    p.add_argument("--ours-only", action="store_true", help="pyro-lvae's side alone")
    p.add_argument("--quick", action="store_true", help="a fast check: 1 seed, 10 epochs")
    p.add_argument("--out", default=None, help="write the runs, summary and table as JSON")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="only merge the runs of these result files into one table (--out)")
    return p


if __name__ == "__main__":
    warnings.filterwarnings("ignore", module="lightning")
    main_args = parser().parse_args()
    if main_args.merge:
        merge(main_args.merge, main_args.out)
    else:
        run(main_args)
