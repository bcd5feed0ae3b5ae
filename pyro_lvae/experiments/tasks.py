"""What ``pyro-lvae train`` does for each kind of data: build the model, supply the data,
evaluate the trained model and draw its figures.

- :class:`PointsTask`: the artificial 2D problem (fresh points every step, residual MLPs).
- :class:`ImageTask`: MNIST, Fashion-MNIST, CelebA (convolutional ResNets; pixels dequantised,
  scaled or binarised per batch; held-out ELBO and IWAE in nats and bits/dim; reconstruction
  and generation grids; the spread of samples around their means; sigma per pixel).
- :class:`~pyro_lvae.experiments.count_tasks.CountTask`: count data (pbmc68k,
  counts-synthetic; one-hidden-layer MLPs; held-out ELBO and IWAE per cell, the latent's
  agreement with the cell types).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from .. import evaluate, observations
from ..datasets import IMAGE_DATASETS, PIXEL_TRANSFORMS, bits_per_dim, load_images, manifold2d
from ..errors import ConfigError
from ..io import save_figure
from ..observations import Observation
from ..priors import prior_from_config
from ..training import History
from ..vae import VAE, conv_vae, mlp_vae
from .count_tasks import COUNT_DATASETS, CountTask
from .plots import image_grid_figure, points_figure, sigma_map_figure, training_figure
from .points import EVAL_SEED, figure_row, held_out, summarize
from .sharpness import sharpness_ratio

__all__ = ["TASKS", "PointsTask", "ImageTask", "build_observation"]

#: data points (or images) drawn to measure the training data's spread
SPREAD_SAMPLE = 10000


def _sigma_trajectory(history: History) -> torch.Tensor:
    sigma = torch.as_tensor(history["sigma"], dtype=torch.get_default_dtype())
    if sigma.numel() == 0 or not torch.isfinite(sigma).all():
        raise ConfigError("the history has no finite 'sigma' trajectory to replay")
    return sigma


def build_observation(kind: str, sigma: float | None, min_scale: float, channels: int,
                      history: History | None = None, **extra: Any) -> Observation:
    """The observation model named ``kind`` (a command-line name), from the command line's
    settings, through :func:`pyro_lvae.observations.build`.

    :param sigma: ``--sigma``: the fixed sigma of a model whose sigma is a setting (default 1),
        or the start of a learned one (default 1, the paper's start: ``pyro-lvae train``
        passes the data-scaled start it measured unless ``--sigma`` is given; the library's
        own default, ``init_scale=None``, starts from the first batch)
    :param min_scale: ``--min-scale``, for the models with a floor
    :param channels: the data's channels, for a sigma per channel
    :param history: ``--sigma-from``: the run whose final sigma (a fixed sigma: F*-VAE) or whose
        trajectory (a schedule: the replay) the model takes
    :param extra: further keyword settings of the model, passed on as they are (``beta_nll``
        from ``--beta-nll``)
    """
    names = observations.settings_of(kind)
    settings: dict[str, Any] = {}
    if history is not None:
        if "scale" in names:
            if sigma is not None:
                raise ConfigError("give either --sigma or --sigma-from, not both")
            settings["scale"] = float(history["sigma"][-1])
        elif "schedule" in names:
            settings["schedule"] = _sigma_trajectory(history)
        else:
            raise ConfigError(f"--sigma-from applies to --obs fixed or scheduled, not {kind}")
    elif "schedule" in names:
        raise ConfigError(f"--obs {kind} needs --sigma-from RUN (a run folder or its "
                          "history.csv) whose sigma trajectory it replays")
    elif "scale" in names:
        settings["scale"] = 1.0 if sigma is None else sigma
    elif "init_scale" in names:
        settings["init_scale"] = 1.0 if sigma is None else sigma
    elif sigma is not None:
        raise ConfigError(f"--sigma does not apply to --obs {kind}")
    for name, value in (("min_scale", min_scale), ("channels", channels)):
        if name in names:
            settings[name] = value
    return observations.build(kind, **settings, **extra)


def _first_images(images, n: int) -> torch.Tensor:
    """The first ``n`` images (or all, if fewer) of a tensor or of a dataset of tensors."""
    n = min(n, len(images))
    if isinstance(images, torch.Tensor):
        return images[:n]
    return torch.stack([images[i] for i in range(n)])


class PointsTask:
    """The paper's artificial problem, :func:`pyro_lvae.datasets.manifold2d`."""

    name = "manifold2d"
    defaults = {"latent_dim": 2, "blocks": 4, "batch_size": 100, "steps": 5000,
                "min_scale": 1e-3}

    def build(self, s: dict[str, Any], observation: Observation) -> VAE:
        return mlp_vae(2, s["latent_dim"], observation, hidden=s["hidden"], blocks=s["blocks"],
                       standardize=False,  # the paper's networks
                       prior=prior_from_config(s.get("prior")))

    def channels(self, s: dict[str, Any]) -> int:
        return 2

    def data(self, s: dict[str, Any]):
        return manifold2d, None, s["steps"], None

    def sample(self, s: dict[str, Any], n: int = SPREAD_SAMPLE) -> torch.Tensor:
        """``n`` training points drawn with a fixed seed (to measure the data's spread)."""
        return manifold2d(n, generator=torch.Generator().manual_seed(EVAL_SEED + 1))

    def report(self, vae: VAE, history: History, run: Path, s: dict[str, Any]) -> dict[str, Any]:
        x, region = held_out()
        summary = summarize(vae, x, region)
        title = s["obs"]
        save_figure(points_figure([figure_row(vae, title, x)]), run / "points.png")
        save_figure(training_figure({title: history}), run / "training.png")
        return summary

    def validation(self, s: dict[str, Any], n: int = 1000) -> torch.Tensor:
        """``n`` fixed points for the held-out ELBO during training (``--eval-every``), drawn
        apart from the held-out set of the summary, which stays unseen by model selection."""
        return manifold2d(n, generator=torch.Generator().manual_seed(EVAL_SEED + 2))

    def evaluate(self, vae: VAE, s: dict[str, Any]) -> dict[str, Any]:
        """The summary's held-out numbers of ``vae`` (another model of the run: averaged)."""
        return summarize(vae, *held_out())

    figures = ("points.png", "training.png")


class ImageTask:
    """MNIST, Fashion-MNIST or CelebA with a convolutional ResNet VAE."""

    figures = ("reconstructions.png", "generations.png", "training.png")

    def __init__(self, name: str) -> None:
        self.name = name
        self.shape = IMAGE_DATASETS[name][2]
        big = self.shape[1] >= 64
        self.defaults = {"latent_dim": 2048 if big else 256, "blocks": 5 if big else 4,
                         "convs": 4 if big else 3, "batch_size": 128, "epochs": 10,
                         # a per-pixel sigma floored at 1e-3 reaches it on background pixels
                         # and training spikes when a garment reaches them (docs/images.md)
                         "min_scale": 0.01}

    def build(self, s: dict[str, Any], observation: Observation) -> VAE:
        return conv_vae(self.shape, s["latent_dim"], observation, width=s["width"],
                        convs=s["convs"], blocks=s["blocks"],
                        prior=prior_from_config(s.get("prior")))

    def channels(self, s: dict[str, Any]) -> int:
        return self.shape[0]

    @staticmethod
    def _pixels(s: dict[str, Any]) -> str:
        """The run's pixel transform by its current name (a run saved with a former name, such
        as ``scale``, is read without a warning)."""
        return PIXEL_TRANSFORMS.resolve(s["pixels"], warn=False)

    def _transform(self, s: dict[str, Any]):
        return PIXEL_TRANSFORMS.build(self._pixels(s))

    def data(self, s: dict[str, Any]):
        """``(data, transform, steps, steps per epoch)``."""
        from ..training.distributed import rank_info

        rank, world = rank_info()
        images = load_images(self.name, s["data_root"], train=True, download=s["download"])
        held = self._held_out(s, len(images))
        if held:  # the validation split: the last training images, never trained on
            images = (images[:-held] if isinstance(images, torch.Tensor)
                      else torch.utils.data.Subset(images, range(len(images) - held)))
        n = len(images)
        per_epoch = math.ceil(n / (s["batch_size"] * world))
        steps = s["steps"] if s.get("steps") is not None else s["epochs"] * per_epoch
        if isinstance(images, torch.Tensor):
            return images, self._transform(s), steps, per_epoch
        sampler = (torch.utils.data.DistributedSampler(images, world, rank, shuffle=True,
                                                       seed=s["seed"]) if world > 1 else None)
        loader = torch.utils.data.DataLoader(
            images, batch_size=s["batch_size"], shuffle=sampler is None, sampler=sampler,
            drop_last=len(images) >= 2 * s["batch_size"] * world,
            num_workers=s["num_workers"], pin_memory=torch.cuda.is_available(),
            persistent_workers=s["num_workers"] > 0)
        return loader, self._transform(s), steps, per_epoch

    def sample(self, s: dict[str, Any], n: int = SPREAD_SAMPLE) -> torch.Tensor:
        """The first ``n`` training images as the model sees them (to measure the data's
        spread; the same on every process of a distributed run)."""
        images = load_images(self.name, s["data_root"], train=True, download=s["download"])
        raw = _first_images(images, n)
        return self._transform(s)(raw, torch.Generator().manual_seed(EVAL_SEED + 1))

    @staticmethod
    def _held_out(s: dict[str, Any], n: int) -> int:
        """How many of the ``n`` training images are the validation split (resolving the
        default, ``None``, to 5000 or a tenth of a smaller set, in ``s``); 0 for runs without
        one, and for runs saved before validation splits (their validation images are the
        test split's last ones)."""
        if s.get("validation_images", 0) is None:
            s["validation_images"] = min(5000, n // 10)
        held = s.get("validation_images") or 0
        if held and held > n // 2:
            raise ConfigError(f"--validation-images {held} would hold out more than half of the "
                              f"{n} training images; give at most {n // 2}")
        return held

    def validation(self, s: dict[str, Any]) -> torch.Tensor:
        """The validation split for the held-out ELBO during training (``--eval-every``), on
        which the best weights are selected: the last ``validation_images`` training images,
        held out of training by :meth:`data`. Runs saved before validation splits keep theirs,
        the last ``eval_images`` test images (beyond the summary's held-out set)."""
        if "validation_images" in s:
            images = load_images(self.name, s["data_root"], train=True, download=False)
            n = self._held_out(s, len(images))
            raw = (images[-n:] if isinstance(images, torch.Tensor)
                   else torch.stack([images[i] for i in range(len(images) - n, len(images))]))
            return self._transform(s)(raw, torch.Generator().manual_seed(EVAL_SEED + 2))
        images = load_images(self.name, s["data_root"], train=False, download=False)
        n = min(s["eval_images"], len(images) - s["eval_images"])
        if n < 1:
            raise ConfigError(f"--eval-every needs test images beyond the {s['eval_images']} "
                              f"of the summary's held-out set; lower --eval-images")
        picks = range(len(images) - n, len(images))
        raw = (images[-n:] if isinstance(images, torch.Tensor)
               else torch.stack([images[i] for i in picks]))
        return self._transform(s)(raw, torch.Generator().manual_seed(EVAL_SEED + 2))

    @torch.no_grad()
    def evaluate(self, vae: VAE, s: dict[str, Any]) -> dict[str, Any]:
        """The summary's held-out ELBO of ``vae`` (another model of the run: averaged)."""
        _, x = self._test_images(s, vae.device)
        elbo = evaluate.elbo_parts(vae, x, batch_size=250)
        out: dict[str, Any] = {f"{k}_nats": v for k, v in elbo.items()}
        out["elbo_bits_per_dim"] = bits_per_dim(
            -elbo["elbo"], x[0].numel(), self._pixels(s),
            discrete=observations.describe(s["obs"]).discrete)
        return out

    def _test_images(self, s: dict[str, Any], device) -> tuple[torch.Tensor, torch.Tensor]:
        images = load_images(self.name, s["data_root"], train=False, download=False)
        raw = _first_images(images, s["eval_images"])
        x = self._transform(s)(raw, torch.Generator().manual_seed(EVAL_SEED))
        return raw, x.to(device)

    @torch.no_grad()
    def report(self, vae: VAE, history: History, run: Path, s: dict[str, Any]) -> dict[str, Any]:
        raw, x = self._test_images(s, vae.device)
        dims = x[0].numel()
        out: dict[str, Any] = {"images": len(x), "pixels": self._pixels(s)}
        elbo = evaluate.elbo_parts(vae, x, batch_size=250)
        out.update({f"{k}_nats": v for k, v in elbo.items()})
        discrete = observations.describe(s["obs"]).discrete
        out["elbo_bits_per_dim"] = bits_per_dim(-elbo["elbo"], dims, self._pixels(s),
                                                discrete=discrete)
        m = min(len(x), s["iwae_images"])
        iwae = evaluate.iwae(vae, x[:m], num_samples=s["iwae_samples"], batch_size=32,
                             chunk_size=min(s["iwae_samples"], 50))
        out["iwae_nats"] = iwae
        out["iwae_bits_per_dim"] = bits_per_dim(-iwae, dims, self._pixels(s), discrete=discrete)
        out["iwae_images"], out["iwae_samples"] = m, s["iwae_samples"]
        out.update(evaluate.latent_diagnostics(vae, x))
        # generation: means of p(x|z) beside draws, and how far draws lie from their means
        with torch.random.fork_rng(devices=[vae.device] if vae.device.type == "cuda" else []):
            torch.manual_seed(EVAL_SEED + 3)
            z = vae.prior().sample((64,))  # the prior in use
        px = vae.likelihood(z)
        means, samples = px.mean, px.sample()
        out["sample_spread"] = float((samples - means).pow(2).mean().sqrt())
        # reconstruction: the error and the sharpness (sharpness.py) of the decoder means
        rec = torch.cat([vae.reconstruct(b) for b in x.split(250)])
        out["reconstruction_rmse"] = float((rec - x).pow(2).mean().sqrt())
        out["sharpness"] = sharpness_ratio(rec, x)
        rec = rec[:16]
        save_figure(image_grid_figure([("data", x[:16]), ("reconstruction", rec)],
                                      f"{self.name}, {s['obs']}: held-out images and decoder "
                                      "means"), run / "reconstructions.png")
        save_figure(image_grid_figure([("mean of p(x|z)", means[:16]),
                                       ("sample of p(x|z)", samples[:16])],
                                      f"{self.name}, {s['obs']}: z ~ p(z), "
                                      f"{vae.prior.kind} prior"),
                    run / "generations.png")
        save_figure(training_figure({s["obs"]: history}), run / "training.png")
        floor = getattr(vae.observation, "min_scale", None)
        scales = evaluate.scale_summary(vae, x, batch_size=250, floor=floor)
        if scales is not None:
            sigma_map = scales["sigma_per_dim"]
            data_std = raw.float().div(255).std(dim=0)
            constant = data_std.reshape(-1) == 0
            flat = sigma_map.reshape(-1)
            out["sigma"] = scales["sigma"]
            out["constant_pixels"] = int(constant.sum())
            if constant.any():
                out["sigma_on_constant_pixels"] = float(flat[constant].mean())
            if (~constant).any():
                out["sigma_on_other_pixels"] = float(flat[~constant].mean())
            if floor is not None:  # how many (image, pixel) sigmas sit at the floor
                out["min_scale"] = floor
                out["share_of_sigmas_at_floor"] = scales["share_at_floor"]
            save_figure(sigma_map_figure(sigma_map, data_std, f"{self.name}, {s['obs']}"),
                        run / "sigma.png")
        return out


TASKS: dict[str, Any] = {"manifold2d": PointsTask(),
                         **{name: ImageTask(name) for name in IMAGE_DATASETS},
                         **{name: CountTask(name) for name in COUNT_DATASETS}}
