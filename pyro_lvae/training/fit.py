"""Training: :func:`fit` runs stochastic variational inference on a :class:`~pyro_lvae.VAE`.

The loss is Pyro's: ``Trace_ELBO``'s by default, or the ELBO passed as ``elbo=``, minimised by a
torch optimiser over the VAE's module parameters (the learned sigma included), or by
``pyro.infer.SVI`` when ``optimizer=`` is a ``pyro.optim`` optimiser. beta enters as an input of
:func:`~pyro_lvae.annealed` programs, exact under the JIT ELBOs too. For pyro-lvae's own model
and guide the default loss is computed without Pyro's handler stack
(:func:`~pyro_lvae.objective.direct_elbo_terms`), but only where the first step verifies that it
is ``Trace_ELBO``'s objective for this VAE under the handlers around ``fit`` (same sites, same
loss and gradients on the same draws; :mod:`pyro_lvae.training.step`); otherwise ``fit`` logs
why and trains through Pyro. :attr:`History.objective` says which. The reconstruction and KL
parts come from the step's own traces, so ``loss = reconstruction + beta * kl`` at every step.

The loop keeps the losses on the device and reads them every ``check_every`` steps (one host
synchronisation per check, not per step). At each check it verifies that the losses are
finite: if not, it restores the parameters of the last good check and raises
:class:`~pyro_lvae.errors.TrainingDiverged` with a diagnosis (:mod:`.guard`). Checkpoints
(:mod:`.checkpoint`) hold the model, the optimiser, the history and the random states, so that
``fit(..., resume=True)`` continues a run exactly where it stopped.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.optim
import torch
from tqdm.auto import tqdm

from ..annealing import BetaSchedule as Schedule
from ..annealing import ConstantBeta as Constant
from ..annealing import weight_latents as scale_latents
from ..errors import ConfigError, check_positive_int
from ..objective import scale_stats
from ..vae import COLLAPSE_NATS, VAE
from .averaging import WeightAverage, parse_average
from .batches import data_seed, make_batches
from .checkpoint import (
    BEST_NAME,
    CHECKPOINT_NAME,
    RandomStreams,
    load_checkpoint_info,
    prepare_folder,
    restore_checkpoint,
    save_checkpoint,
)
from .distributed import gather_objects, rank_info, rank_seed, reduce_rows
from .guard import DivergenceGuard
from .heldout import HeldOut
from .history import History, PendingRows
from .step import build_step
from .tools import TrainingTools, check_tools

__all__ = ["fit", "History", "resolve_device", "fused_adam", "load_checkpoint_info",
           "CHECKPOINT_NAME"]

logger = logging.getLogger(__name__)


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


def _make_optimizer(optimizer: Any, vae: VAE, lr: float) -> Any:
    if optimizer is None:
        return torch.optim.Adam(vae.parameters(), lr=lr)
    if isinstance(optimizer, (pyro.optim.PyroOptim, torch.optim.Optimizer)):
        return optimizer
    if callable(optimizer):
        return optimizer(vae.parameters())
    raise ConfigError(
        f"Expected optimizer to be None, a pyro.optim optimiser, a torch optimiser or a "
        f"function params -> torch optimiser but got {optimizer!r}"
    )


def _check_arguments(vae: Any, steps: Any, batch_size: Any, check_every: Any, lr: Any,
                     checkpoint_every: Any, beta: Any, resume: bool, out: Any,
                     on_divergence: Any) -> Schedule | Callable[[int], float]:
    """Refuse bad settings before anything runs; return beta as a schedule."""
    for name, value in (("steps", steps), ("batch_size", batch_size), ("check_every", check_every)):
        check_positive_int(name, value)
    if checkpoint_every is not None and (not isinstance(checkpoint_every, int)
                                         or checkpoint_every < 1):
        raise ConfigError(f"Expected checkpoint_every >= 1 but got {checkpoint_every!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"Expected lr > 0 but got {lr!r}")
    if not isinstance(vae, VAE):
        raise ConfigError(f"Expected a pyro_lvae.VAE but got {type(vae).__name__}")
    if not callable(beta):
        scale_latents(beta)  # validates the number
    if resume and out is None:
        raise ConfigError("resume=True needs out= (the run folder holding checkpoint.pt)")
    if on_divergence not in ("stop", "rollback"):
        raise ConfigError(f"Expected on_divergence to be 'stop' or 'rollback' but got "
                          f"{on_divergence!r}")
    return beta if callable(beta) else Constant(beta)


def _check_combination(optimizer: Any, elbo: Any, on_divergence: str, world: int) -> None:
    svi = isinstance(optimizer, pyro.optim.PyroOptim)
    if svi and on_divergence == "rollback":
        raise ConfigError("on_divergence='rollback' needs a torch optimiser (it lowers the "
                          "learning rate of its parameter groups), not a pyro.optim one")
    if world > 1 and (svi or elbo is not None):
        raise ConfigError("distributed training uses fit's own Trace_ELBO step and a torch "
                          "optimiser; elbo= and pyro.optim optimisers are not supported")


class _Stream:
    """The run's batches as the model sees them (after ``transform``)."""

    def __init__(self, batches: Any, transform: Any, generator: torch.Generator) -> None:
        self.batches, self.transform, self.generator = batches, transform, generator

    def __call__(self) -> torch.Tensor:
        x = self.batches()
        return x if self.transform is None else self.transform(x, self.generator)


def _data_stream(data: Any, vae: VAE, batch_size: int, seed: int | None, device: torch.device,
                 transform: Any, rank: int, world: int) -> tuple[_Stream, RandomStreams]:
    """Seed the model's noise and build the data stream of this rank."""
    if world > 1 and seed is None:
        raise ConfigError("distributed training needs a seed (every rank derives its own)")
    if seed is not None:
        pyro.set_rng_seed(rank_seed(seed, rank))
    generator = torch.Generator()  # samplers and transforms: this rank's own stream
    generator.manual_seed(data_seed(None if seed is None else rank_seed(seed, rank)))
    shuffle = None  # tensor data: shuffled alike on every rank
    if world > 1:
        shuffle = torch.Generator()
        shuffle.manual_seed(data_seed(seed))
    batches = make_batches(data, vae, batch_size, generator, device, transform, shuffle, rank,
                           world)
    return _Stream(batches, transform, generator), RandomStreams(generator, shuffle)


def _start_from_data(vae: VAE, x: torch.Tensor, world: int) -> None:
    """Check the first batch and give the VAE what it measures on data (the observation
    model's data-scaled start, standardising layers) where pending; with several processes,
    every rank measures rank 0's batch."""
    vae.model.check_data(x, finite=True)
    vae.observation.check_support(x)
    if world > 1:
        rank, _ = rank_info()
        x = gather_objects(x.cpu() if rank == 0 else None)[0].to(x.device)
    vae.initialize(x)


def _warn_if_collapsed(vae: VAE, x: torch.Tensor | None) -> None:
    """A WARNING when q(z|x) ends (almost) equal to the prior on the last batch."""
    posterior = getattr(vae.guide, "posterior", None)
    if x is None or posterior is None:
        return
    kl = vae.kl_per_point(x)
    if kl < COLLAPSE_NATS:
        logger.warning(
            "the model ended collapsed: KL(q(z|x) || p(z)) is %.3g nats per point on the last "
            "batch (below %g), so z tells almost nothing about x; start sigma from the data "
            "(init_scale=None, the default, or init_scale=lv.initial_scale(x)) or warm the KL "
            "up (beta=lv.LinearWarmup(...))", kl, COLLAPSE_NATS)


def _sigma_stats(likelihood: Any, observation: Any) -> tuple[torch.Tensor, ...] | None:
    stats = scale_stats(likelihood)
    if stats is None and likelihood is None:  # parts not read: a sigma free of z, if any
        shared = getattr(observation, "shared_scale", None)
        if isinstance(shared, torch.Tensor):
            shared = shared.detach()
            stats = shared.mean(), shared.min(), shared.max()
    return stats


def _make_tools(vae: VAE, opt: Any, steps: int, check_every: int, on_divergence: str,
                clip_grad_norm: Any, lr_schedule: Any, lr_warmup: Any, average: Any,
                heldout: Any, eval_every: Any) -> TrainingTools:
    """The run's optional tools, checked (:mod:`.tools`)."""
    check_tools(opt, clip_grad_norm, lr_schedule, lr_warmup, on_divergence)
    evaluation = None
    if heldout is not None:
        every = 10 * check_every if eval_every is None else eval_every
        check_positive_int("eval_every", every)
        evaluation = HeldOut(heldout, every)
        evaluation.attach(vae)
    elif eval_every is not None:
        raise ConfigError("eval_every needs heldout= (the held-out set to evaluate)")
    return TrainingTools(vae, opt, steps, lr_schedule, lr_warmup, parse_average(average),
                         evaluation)


def _tool_settings(clip_grad_norm: Any, lr_schedule: Any, lr_warmup: int,
                   tools: TrainingTools, eval_every: Any) -> dict[str, Any]:
    """The tools' settings for the checkpoint's record (those that are on)."""
    settings = {"clip_grad_norm": clip_grad_norm,
                "lr_schedule": lr_schedule if lr_schedule is None or isinstance(lr_schedule, str)
                else repr(lr_schedule),
                "lr_warmup": lr_warmup or None,
                "average": None if tools.average is None else tools.average.spec(),
                "eval_every": None if tools.heldout is None else tools.heldout.every}
    return {k: v for k, v in settings.items() if v is not None}


def _finish(history: History, tools: TrainingTools) -> History:
    """The history with the averaged model and the best held-out evaluation attached."""
    history.averaged = tools.averaged
    if tools.heldout is not None:
        history.best = tools.heldout.best()
    return history


class _Loop:
    """The training loop: steps, and at every ``check_every`` steps one read of the pending
    rows, the divergence guard, the history, the held-out evaluation, the callbacks and the
    progress bar."""

    def __init__(self, vae: VAE, stream: _Stream, step: Any, schedule: Any,
                 guard: DivergenceGuard, history: History, pending: PendingRows,
                 check_every: int, callbacks: Sequence[Callable], bar: Any,
                 tools: TrainingTools) -> None:
        self.vae, self.stream, self.step, self.schedule = vae, stream, step, schedule
        self.guard, self.history, self.pending = guard, history, pending
        self.check_every, self.callbacks, self.bar = check_every, callbacks, bar
        self.tools = tools
        self.steps, self.save_best = 0, None

    def run(self, x: torch.Tensor, start: int, steps: int,
            checkpoint: Callable[[int], None] | None, every: int | None,
            save_best: Callable[[int], None] | None = None) -> torch.Tensor:
        """Train from step ``start`` (on the batch ``x`` first) to ``steps``; return the last
        batch. ``save_best`` writes ``best.pt`` when the held-out ELBO improves."""
        self.steps, self.save_best = steps, save_best
        step = start
        while step < steps:
            x = x if x is not None else self.stream()
            beta = self.schedule(step)
            self.vae.observation.set_step(step)
            terms = self.step(x, beta)
            self.tools.after_step(step)
            self.pending.add(terms.loss, terms.reconstruction, terms.kl, x.shape[0], beta,
                             _sigma_stats(terms.likelihood, self.vae.observation),
                             getattr(self.step, "grad_norm", None))
            last, x = x, None
            step += 1
            if step % self.check_every and step != steps and not self.tools.check_due(step):
                continue
            if not self._check(last, step):
                step = self.pending.first
                continue
            if checkpoint is not None and (step == steps or (every and step % every == 0)):
                checkpoint(step)
        return last

    def _check(self, x: torch.Tensor, done: int) -> bool:
        """Read the pending rows (one host synchronisation); record them if they are good."""
        rows = self.pending.read(reduce_rows)
        if not self.guard.check(rows, x, self.pending.first, done):
            self.pending.restart(self.pending.first)
            return False
        rows = self.pending.complete(rows)
        self.history.extend(rows)
        observe = getattr(self.schedule, "observe", None)  # a weight that follows the run (GECO)
        if observe is not None:
            observe(rows)
        self.tools.at_check(done, self.steps, self.history, self.save_best)
        for callback in self.callbacks:
            callback(done, rows, self.vae)
        self.pending.restart(done)
        self.guard.remember()
        self.bar.update(done - self.bar.n)
        self.bar.set_postfix(loss=f"{float(rows['loss'][-1]):.4g}",
                             sigma=f"{float(rows['sigma'][-1]):.4g}", refresh=False)
        return True


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
    clip_grad_norm: float | None = None,
    lr_schedule: str | Callable | torch.optim.lr_scheduler.LRScheduler | None = None,
    lr_warmup: int = 0,
    average: str | WeightAverage | None = None,
    heldout: Any = None,
    eval_every: int | None = None,
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
    :param elbo: ``None`` (``Trace_ELBO``'s loss; computed directly where the first step
        verifies it for this VAE, see :attr:`History.objective`) or a Pyro ELBO instance
        (``TraceMeanField_ELBO``, ``JitTrace_ELBO``, ``RenyiELBO``, ...)
    :param beta: weight of the latent term: a number or a function of the step (a
        :class:`~pyro_lvae.annealing.BetaSchedule`), or :class:`~pyro_lvae.GECO` (a weight that
        follows a reconstruction constraint: fit gives it the rows of every check and, on
        resume, the history)
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
    :param float clip_grad_norm: clip the norm of all gradients together to this value before
        every step (:func:`torch.nn.utils.clip_grad_norm_`; torch optimisers only: a
        ``pyro.optim`` optimiser clips through its own ``clip_args``); the norm before clipping
        is recorded in the history's ``grad_norm`` column
    :param lr_schedule: a learning-rate schedule stepped after every step: a name
        (``"cosine"``, ``"cosine:FINAL"``, ``"step:EVERY[:GAMMA]"``, ``"constant"``), a torch
        scheduler built on ``optimizer``, or a function ``optimizer -> scheduler``
        (:mod:`pyro_lvae.training.schedules`; torch optimisers only)
    :param int lr_warmup: steps of linear learning-rate warm-up before ``lr_schedule``
    :param average: keep averaged weights of every parameter, sigma included: ``"ema"``,
        ``"ema:DECAY[:START[:EVERY]]"``, ``"swa[:START[:EVERY]]"`` or a
        :class:`~pyro_lvae.training.averaging.WeightAverage`; the averaged VAE is
        ``history.averaged`` (an independent copy: ``history.averaged.sample(n)``,
        :func:`pyro_lvae.evaluate.elbo_parts` ``(history.averaged, x)``), and checkpoints hold it
        (:func:`~pyro_lvae.training.load_averaged`)
    :param heldout: a fixed held-out set (tensor or array, as the model sees its data): its
        ELBO is computed every ``eval_every`` steps into the history's ``heldout_elbo`` (and
        ``heldout_elbo_averaged``), and with ``out``, the checkpoint of the best one is kept as
        ``best.pt`` beside ``checkpoint.pt``; ``history.best`` says which step it was
    :param int eval_every: steps between held-out evaluations (default ``10 * check_every``;
        the losses are checked at those steps too); always at the last step too

    Each of the last six is off by default and resumes exactly: the schedule's state, the
    averaged weights and the best held-out ELBO so far are in the checkpoint.

    At the first batch, the VAE takes what it measures on data where pending
    (``vae.initialize(x)``: a learned sigma's data-scaled start, a VampPrior's pseudo-inputs,
    standardising layers; with several processes, from rank 0's batch). At the end, a WARNING
    names the remedies if the model ended collapsed (``KL(q(z|x) || p(z))`` below 0.1 nats per
    point on the last batch).
    """
    schedule = _check_arguments(vae, steps, batch_size, check_every, lr, checkpoint_every, beta,
                                resume, out, on_divergence)
    rank, world = rank_info()
    device = resolve_device(device)
    vae.to(device)
    stream, streams = _data_stream(data, vae, batch_size, seed, device, transform, rank, world)
    opt = _make_optimizer(optimizer, vae, lr)
    _check_combination(opt, elbo, on_divergence, world)
    tools = _make_tools(vae, opt, steps, check_every, on_divergence, clip_grad_norm,
                        lr_schedule, lr_warmup, average, heldout, eval_every)
    path = prepare_folder(out, rank)
    history, start = History(), 0
    if resume and path.exists():
        start, history, tools_state = restore_checkpoint(path, vae, opt, stream.batches,
                                                         streams, device, seed, rank, world)
        tools.load_state_dict(tools_state)
        logger.info("resumed from %s at step %d", path, start)
        restore = getattr(schedule, "restore", None)
        if restore is not None:
            restore(history)
        if start >= steps:
            return _finish(history, tools)
    settings = {"steps": steps, "batch_size": batch_size, "lr": lr,
                "beta": schedule.spec() if isinstance(schedule, Schedule) else repr(schedule),
                **_tool_settings(clip_grad_norm, lr_schedule, lr_warmup, tools, eval_every)}

    def save(target: Path, done: int) -> None:
        save_checkpoint(target, done, vae, opt, history, streams, stream.batches, settings,
                        rank, world, tools.state_dict())

    checkpoint = None if path is None else partial(save, path)
    save_best = None if path is None else partial(save, path.parent / BEST_NAME)
    every = None if checkpoint_every is None else (
        math.ceil(checkpoint_every / check_every) * check_every)
    bar = tqdm(total=steps, initial=start, desc="training", unit="step", dynamic_ncols=True,
               disable=not (sys.stderr.isatty() if progress is None else progress) or rank != 0)
    t0 = time.perf_counter()
    try:
        with pyro.validation_enabled(validate):
            x = stream()  # the first batch as the model sees it
            _start_from_data(vae, x, world)
            tools.start()
            vae.observation.set_step(start)
            step, history.objective = build_step(vae, x, opt, elbo, world, clip_grad_norm)
            logger.info("training objective: %s", history.objective)
            loop = _Loop(vae, stream, step, schedule,
                         DivergenceGuard(vae, opt, on_divergence, max_rollbacks, tools),
                         history, PendingRows(device, start), check_every,
                         callbacks if rank == 0 else (), bar, tools)
            last = loop.run(x, start, steps, checkpoint, every, save_best)
    finally:
        bar.close()
    logger.info("trained %d steps in %.1f s", steps - start, time.perf_counter() - t0)
    if rank == 0:
        _warn_if_collapsed(vae, last)
    return _finish(history, tools)
