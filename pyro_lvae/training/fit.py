"""Training: :func:`fit` runs stochastic variational inference on a :class:`~pyro_lvae.VAE`.

The default step is ``Trace_ELBO``'s loss, minimised by a torch optimiser over the VAE's module
parameters, the learned sigma included. For pyro-lvae's own model and guide it is computed
without Pyro's handler stack (:func:`~pyro_lvae.objective.direct_elbo_terms`: the same random draws,
loss and gradients, pinned by parity tests); for subclasses it goes through Pyro's ``trace`` and
``replay`` (:func:`~pyro_lvae.objective.elbo_terms`). Both yield the reconstruction and KL parts at
no extra cost. Pass ``elbo=`` any Pyro ELBO
(``TraceMeanField_ELBO``, ``RenyiELBO``, ...) to train on it instead, and ``optimizer=`` a
``pyro.optim`` optimiser to go through ``pyro.infer.SVI``.

The loop keeps the losses on the device and reads them every ``check_every`` steps (one host
synchronisation per check, not per step). At each check it verifies that the losses are
finite: if not, it restores the parameters of the last good check and raises
:class:`~pyro_lvae.errors.TrainingDiverged` with a diagnosis. Checkpoints (written atomically,
loadable with ``torch.load(weights_only=True)``) hold the model, the optimiser, the history and
the random states, so that ``fit(..., resume=True)`` continues a run exactly where it stopped.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.optim
import torch
from pyro.infer import SVI
from tqdm.auto import tqdm

from ..annealing import Constant, Schedule, scale_latents
from ..errors import CheckpointError, ConfigError, DataError, TrainingDiverged, check_positive_int
from ..io import atomic_save, safe_load, write_csv
from ..objective import ELBOTerms, direct_elbo_terms, elbo_terms, scale_stats, supports_direct
from ..vae import _CHECKPOINT_FORMAT, VAE
from .distributed import gather_objects, rank_info, rank_seed, reduce_rows

__all__ = ["fit", "History", "resolve_device", "fused_adam", "CHECKPOINT_NAME"]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
_DEVICE_COLUMNS = ("loss", "reconstruction", "kl", "sigma", "sigma_min", "sigma_max")


class History:
    """Per-step training record. Losses are per data point, in nats.

    Columns: ``step``, ``loss`` (= ``reconstruction + beta * kl``), ``reconstruction``
    (``-log p(x|z)``), ``kl`` (``log q(z|x) - log p(z)``, the one-draw estimate), ``beta``, and
    the observation scale's ``sigma`` (mean over batch and dimensions), ``sigma_min`` and
    ``sigma_max`` (NaN for observation models without a scale).
    """

    COLUMNS = ("step", "loss", "reconstruction", "kl", "beta", "sigma", "sigma_min", "sigma_max")

    def __init__(self) -> None:
        # one growable buffer per column (capacity doubles): 64 bytes a step, a few objects
        self._buffers = {c: np.zeros(0, dtype=np.int64 if c == "step" else np.float64)
                         for c in self.COLUMNS}
        self._length = 0

    def extend(self, columns: dict[str, Any]) -> None:
        """Append rows given as one array (or list) per column."""
        values = {c: np.asarray(columns[c]).reshape(-1) for c in columns}
        lengths = {len(v) for v in values.values()}
        if len(lengths) != 1 or set(values) != set(self.COLUMNS):
            raise ValueError("History.extend needs every column, all of the same length")
        n = lengths.pop()
        end = self._length + n
        if end > len(self._buffers["step"]):
            capacity = max(end, 2 * len(self._buffers["step"]), 1024)
            for c, buf in self._buffers.items():
                grown = np.zeros(capacity, dtype=buf.dtype)
                grown[: self._length] = buf[: self._length]
                self._buffers[c] = grown
        for c in self.COLUMNS:
            self._buffers[c][self._length: end] = values[c]
        self._length = end

    def __getitem__(self, column: str) -> np.ndarray:
        if column not in self._buffers:
            raise KeyError(f"no column {column!r}; columns are {', '.join(self.COLUMNS)}")
        return self._buffers[column][: self._length].copy()

    def __len__(self) -> int:
        return self._length

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {c: torch.from_numpy(self[c]) for c in self.COLUMNS}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> History:
        h = cls()
        h.extend({c: np.asarray(state[c]) for c in cls.COLUMNS})
        return h

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write the history as CSV (atomically)."""
        columns = {c: self[c].tolist() for c in self.COLUMNS}
        write_csv([dict(zip(self.COLUMNS, row, strict=True))
                   for row in zip(*columns.values(), strict=True)], path)

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> History:
        try:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
        except OSError as e:
            raise CheckpointError(f"cannot read history {path}: {e.strerror or e}") from None
        if not rows or not set(cls.COLUMNS) <= set(rows[0]):
            raise CheckpointError(
                f"{path} is not a pyro-lvae history (expected columns {', '.join(cls.COLUMNS)})"
            )
        h = cls()
        try:
            h.extend({c: [float(r[c]) for r in rows] for c in cls.COLUMNS})
        except (TypeError, ValueError):
            raise CheckpointError(f"{path} has a missing or non-numeric value in a pyro-lvae "
                                  f"history column") from None
        return h

    def __repr__(self) -> str:
        if not len(self):
            return "History(empty)"
        return (f"History(steps={len(self)}, loss={self['loss'][-1]:.4g}, "
                f"sigma={self['sigma'][-1]:.4g})")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/``None`` -> CUDA when available, else CPU; checks that CUDA exists if asked."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for but CUDA is not available; use --device cpu")
    return device


class _TensorBatches:
    """Minibatches of a fixed data set: shuffled epochs, resumable. With several ranks, every
    rank shuffles alike (``generator`` seeded alike) and takes its own slice of each global
    batch of ``world * batch_size`` rows."""

    def __init__(self, data: torch.Tensor, batch_size: int, generator: torch.Generator,
                 rank: int = 0, world: int = 1) -> None:
        if world * batch_size > data.shape[0] and world > 1:
            raise DataError(f"{world} processes x batch size {batch_size} is more than the "
                            f"{data.shape[0]} rows of data; lower the batch size")
        self.data = data
        self.batch_size = min(batch_size, data.shape[0])
        self.generator = generator
        self.rank, self.world = rank, world
        self.perm = torch.zeros(0, dtype=torch.long)
        self.pos = 0

    def __call__(self) -> torch.Tensor:
        step = self.world * self.batch_size
        if self.pos + step > self.perm.numel():
            self.perm = torch.randperm(self.data.shape[0], generator=self.generator)
            self.pos = 0
        start = self.pos + self.rank * self.batch_size
        idx = self.perm[start: start + self.batch_size]
        self.pos += step
        return self.data[idx.to(self.data.device)]

    def state_dict(self) -> dict[str, Any]:
        return {"perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.perm, self.pos = state["perm"], int(state["pos"])


class _SamplerBatches:
    """Fresh data from a sampler ``f(batch_size, generator=...)`` at every step."""

    def __init__(self, sampler: Callable, batch_size: int, generator: torch.Generator,
                 device: torch.device, dtype: torch.dtype) -> None:
        self.sampler, self.batch_size, self.generator = sampler, batch_size, generator
        self.device, self.dtype = device, dtype

    def __call__(self) -> torch.Tensor:
        x = self.sampler(self.batch_size, generator=self.generator)
        return torch.as_tensor(x).to(device=self.device, dtype=self.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class _LoaderBatches:
    """Batches from an iterable (a DataLoader): restarted when exhausted; ``(x, y)`` -> ``x``."""

    def __init__(self, loader: Iterable, device: torch.device) -> None:
        self.loader, self.device = loader, device
        self.epoch = 0
        self.it = iter(loader)

    def __call__(self) -> torch.Tensor:
        try:
            batch = next(self.it)
        except StopIteration:
            self.epoch += 1
            sampler = getattr(self.loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):  # a DistributedSampler reshuffles per epoch
                sampler.set_epoch(self.epoch)
            self.it = iter(self.loader)
            try:
                batch = next(self.it)
            except StopIteration:
                raise DataError("the data loader yields no batches") from None
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        if not isinstance(batch, torch.Tensor):
            raise DataError(f"the data loader yielded a {type(batch).__name__}; expected tensors "
                            f"(or (x, y) tuples of tensors)")
        return batch.to(self.device, non_blocking=True)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _make_batches(data, vae: VAE, batch_size: int, generator, device, transform=None,
                  shuffle_generator=None, rank: int = 0, world: int = 1):
    dtype = vae.model.prior_loc.dtype
    if isinstance(data, np.ndarray):
        if not np.issubdtype(data.dtype, np.floating):
            raise DataError(
                f"Expected floating-point data but got a numpy array of {data.dtype}; convert "
                f"it with data.astype('float32')"
            )
        data = torch.as_tensor(data, dtype=dtype)
    if isinstance(data, torch.Tensor):
        shuffle = shuffle_generator or generator
        if transform is not None:  # raw data (uint8 images): the transformed batches are checked
            return _TensorBatches(data.to(device), batch_size, shuffle, rank, world)
        if data.is_floating_point():  # float64 tables train a float32 model without fuss
            data = data.to(device=device, dtype=dtype)
        vae.model.check_data(data, finite=True)
        vae.observation.check_support(data)
        return _TensorBatches(data, batch_size, shuffle, rank, world)
    if isinstance(data, (str, bytes, os.PathLike)):
        raise DataError(
            f"Expected data, not the file name {str(data)!r}: load it first (for instance "
            f"torch.load, numpy.load or numpy.loadtxt) and pass the array"
        )
    if callable(data):
        return _SamplerBatches(data, batch_size, generator, device, dtype)
    if isinstance(data, Iterable):
        if world > 1 and not hasattr(getattr(data, "sampler", None), "set_epoch"):
            raise ConfigError("with several processes a DataLoader needs a DistributedSampler "
                              "(each rank must draw different batches)")
        return _LoaderBatches(data, device)
    raise DataError(
        f"Expected data to be a tensor, a numpy array, a sampler f(n, generator=...) or an "
        f"iterable of batches but got {type(data).__name__}"
    )


def fused_adam(lr: float = 1e-3) -> Callable[[Any], torch.optim.Optimizer]:
    """An ``optimizer`` for :func:`fit`: torch's Adam with its fused kernel (one pass over all
    parameters; about 1.3x faster steps for a residual MLP 4x200 on one CPU thread), the plain
    Adam where this torch has no fused kernel for the parameters' device. Same algorithm and
    hyper-parameters; results differ from the plain Adam only in rounding."""

    def make(params) -> torch.optim.Optimizer:
        params = list(params)
        try:
            return torch.optim.Adam(params, lr=lr, fused=True)
        except RuntimeError:
            return torch.optim.Adam(params, lr=lr)

    return make


def _make_optimizer(optimizer, vae: VAE, lr: float):
    if optimizer is None:
        return torch.optim.Adam(vae.parameters(), lr=lr)
    if isinstance(optimizer, pyro.optim.PyroOptim):
        return optimizer
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if callable(optimizer):
        return optimizer(vae.parameters())
    raise ConfigError(
        f"Expected optimizer to be None, a pyro.optim optimiser, a torch optimiser or a "
        f"function params -> torch optimiser but got {optimizer!r}"
    )


def _data_seed(seed: int | None) -> int:
    """The data stream's seed, derived from ``seed`` but never equal to it: with one seed for
    both, torch's global generator (the model's noise) and the data generator produce the same
    numbers in lockstep, and a model can read its data off its own noise."""
    if seed is None:
        return int(torch.randint(2**62, ()).item())
    return int(np.random.SeedSequence([seed, 0x5EED]).generate_state(1, np.uint64)[0] >> 1)


def _rng_state(generator: torch.Generator,
               shuffle_generator: torch.Generator | None = None) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "data": generator.get_state()}
    if shuffle_generator is not None:
        state["shuffle"] = shuffle_generator.get_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator,
                   shuffle_generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["data"])
    if shuffle_generator is not None and "shuffle" in state:
        shuffle_generator.set_state(state["shuffle"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _LossModule(torch.nn.Module):
    """The VAE's ELBO terms as a module (so that ``DistributedDataParallel`` can wrap it):
    computed directly for pyro-lvae's own model and guide, through Pyro's handlers otherwise."""

    def __init__(self, vae: VAE) -> None:
        super().__init__()
        self.vae = vae
        self.direct = supports_direct(vae)

    def forward(self, x: torch.Tensor, beta: float) -> ELBOTerms:
        if self.direct:
            return direct_elbo_terms(self.vae, x, beta=beta)
        return elbo_terms(self.vae.model, self.vae.guide, x, beta=beta)


def _diagnose(vae: VAE, x: torch.Tensor, step: int, history_chunk: dict[str, torch.Tensor]) -> str:
    with torch.no_grad():
        sigma = history_chunk["sigma"]
        finite_sigma = sigma[torch.isfinite(sigma)]
        try:
            _, q_scale = vae.guide.posterior(x)
            enc = f"encoder scale in [{q_scale.min():.3g}, {q_scale.max():.3g}]"
        except Exception:  # the diagnosis must not hide the divergence itself
            enc = "encoder scale unavailable"
    last_sigma = f"{float(finite_sigma[-1]):.4g}" if finite_sigma.numel() else "nan"
    return (
        f"training diverged at step {step}: the loss or the parameters became NaN or infinite "
        f"(last finite sigma "
        f"{last_sigma}; {enc}; data range [{x.min():.3g}, {x.max():.3g}]). The parameters were "
        f"restored to the last good check; lower the learning rate, raise min_scale, or "
        f"rescale the data"
    )


def fit(
    vae: VAE,
    data: Any,
    *,
    steps: int,
    batch_size: int = 100,
    lr: float = 1e-3,
    optimizer: Any = None,
    elbo: Any = None,
    beta: float | Schedule | Callable[[int], float] = 1.0,
    device: str | torch.device | None = "auto",
    seed: int | None = None,
    progress: bool | None = None,
    out: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    check_every: int = 100,
    validate: bool = False,
    on_divergence: str = "stop",
    max_rollbacks: int = 3,
    transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    callbacks: Sequence[Callable[[int, dict[str, np.ndarray], VAE], None]] = (),
) -> History:
    """Train ``vae`` by stochastic variational inference; return the per-step :class:`History`.

    :param VAE vae: the model, trained in place (and moved to ``device``)
    :param data: a tensor or numpy array ``(N, ...)`` (shuffled minibatches), a sampler
        ``f(batch_size, generator=...)`` drawing fresh data at every step (such as
        :func:`pyro_lvae.datasets.manifold2d`), or an iterable of batches (a ``DataLoader``)
    :param int steps: total number of optimisation steps (counting resumed ones)
    :param int batch_size: points per step (tensor data and samplers)
    :param float lr: learning rate of the default Adam optimiser
    :param optimizer: ``None`` (torch Adam), a torch optimiser, a function
        ``params -> torch optimiser``, or a ``pyro.optim`` optimiser (then ``SVI`` is used)
    :param elbo: ``None`` (Trace_ELBO's loss) or a Pyro ELBO instance
    :param beta: weight of the latent term: a number or a function of the step (a
        :class:`~pyro_lvae.annealing.Schedule`)
    :param device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ...
    :param int seed: seeds Pyro, torch and the data stream at the start of training; ``None``
        leaves them as they are. The initial weights are drawn when the VAE is built: call
        ``pyro.set_rng_seed(seed)`` before building it to fix them too
    :param bool progress: show a progress bar (default: when stderr is a terminal)
    :param out: folder for ``checkpoint.pt``; ``None`` writes nothing
    :param int checkpoint_every: steps between checkpoints (rounded up to a multiple of
        ``check_every``; default: only at the end)
    :param bool resume: continue from ``out/checkpoint.pt`` if it exists
    :param int check_every: steps between reads of the losses (finiteness check, progress)
    :param bool validate: keep Pyro's distribution validation on during training (slower)
    :param str on_divergence: ``"stop"`` raises :class:`~pyro_lvae.errors.TrainingDiverged`
        when the loss or the parameters become NaN/Inf; ``"rollback"`` restores the last good
        check (parameters and optimiser state), halves the learning rate and goes on, up to
        ``max_rollbacks`` times (torch optimisers only)
    :param int max_rollbacks: rollbacks allowed before giving up with ``TrainingDiverged``
    :param transform: applied to every batch on the device before the step, with the data
        stream's generator: dequantisation or binarisation of images kept as ``uint8`` (see
        :mod:`pyro_lvae.datasets`)
    :param callbacks: functions ``f(step, rows, vae)`` called at every check with the rows of
        history recorded since the last one (numpy arrays per column), for logging
    """
    for name, value in (("steps", steps), ("batch_size", batch_size), ("check_every", check_every)):
        check_positive_int(name, value)
    if checkpoint_every is not None and (not isinstance(checkpoint_every, int)
                                         or checkpoint_every < 1):
        raise ConfigError(f"Expected checkpoint_every >= 1 but got {checkpoint_every!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"Expected lr > 0 but got {lr!r}")
    if not isinstance(vae, VAE):
        raise ConfigError(f"Expected a pyro_lvae.VAE but got {type(vae).__name__}")
    schedule = beta if callable(beta) else Constant(beta)
    if not callable(beta):
        scale_latents(beta)  # validates the number
    if resume and out is None:
        raise ConfigError("resume=True needs out= (the run folder holding checkpoint.pt)")
    if on_divergence not in ("stop", "rollback"):
        raise ConfigError(f"Expected on_divergence to be 'stop' or 'rollback' but got "
                          f"{on_divergence!r}")

    rank, world = rank_info()
    device = resolve_device(device)
    vae.to(device)
    if world > 1 and seed is None:
        raise ConfigError("distributed training needs a seed (every rank derives its own)")
    if seed is not None:
        pyro.set_rng_seed(rank_seed(seed, rank))
    generator = torch.Generator()  # samplers and transforms: this rank's own stream
    generator.manual_seed(_data_seed(None if seed is None else rank_seed(seed, rank)))
    shuffle_generator = None  # tensor data: shuffled alike on every rank
    if world > 1:
        shuffle_generator = torch.Generator()
        shuffle_generator.manual_seed(_data_seed(seed))
    batches = _make_batches(data, vae, batch_size, generator, device, transform,
                            shuffle_generator, rank, world)
    opt = _make_optimizer(optimizer, vae, lr)
    svi = None
    if isinstance(opt, pyro.optim.PyroOptim) and on_divergence == "rollback":
        raise ConfigError("on_divergence='rollback' needs a torch optimiser (it lowers the "
                          "learning rate of its parameter groups), not a pyro.optim one")
    if isinstance(opt, pyro.optim.PyroOptim):
        loss = elbo if elbo is not None else pyro.infer.Trace_ELBO()
        svi = SVI(vae.model, vae.guide, opt, loss=loss)

    # fit's own step: Trace_ELBO's loss (without Pyro's handler stack for pyro-lvae's model and
    # guide: same numbers) and a torch optimiser; with several processes, through DDP
    loss_module = None
    if svi is None and elbo is None:
        loss_module = _LossModule(vae)
        if world > 1:
            loss_module = torch.nn.parallel.DistributedDataParallel(
                loss_module, device_ids=[device.index] if device.type == "cuda" else None)
    elif world > 1:
        raise ConfigError("distributed training uses fit's own ELBO step and a torch "
                          "optimiser; elbo= and pyro.optim optimisers are not supported")
    history = History()
    start = 0
    out_dir = Path(out) if out is not None else None
    if out_dir is not None and rank == 0:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CheckpointError(f"cannot create output folder {out_dir}: {e.strerror}") from None
    ckpt_path = out_dir / CHECKPOINT_NAME if out_dir is not None else None
    if ckpt_path is not None and rank == 0:  # temporary files of a write that was killed
        for stale in out_dir.glob(f".{CHECKPOINT_NAME}.*.tmp"):
            stale.unlink(missing_ok=True)
    if resume and ckpt_path.exists():
        start, history = _restore(ckpt_path, vae, opt, batches, generator, device,
                                  shuffle_generator, seed, rank, world)
        logger.info("resumed from %s at step %d", ckpt_path, start)
        if start >= steps:
            return history

    def save_checkpoint(step: int) -> None:
        states = gather_objects(_rng_state(generator, shuffle_generator))  # every rank calls
        if rank != 0:
            return
        rng = states[0] if world == 1 else states
        blob = {
            "format": _CHECKPOINT_FORMAT,
            "version": 1,
            "step": step,
            "model": vae.to_file_dict(),
            "optimizer": opt.get_state() if svi is not None else opt.state_dict(),
            "history": history.state_dict(),
            "rng": rng,
            "batches": batches.state_dict(),
            "fit": json.dumps({"steps": steps, "batch_size": batch_size, "lr": lr,
                               "beta": schedule.spec() if isinstance(schedule, Schedule)
                               else repr(schedule)}),
        }
        atomic_save(blob, ckpt_path)

    every = None
    if checkpoint_every is not None:
        every = math.ceil(checkpoint_every / check_every) * check_every
    if progress is None:
        progress = sys.stderr.isatty()
    bar = tqdm(total=steps, initial=start, disable=not progress or rank != 0, desc="training",
               unit="step", dynamic_ncols=True)
    snapshot = _snapshot(vae, opt, svi)
    rollbacks = 0
    # per-step values stay on the device until a check point reads them all at once
    chunk: dict[str, list[torch.Tensor]] = {c: [] for c in _DEVICE_COLUMNS}
    betas: list[float] = []
    chunk_start = start
    nan = torch.tensor(float("nan"), device=device)
    t0 = time.perf_counter()
    x = None
    try:
        with pyro.validation_enabled(validate):
            step = start
            while step < steps:
                x = batches()
                if transform is not None:
                    x = transform(x, generator)
                if step == start:  # every kind of data: the first batch as the model sees it
                    vae.model.check_data(x, finite=True)
                    vae.observation.check_support(x)
                b = schedule(step)
                vae.observation.set_step(step)
                n = x.shape[0]
                if loss_module is not None:
                    terms = loss_module(x, b)
                    opt.zero_grad(set_to_none=True)
                    terms.loss.backward()
                    opt.step()
                    loss = terms.loss.detach()
                else:
                    if svi is not None:
                        with scale_latents(b):
                            loss = torch.as_tensor(svi.step(x), device=device)
                    else:
                        with scale_latents(b):
                            loss_t = elbo.differentiable_loss(vae.model, vae.guide, x)
                        opt.zero_grad(set_to_none=True)
                        loss_t.backward()
                        opt.step()
                        loss = loss_t.detach()
                    with torch.no_grad():
                        terms = elbo_terms(vae.model, vae.guide, x, beta=b)
                stats = scale_stats(terms.likelihood)
                chunk["loss"].append(loss / n)
                chunk["reconstruction"].append(terms.reconstruction.detach() / n)
                chunk["kl"].append(terms.kl.detach() / n)
                betas.append(float(b))
                if stats is None:
                    stats = (nan, nan, nan)
                for key, value in zip(("sigma", "sigma_min", "sigma_max"), stats, strict=True):
                    chunk[key].append(value)
                done = step = step + 1
                if done % check_every and done != steps:
                    continue
                # ---- check point: one host synchronisation ----
                rows = reduce_rows({k: torch.stack(vals) for k, vals in chunk.items()})
                rows = {k: v.to("cpu", torch.float64) for k, v in rows.items()}
                finite = torch.isfinite(rows["loss"])
                params_finite = bool(torch.stack(
                    [torch.isfinite(p).all() for p in vae.parameters()]).all())
                if not (bool(finite.all()) and params_finite):
                    bad = chunk_start + int((~finite).nonzero()[0]) if not finite.all() else done
                    _restore_snapshot(snapshot, vae, opt, svi)
                    message = _diagnose(vae, x, bad, rows)
                    if on_divergence == "stop" or rollbacks >= max_rollbacks:
                        raise TrainingDiverged(message + (
                            f" (after {rollbacks} rollback(s))" if rollbacks else ""))
                    rollbacks += 1
                    for group in opt.param_groups:
                        group["lr"] *= 0.5
                    logger.warning("%s; rolled back to step %d with learning rate %.3g",
                                   message.split(":")[0], chunk_start,
                                   opt.param_groups[0]["lr"])
                    chunk = {c: [] for c in chunk}
                    betas = []
                    step = chunk_start
                    continue
                rows["beta"] = torch.tensor(betas, dtype=torch.float64)
                rows["step"] = torch.arange(chunk_start, done)
                rows = {k: v.numpy() for k, v in rows.items()}
                history.extend(rows)
                for callback in callbacks if rank == 0 else ():
                    callback(done, rows, vae)
                chunk = {c: [] for c in chunk}
                betas = []
                chunk_start = done
                snapshot = _snapshot(vae, opt, svi)
                bar.update(done - bar.n)
                bar.set_postfix(loss=f"{float(rows['loss'][-1]):.4g}",
                                sigma=f"{float(rows['sigma'][-1]):.4g}", refresh=False)
                if ckpt_path is not None and (done == steps or (every and done % every == 0)):
                    save_checkpoint(done)
    finally:
        bar.close()
    logger.info("trained %d steps in %.1f s", steps - start, time.perf_counter() - t0)
    return history


def _snapshot(vae: VAE, opt, svi) -> dict[str, Any]:
    """An in-memory copy of the parameters (and the torch optimiser's state) at a good check."""
    state = {"model": {k: v.detach().clone() for k, v in vae.state_dict().items()}}
    if svi is None:
        state["optimizer"] = copy.deepcopy(opt.state_dict())
    return state


def _restore_snapshot(snapshot: dict[str, Any], vae: VAE, opt, svi) -> None:
    vae.load_state_dict(snapshot["model"])
    if svi is None:
        lrs = [g["lr"] for g in opt.param_groups]
        opt.load_state_dict(snapshot["optimizer"])
        for group, lr in zip(opt.param_groups, lrs, strict=True):  # keep lowered rates
            group["lr"] = lr


def _restore(path: Path, vae: VAE, opt, batches, generator, device, shuffle_generator=None,
             seed: int | None = None, rank: int = 0, world: int = 1) -> tuple[int, History]:
    blob = safe_load(path, map_location=device)
    if not isinstance(blob, dict) or blob.get("format") != _CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a pyro-lvae training checkpoint")
    vae.load_state(path)
    if isinstance(opt, pyro.optim.PyroOptim):
        opt.set_state(blob["optimizer"])
    else:
        try:
            opt.load_state_dict(blob["optimizer"])
        except (ValueError, KeyError) as e:
            raise CheckpointError(
                f"{path}: the optimiser state does not fit this model ({e})"
            ) from None
    batches.load_state_dict(blob["batches"])
    step = int(blob["step"])
    states = blob["rng"] if isinstance(blob["rng"], list) else [blob["rng"]]
    if len(states) == world:  # the same number of processes: continue exactly
        _set_rng_state(states[rank], generator, shuffle_generator)
    else:  # another number of processes: each rank reseeded from the seed, step and rank
        base = rank_seed((seed or 0) + step, rank)
        pyro.set_rng_seed(base)
        generator.manual_seed(_data_seed(base))
        if shuffle_generator is not None:
            shuffle_generator.manual_seed(_data_seed((seed or 0) + step))
        logger.warning("resumed on %d process(es) from a checkpoint of %d: training continues "
                       "from step %d with fresh random streams", world, len(states), step)
    return step, History.from_state_dict(blob["history"])


def load_checkpoint_info(path: str | os.PathLike) -> dict[str, Any]:
    """The step and training settings stored in a checkpoint."""
    blob = safe_load(path, map_location="cpu")
    if not isinstance(blob, dict) or blob.get("format") != _CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a pyro-lvae training checkpoint")
    return {"step": int(blob["step"]), **json.loads(blob["fit"])}
