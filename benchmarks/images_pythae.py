"""pyro-lvae against pythae on the same images, networks, steps and batches.

pythae (Chadebec et al., NeurIPS 2022 datasets and benchmarks) is the VAE library a user would
otherwise pick. Its VAE, VAMP (VampPrior) VAE and IWAE train against pyro-lvae's F-VAE
(``lv.FixedScale``), LS-VAE (``lv.LearnedScalarScale``), LV-VAE (``lv.LearnedVectorScale``),
the discretised logistic (``lv.DiscretizedLogistic``, on the 8-bit levels ``k / 255``) and
LV-VAE with a VampPrior (``lv.VampPrior``), on two image sets, each split once into training,
validation and test images shared by every model and seed:

- ``digits28``: scikit-learn's 8x8 digits (grey levels ``k / 16``) upscaled to 28x28 (bilinear)
  and put on the 8-bit grid ``round(255 v) / 255``; the digits' fixed 70% / 30% split of
  ``pyro_lvae.experiments.studies.imagesets``, the last training images held out for
  validation;
- ``fashion-mnist``: a fixed subset of Fashion-MNIST (``imagesets.load_split``), its last
  training images held out for validation.

Every model has the same convolutional ResNet (``pyro_lvae.nets.ConvEncoder`` and
``ConvDecoder``): pythae gets them as its ``BaseEncoder`` / ``BaseDecoder``, with the encoder's
scale parametrised as pyro-lvae's (``softplus(raw) + 1e-4``, handed to pythae as its log
variance). The decoders differ only in their last layer's outputs: one per pixel for pythae
(through a sigmoid for its BCE loss, raw for MSE), two for the learned per-pixel scales and the
discretised logistic. Same Adam (learning rate 1e-3), batch size and number of steps (pythae
trains whole epochs: the training images are a multiple of the batch, so its epochs are exactly
``steps / (images / batch)``, and pyro-lvae's ``fit`` drops no batch). Weights are selected on
the validation images once per epoch (pyro-lvae: ``fit``'s ``HeldOutEvaluation``, the best
held-out ELBO; pythae: its trainer's eval dataset, the best eval loss) and the selected
weights are measured on the test images:

- Fréchet distance between decoder means at ``z ~ p(z)`` (``--samples`` of them) and the test
  images in the features of the classifier the priors study trains
  (``studies.features.classifier_for``; not comparable with published FIDs);
- reconstruction RMSE and sharpness (``pyro_lvae.experiments.sharpness``) of the decoder means
  at the posterior means of the test images (pixel units of [0, 1]);
- training steps per second: steps over the CPU time of the whole training call (its
  validation passes included), one torch thread per process (on a GPU: wall-clock time);
- bits/dim on the 8-bit grid for the discretised logistic, whose likelihood is a probability
  on the 256 levels (test ELBO); for pyro-lvae's Normal models, trained on dequantised pixels
  ``(k + u) / 256``, the bound with the dequantisation offset (a density on [0, 1) rescaled to
  the levels: ``+ 8`` bits). pythae's MSE and BCE losses are not normalised on the grid (MSE is
  a Normal with sigma 1 up to a constant, BCE is not a density on [0, 1]): no bits/dim.

Decoder means are clamped to [0, 1] (as an image is shown) before every measure.

    python benchmarks/images_pythae.py --data-root DATA --out runs/pythae-bench
    python benchmarks/images_pythae.py --quick --data-root DATA

**References**

- C. Chadebec, L. J. Vincent, S. Allassonnière. *Pythae: Unifying Generative Autoencoders in
  Python*. NeurIPS 2022 (Datasets and Benchmarks).
- V. Berger, M. Sebag. *Variational Auto-Encoders: Not all failures are equal*.
  arXiv:2003.01972.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
import torch.nn.functional as F

import pyro_lvae as lv
from pyro_lvae import evaluate
from pyro_lvae.datasets import Dequantize, UnitLevels, bits_per_dim
from pyro_lvae.experiments.jobs import run_jobs
from pyro_lvae.experiments.points import EVAL_SEED
from pyro_lvae.experiments.sharpness import sharpness_ratio
from pyro_lvae.experiments.studies.features import classifier_for
from pyro_lvae.experiments.studies.imagesets import (
    ImageSplit,
    levels,
    load_split,
    upscale_images,
)
from pyro_lvae.nets import ConvDecoder, ConvEncoder
from pyro_lvae.training import HeldOutEvaluation, ProgressBar

#: model -> (library, what it is); the order of the table
MODELS = {
    "pythae VAE": ("pythae", "VAE"),
    "pythae VAMP": ("pythae", "VAMP"),
    "pythae IWAE": ("pythae", "IWAE"),
    "F-VAE": ("pyro-lvae", "fixed"),
    "LS-VAE": ("pyro-lvae", "learned-scalar"),
    "LV-VAE": ("pyro-lvae", "learned-vector"),
    "discretised logistic": ("pyro-lvae", "discretized-logistic"),
    "LV-VAE + VampPrior": ("pyro-lvae", "learned-vector"),
}
IMAGE_SETS = ("digits28", "fashion-mnist")
#: measured per run (mean and sd over seeds in the table)
METRICS = ("frechet", "frechet_floor", "rmse", "sharpness", "steps_per_second", "bits_per_dim",
           "bits_per_dim_dequantized", "best_step")
#: images of each kind kept per run for the figure
GRID = 8
#: the floor of a learned sigma on images (as ``pyro-lvae train`` uses)
MIN_SCALE = 0.01
#: the encoders' floor on the posterior scale (``lv.GaussianEncoder``'s)
ENCODER_MIN_SCALE = 1e-4
QUICK = {"steps": 40, "seeds": 1, "width": 4, "blocks": 0, "latent_dim": 4, "batch_size": 16,
         "digits_train": 64, "fashion_train": 64, "validation": 32, "fashion_test": 64,
         "samples": 64, "components": 5, "iwae_samples": 2}


def parser() -> argparse.ArgumentParser:
    """The benchmark's arguments."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", help="the folder that holds FashionMNIST/raw (without it, "
                                        "only digits28 runs)")
    p.add_argument("--images", nargs="+", choices=IMAGE_SETS, default=None,
                   help="image sets (default: both, or digits28 without --data-root)")
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS),
                   metavar="MODEL", help=f"models (default all: {', '.join(MODELS)})")
    p.add_argument("--steps", type=int, default=240, help="training steps of every model")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--width", type=int, default=8, help="channels of the first convolution")
    p.add_argument("--convs", type=int, default=3)
    p.add_argument("--blocks", type=int, default=1, help="residual blocks per network")
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--fixed-scale", type=float, default=1.0,
                   help="F-VAE's sigma (1: pythae's MSE loss, 0.5 sum of squared errors)")
    p.add_argument("--pythae-loss", choices=("bce", "mse"), default="bce",
                   help="pythae's reconstruction loss (its decoders end in a sigmoid for bce)")
    p.add_argument("--components", type=int, default=50, help="VampPrior pseudo-inputs")
    p.add_argument("--iwae-samples", type=int, default=5,
                   help="pythae IWAE's samples (its own default: 10)")
    p.add_argument("--digits-train", type=int, default=1024,
                   help="digits training images (the rest of the 1257 validate)")
    p.add_argument("--fashion-train", type=int, default=1920)
    p.add_argument("--validation", type=int, default=500,
                   help="Fashion-MNIST validation images")
    p.add_argument("--fashion-test", type=int, default=1000)
    p.add_argument("--samples", type=int, default=1000, help="generations per Fréchet distance")
    p.add_argument("--workers", type=int, default=1, help="processes (one thread each)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="folder for results.json, results.md and the "
                                               "runs' cache (resumes from it)")
    p.add_argument("--quick", action="store_true",
                   help="a fast check: " + ", ".join(f"{k} {v}" for k, v in QUICK.items()))
    return p


def require_pythae():
    """pythae's modules, or a :class:`SystemExit` that says how to install it."""
    try:
        import pythae  # noqa: F401
        from pythae.models import IWAE, VAE, VAMP, IWAEConfig, VAEConfig, VAMPConfig
    except ImportError as e:
        raise SystemExit(
            f"pythae is not installed ({e}); it is an optional benchmark dependency: "
            "pip install 'pythae==0.1.2' (it must not replace your torch; check pip list), or "
            "run pyro-lvae's side only: --models " + " ".join(
                repr(m) for m, (lib, _) in MODELS.items() if lib == "pyro-lvae")) from None
    return {"VAE": (VAE, VAEConfig), "VAMP": (VAMP, VAMPConfig), "IWAE": (IWAE, IWAEConfig)}


# ---- data ------------------------------------------------------------------------------------
def upscale(x: torch.Tensor, side: int = 28) -> torch.Tensor:
    """Flat 8x8 images in [0, 1] as ``(N, 1, side, side)`` images (bilinear) on the 8-bit grid
    ``round(255 v) / 255``, as the studies upscale them (``imagesets.upscale_images``)."""
    return upscale_images(x, side).reshape(-1, 1, side, side)


def image_split(name: str, args: dict[str, Any]) -> tuple[ImageSplit, torch.Tensor]:
    """``(split, validation)``: the image set ``name`` as ``(N, 1, 28, 28)`` pixels ``k / 255``
    (training and test images with labels) and its validation images, the last of the set's
    training images."""
    if name == "digits28":
        s = load_split("digits")
        train, test, keep = upscale(s.train), upscale(s.test), args["digits_train"]
    else:
        keep = args["fashion_train"]
        s = load_split("fashion-mnist", args["data_root"], keep + args["validation"],
                       args["fashion_test"])
        train, test = s.train.reshape(-1, 1, 28, 28), s.test.reshape(-1, 1, 28, 28)
    if not 0 < keep < len(train):
        raise SystemExit(f"{keep} training images of {name}: choose 1 to {len(train) - 1} (the "
                         "rest validate)")
    return (ImageSplit(train[:keep], s.train_labels[:keep], test, s.test_labels, (1, 28, 28)),
            train[keep:])


def flat(split: ImageSplit) -> ImageSplit:
    """``split`` with flat images (the feature classifier's input)."""
    return ImageSplit(split.train.flatten(1), split.train_labels, split.test.flatten(1),
                      split.test_labels, split.shape)


def clock(device: str) -> float:
    """Seconds: the process's CPU time on the CPU (other processes sharing the cores do not
    count), wall-clock time after the GPU's queue is done on CUDA."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


# ---- pythae's networks -----------------------------------------------------------------------
def pythae_networks(args: dict[str, Any]):
    """pythae's encoder and decoder: pyro-lvae's convolutional ResNet, the encoder's scale as
    ``softplus(raw) + 1e-4`` (``lv.GaussianEncoder``'s), the decoder through a sigmoid for
    pythae's BCE loss."""
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    shape, k = (1, 28, 28), args["latent_dim"]
    size = {"width": args["width"], "convs": args["convs"], "blocks": args["blocks"]}

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            BaseEncoder.__init__(self)
            self.net = ConvEncoder(shape, 2 * k, **size)

        def forward(self, x):
            loc, raw = self.net(x).split(k, dim=-1)
            scale = F.softplus(raw) + ENCODER_MIN_SCALE
            return ModelOutput(embedding=loc, log_covariance=2 * scale.log())

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            BaseDecoder.__init__(self)
            self.net = ConvDecoder(k, shape, 1, **size)

        def forward(self, z):
            out = self.net(z)
            return ModelOutput(reconstruction=torch.sigmoid(out) if args["pythae_loss"] == "bce"
                               else out)

    return Encoder(), Decoder()


def train_pythae(job: dict[str, Any], split: ImageSplit, validation: torch.Tensor):
    """Train one pythae model with its ``BaseTrainer``; returns ``(best model, CPU seconds of
    training, best step)``: the epoch with the best eval loss on ``validation`` (pythae's
    selection), counted in steps."""
    from pythae.data.datasets import BaseDataset
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from pythae.trainers.training_callbacks import (
        MetricConsolePrinterCallback,
        ProgressBarCallback,
        TrainingCallback,
    )

    for name in ("pythae", "pythae.trainers.base_trainer.base_trainer"):
        logging.getLogger(name).setLevel(logging.WARNING)  # its trainer logs INFO to stderr
    kind = MODELS[job["model"]][1]
    model_cls, config_cls = require_pythae()[kind]
    extra = {"VAMP": {"number_components": job["components"]},
             "IWAE": {"number_samples": job["iwae_samples"]}}.get(kind, {})
    config = config_cls(input_dim=(1, 28, 28), latent_dim=job["latent_dim"],
                        reconstruction_loss=job["pythae_loss"], **extra)
    torch.manual_seed(job["seed"])
    encoder, decoder = pythae_networks(job)
    model = model_cls(config, encoder=encoder, decoder=decoder)
    per_epoch = len(split.train) // job["batch_size"]
    losses: list[float] = []

    class EvalLosses(TrainingCallback):
        def on_log(self, training_config, logs, **kwargs):
            losses.append(float(logs["eval_epoch_loss"]))

    with tempfile.TemporaryDirectory() as folder:
        training = BaseTrainerConfig(
            output_dir=folder, per_device_train_batch_size=job["batch_size"],
            per_device_eval_batch_size=1000, num_epochs=job["steps"] // per_epoch,
            learning_rate=job["lr"], seed=job["seed"], no_cuda=job["device"] == "cpu")
        trainer = BaseTrainer(model, BaseDataset(split.train, split.train_labels),
                              BaseDataset(validation, torch.zeros(len(validation))), training,
                              callbacks=[EvalLosses()])
        setup = trainer._setup_callbacks

        def quiet() -> None:  # pythae's progress bars and metric printing off the console
            setup()
            trainer.callback_handler.callbacks = [
                c for c in trainer.callback_handler.callbacks
                if not isinstance(c, (ProgressBarCallback, MetricConsolePrinterCallback))]

        trainer._setup_callbacks = quiet
        start = clock(job["device"])
        trainer.train()
        seconds = clock(job["device"]) - start
    return trainer._best_model.eval(), seconds, (int(np.argmin(losses)) + 1) * per_epoch


@torch.no_grad()
def pythae_parts(model, kind: str):
    """``(reconstruct, sample)`` of a pythae model: decoder means at the posterior means, and
    at ``n`` draws of its prior (``N(0, I)``; VAMP: its mixture of the encoder at the
    pseudo-inputs)."""
    def reconstruct(x):
        return model.decoder(model.encoder(x).embedding).reconstruction

    device = next(model.parameters()).device

    def sample(n, generator):
        k = model.latent_dim
        eps = torch.randn(n, k, generator=generator).to(device)
        if kind != "VAMP":
            return model.decoder(eps).reconstruction
        c = model.number_components
        out = model.encoder(model.pseudo_inputs(model.idle_input.to(device))
                            .reshape(c, 1, 28, 28))
        pick = torch.randint(c, (n,), generator=generator).to(device)
        z = out.embedding[pick] + eps * (0.5 * out.log_covariance[pick]).exp()
        return model.decoder(z).reconstruction

    return reconstruct, sample


# ---- pyro-lvae -------------------------------------------------------------------------------
def lvae_model(job: dict[str, Any]) -> lv.VAE:
    """The pyro-lvae model of ``job`` (built under its seed)."""
    kind = MODELS[job["model"]][1]
    obs = {"fixed": lambda: lv.FixedScale(job["fixed_scale"]),
           "learned-scalar": lambda: lv.LearnedScalarScale(min_scale=MIN_SCALE),
           "learned-vector": lambda: lv.LearnedVectorScale(min_scale=MIN_SCALE),
           "discretized-logistic": lambda: lv.DiscretizedLogistic()}[kind]()
    prior = lv.VampPrior(job["components"]) if "VampPrior" in job["model"] else None
    pyro.set_rng_seed(job["seed"])
    pyro.clear_param_store()
    return lv.conv_vae((1, 28, 28), job["latent_dim"], obs, width=job["width"],
                       convs=job["convs"], blocks=job["blocks"], prior=prior)


def _transform(vae: lv.VAE):
    """Dequantised pixels for Normal models, the levels ``k / 255`` for discretised ones."""
    return UnitLevels() if vae.observation.discrete else Dequantize()


def train_lvae(job: dict[str, Any], split: ImageSplit, validation: torch.Tensor):
    """Train one pyro-lvae model with ``fit``; returns ``(best weights, CPU seconds, best
    step)``: the weights with the best held-out ELBO on ``validation`` (evaluated once per
    epoch, as pythae does)."""
    vae = lvae_model(job)
    transform = _transform(vae)
    held_out = transform(levels(validation), torch.Generator().manual_seed(EVAL_SEED))
    per_epoch = len(split.train) // job["batch_size"]
    with tempfile.TemporaryDirectory() as folder:
        start = clock(job["device"])
        history = lv.fit(vae, levels(split.train), steps=job["steps"],
                         batch_size=job["batch_size"], lr=job["lr"], transform=transform,
                         device=job["device"], seed=job["seed"], out=folder,
                         tools=[ProgressBar(False), HeldOutEvaluation(held_out, every=per_epoch)])
        seconds = clock(job["device"]) - start
        best = lv.load(Path(folder) / "best.pt", map_location=job["device"])
    return best.eval(), seconds, int(history.best["step"]) + 1


# ---- one run ---------------------------------------------------------------------------------
_DATA: dict[str, Any] = {}


def _data(job: dict[str, Any]):
    key = json.dumps([job["images"], job["digits_train"], job["fashion_train"],
                      job["validation"], job["fashion_test"]])
    if key not in _DATA:
        split, validation = image_split(job["images"], job)
        classifier = classifier_for(job["images"], flat(split))
        _DATA[key] = split, validation, classifier
    return _DATA[key]


@torch.no_grad()
def measure(reconstruct, sample, split: ImageSplit, classifier, samples: int,
            device: str) -> dict[str, Any]:
    """Fréchet distance of ``samples`` decoder means at prior draws to the test images (and,
    as the floor at these sample sizes, of as many training images), reconstruction RMSE and
    sharpness of the test images (decoder means clamped to [0, 1]); the first
    :data:`GRID` test images, their reconstructions and generations as 8-bit levels."""
    x = split.test.to(device)
    rec = torch.cat([reconstruct(b) for b in x.split(500)]).clamp(0, 1).cpu()
    g = torch.Generator().manual_seed(EVAL_SEED + 7)
    gen = torch.cat([sample(min(500, samples - i), g).cpu()
                     for i in range(0, samples, 500)]).clamp(0, 1)
    reference = classifier.features(split.test.flatten(1))
    return {"frechet": evaluate.frechet_distance(classifier.features(gen.flatten(1)), reference),
            "frechet_floor": evaluate.frechet_distance(
                classifier.features(split.train[:samples].flatten(1)), reference),
            "rmse": float((rec - split.test).pow(2).mean().sqrt()),
            "sharpness": sharpness_ratio(rec, split.test),
            "grid": {k: levels(v[:GRID]).flatten(1).tolist()
                     for k, v in (("test", split.test), ("reconstructions", rec),
                                  ("generations", gen))}}


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train and measure one (image set, model, seed) run (module level: it runs in worker
    processes)."""
    torch.set_num_threads(1)
    split, validation, classifier = _data(job)
    library, kind = MODELS[job["model"]]
    out = {k: job[k] for k in ("images", "model", "seed", "steps")}
    out["library"] = library
    if library == "pythae":
        model, seconds, best = train_pythae(job, split, validation)
        reconstruct, sample = pythae_parts(model.to(job["device"]), kind)
        out.update(bits_per_dim=math.nan, bits_per_dim_dequantized=math.nan, best_step=best)
    else:
        vae, seconds, best = train_lvae(job, split, validation)
        g = torch.Generator().manual_seed(EVAL_SEED)
        x = _transform(vae)(levels(split.test), g).to(vae.device)
        nll = -evaluate.elbo_parts(vae, x, num_particles=4)["elbo"]
        discrete = vae.observation.discrete
        dims = x[0].numel()
        out.update(best_step=best,
                   bits_per_dim=(bits_per_dim(nll, dims, "unit-levels", discrete=True)
                                 if discrete else math.nan),
                   bits_per_dim_dequantized=(math.nan if discrete
                                             else bits_per_dim(nll, dims, "dequantize")))

        def reconstruct(x):
            return vae.reconstruct(x)

        def sample(n, generator):
            pyro.set_rng_seed(int(torch.randint(2**31, (1,), generator=generator)))
            return vae.sample(n)

    out.update(measure(reconstruct, sample, split, classifier, job["samples"], job["device"]))
    out["steps_per_second"] = job["steps"] / seconds
    out["train_seconds"] = seconds
    out["classifier_accuracy"] = classifier.accuracy
    return out


# ---- the whole benchmark ---------------------------------------------------------------------
def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings every run shares (``--quick`` applied)."""
    s = {k: v for k, v in vars(args).items() if k not in ("quick", "out", "workers", "models",
                                                          "images")}
    if args.quick:
        s.update(QUICK)
    return s


def jobs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One job per (image set, model, seed)."""
    s = settings(args)
    images = args.images or (list(IMAGE_SETS) if args.data_root else ["digits28"])
    if "fashion-mnist" in images and not args.data_root:
        raise SystemExit("fashion-mnist needs --data-root (the folder that holds "
                         "FashionMNIST/raw)")
    for name in images:
        train = s["digits_train"] if name == "digits28" else s["fashion_train"]
        if train % s["batch_size"] or s["steps"] % (train // s["batch_size"]):
            raise SystemExit(
                f"{name}: {train} training images in batches of {s['batch_size']} must be whole "
                f"epochs and --steps {s['steps']} a whole number of them (pythae trains whole "
                "epochs): choose the sizes so")
    if any(MODELS[m][0] == "pythae" for m in args.models):
        require_pythae()
    return [{**s, "images": name, "model": m, "seed": seed}
            for seed in range(s["seeds"]) for name in images for m in args.models]


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (image set, model): mean and sample sd over seeds of :data:`METRICS`."""
    rows = []
    for name in dict.fromkeys(r["images"] for r in results):
        for model in dict.fromkeys(r["model"] for r in results):
            rs = [r for r in results if r["images"] == name and r["model"] == model]
            if not rs:
                continue
            row = {"images": name, "model": model, "library": rs[0]["library"], "seeds": len(rs)}
            for key in METRICS:
                v = np.array([r[key] for r in rs], dtype=float)
                row[key] = float(v.mean())
                row[key + "_sd"] = float(v.std(ddof=1)) if len(v) > 1 else math.nan
            rows.append(row)
    return rows


def _cell(row: dict[str, Any], key: str, digits: int) -> str:
    m, s = row[key], row[key + "_sd"]
    if math.isnan(m):
        return "n/a"
    return f"{m:.{digits}f}" if math.isnan(s) else f"{m:.{digits}f} ± {s:.{digits}f}"


def markdown(results: list[dict[str, Any]], s: dict[str, Any]) -> str:
    """The table: one row per (image set, model)."""
    lines = ["| images | model | seeds | Fréchet distance | reconstruction RMSE | sharpness | "
             "steps/s | bits/dim (8-bit grid) | bits/dim (dequantised bound) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in aggregate(results):
        lines.append(f"| {r['images']} | {r['model']} | {r['seeds']} | {_cell(r, 'frechet', 2)} "
                     f"| {_cell(r, 'rmse', 4)} | {_cell(r, 'sharpness', 3)} | "
                     f"{_cell(r, 'steps_per_second', 2)} | {_cell(r, 'bits_per_dim', 3)} | "
                     f"{_cell(r, 'bits_per_dim_dequantized', 3)} |")
    notes = []
    for name in dict.fromkeys(r["images"] for r in results):
        rs = [r for r in results if r["images"] == name]
        notes.append(f"- {name}: feature classifier's test accuracy "
                     f"{rs[0]['classifier_accuracy']:.3f}; Fréchet distance of as many training "
                     f"images as generations (the floor) {rs[0]['frechet_floor']:.2f}")
    return ("\n".join(lines) + "\n\nMean ± sd over seeds. " + _settings_text(s) + "\n\n"
            + "\n".join(notes) + "\n")


def _settings_text(s: dict[str, Any]) -> str:
    return (f"{s['steps']} steps, batch {s['batch_size']}, Adam {s['lr']:g}; convolutional "
            f"ResNet width {s['width']}, {s['convs']} convolutions, {s['blocks']} residual "
            f"block(s), latent {s['latent_dim']}; pythae loss {s['pythae_loss']}, IWAE "
            f"{s['iwae_samples']} samples, VampPrior {s['components']} pseudo-inputs; F-VAE "
            f"sigma {s['fixed_scale']:g}; learned sigmas floored at {MIN_SCALE:g}; "
            f"{s['samples']} generations per Fréchet distance.")


def figure(results: list[dict[str, Any]], name: str):
    """Seed 0 of every model on the image set ``name``: a row of test images, then per model
    its reconstructions of them and its generations (decoder means, clamped to [0, 1])."""
    from matplotlib.figure import Figure

    rs = [r for r in results if r["images"] == name and r["seed"] == 0 and "grid" in r]
    fig = Figure(figsize=(2 * GRID * 0.5, (1 + len(rs)) * 0.55), layout="constrained")
    axes = fig.subplots(1 + len(rs), 2, squeeze=False)

    def strip(rows):
        a = np.asarray(rows, dtype=float).reshape(-1, 28, 28) / 255
        return np.concatenate([np.pad(i, ((0, 0), (0, 1)), constant_values=1) for i in a], 1)

    axes[0, 0].imshow(strip(rs[0]["grid"]["test"]), cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title("test images / reconstructions", fontsize=7)
    axes[0, 1].set_title("generations (decoder means at z ~ p(z))", fontsize=7)
    axes[0, 0].set_ylabel("data", rotation=0, ha="right", fontsize=7)
    for row, r in zip(axes[1:], rs, strict=True):
        row[0].imshow(strip(r["grid"]["reconstructions"]), cmap="gray", vmin=0, vmax=1)
        row[1].imshow(strip(r["grid"]["generations"]), cmap="gray", vmin=0, vmax=1)
        row[0].set_ylabel(r["model"], rotation=0, ha="right", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 1].set_axis_off()
    return fig


def versions() -> dict[str, str]:
    """The versions of Python, torch, pyro-ppl, pyro-lvae and pythae (if installed)."""
    out = {"python": sys.version.split()[0], "torch": torch.__version__,
           "pyro-ppl": pyro.__version__, "pyro-lvae": lv.__version__}
    try:
        from importlib.metadata import version

        out["pythae"] = version("pythae")
    except Exception:  # noqa: BLE001 - not installed
        out["pythae"] = "not installed"
    return out


def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run (or read back from ``--out``) every job; write ``results.json`` and ``results.md``
    there; print the table."""
    todo = jobs(args)
    cache = Path(args.out) / "runs" if args.out else None
    start = time.perf_counter()
    results = run_jobs(run_job, todo, workers=args.workers, cache=cache,
                       report=lambda line: print(line, file=sys.stderr, flush=True))
    s = settings(args)
    table = markdown(results, s)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(table)
        (out / "results.json").write_text(json.dumps(
            {"settings": s, "versions": versions(), "cpu_count": os.cpu_count(),
             "wall_seconds": time.perf_counter() - start, "summary": aggregate(results),
             "runs": [{k: v for k, v in r.items() if k != "grid"} for r in results]},
            indent=1, default=float))
        for name in dict.fromkeys(r["images"] for r in results):
            if any(r["images"] == name and r["seed"] == 0 for r in results):
                figure(results, name).savefig(out / f"pythae-{name}.png", dpi=100)
    return results


if __name__ == "__main__":
    main(parser().parse_args())
