"""Training: :func:`fit` runs stochastic variational inference on a :class:`~pyro_lvae.VAE`.

The loss is a Pyro ELBO's: :class:`~pyro_lvae.DirectELBO` by default (``Trace_ELBO``'s
objective for pyro-lvae's own model and guide, without Pyro's tracing; where it does not apply,
``Trace_ELBO`` with a WARNING that says why), or the ELBO passed as ``elbo=``, minimised by a
torch optimiser over the VAE's module parameters (the learned sigma included), or by
``pyro.infer.SVI`` when ``optimizer=`` is a ``pyro.optim`` optimiser. beta enters as an input of
:func:`~pyro_lvae.annealed` programs, exact under the JIT ELBOs too. :attr:`History.objective`
says which loss trained the run; ``loss = reconstruction + beta * kl`` at every step.

Everything optional is a training tool in ``tools=[...]`` (:mod:`.tools`): the checks and the
divergence guard, checkpoints, the progress bar, callbacks, gradient clipping, learning-rate
schedules, averaged weights, the held-out evaluation with its best checkpoint; each keeps its
own state in the checkpoint. The loop keeps the losses on the device and reads them at each
check (one host synchronisation per check, not per step); if they are not finite it restores
the parameters of the last good check and raises :class:`~pyro_lvae.errors.TrainingDiverged`
with a diagnosis, or rolls back (:mod:`.guard`). Checkpoints (:mod:`.checkpoint`) hold the
model, the optimiser, the history, the random states and the tools' states, so that
``fit(..., resume=True)`` continues a run exactly where it stopped.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyro
import pyro.optim
import torch

from ..annealing import BetaSchedule, ConstantBeta, weight_latents
from ..direct_elbo import DirectELBO
from ..errors import ConfigError, check_int, check_positive, check_positive_int
from ..objective import scale_stats
from ..vae import COLLAPSE_NATS, VAE, collapse_remedy
from .averaging import AveragedWeights
from .batches import data_seed, make_batches
from .checkpoint import (
    CHECKPOINT_NAME,
    RandomStreams,
    load_checkpoint_info,
    prepare_folder,
    restore_checkpoint,
    save_checkpoint,
)
from .distributed import gather_objects, rank_info, rank_seed, reduce_rows
from .guard import DivergenceGuard
from .heldout import HeldOutEvaluation
from .history import History, PendingRows
from .shorthands import tools_from_shorthands
from .step import build_step
from .tools import (
    Checkpoints,
    Checks,
    ProgressBar,
    Run,
    Tool,
    check_tools,
)

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
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device {device} was asked for but this machine has "
                          f"{torch.cuda.device_count()} GPU(s); use cuda:0 .. "
                          f"cuda:{torch.cuda.device_count() - 1}")
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


def _check_arguments(vae: Any, steps: Any, batch_size: Any, lr: Any, beta: Any, resume: bool,
                     out: Any) -> BetaSchedule | Callable[[int], float]:
    """Refuse bad settings before anything runs; return beta as a schedule."""
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        check_positive_int(name, value)
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"Expected lr > 0 but got {lr!r}")
    if not isinstance(vae, VAE):
        raise ConfigError(f"Expected a pyro_lvae.VAE but got {type(vae).__name__}")
    if not callable(beta):
        weight_latents(beta)  # validates the number
    if resume and out is None:
        raise ConfigError("resume=True needs out= (the run folder holding checkpoint.pt)")
    return beta if callable(beta) else ConstantBeta(beta)


def _check_combination(optimizer: Any, elbo: Any, world: int) -> None:
    svi = isinstance(optimizer, pyro.optim.PyroOptim)
    if world > 1 and (svi or (elbo is not None and not isinstance(elbo, DirectELBO))):
        raise ConfigError("distributed training uses fit's own DirectELBO step and a torch "
                          "optimiser; other elbo= and pyro.optim optimisers are not supported")


def _run_tools(tools: Any, options: dict[str, Any], schedule: Any, out: Any) -> list[Tool]:
    """The run's tools: the given ones and the shorthands', with the defaults (a
    :class:`Checks`, a :class:`ProgressBar`) where none is given, and a tool that gives a
    weight following the run (GECO) its rows; in the order of their checks."""
    tools = check_tools(check_tools(tools) + tools_from_shorthands(options))
    if not any(isinstance(t, Checks) for t in tools):
        tools.append(Checks())
    if not any(isinstance(t, ProgressBar) for t in tools):
        tools.append(ProgressBar())
    if getattr(schedule, "observe", None) is not None:
        tools.append(_FollowedWeight(schedule))
    if out is None and any(isinstance(t, Checkpoints) for t in tools):
        raise ConfigError("Checkpoints (checkpoint_every) needs out= (the run folder)")
    return sorted(tools, key=lambda t: t.order)


class _FollowedWeight(Tool):
    """Gives a weight that follows the run (:class:`~pyro_lvae.GECO`) the rows of every
    check, before the other tools see them."""

    order = 0

    def __init__(self, schedule: Any) -> None:
        self.schedule = schedule

    def setup(self, run: Run) -> None:
        patience = getattr(self.schedule, "patience", None)
        if patience is not None and patience < run.check_every:
            # fit feeds it at every check: it may go a whole check without news
            self.schedule.patience = run.check_every

    def on_check(self, run: Run, done: int, rows: dict[str, np.ndarray]) -> None:
        self.schedule.observe(rows)


def _load_tool_states(tools: Sequence[Tool], state: dict[str, Any]) -> None:
    """Continue each stateful tool from a checkpoint's state; a tool the checkpoint lacks
    starts afresh (with a WARNING: the run is then not the uninterrupted one), and the state
    of a tool this run does not use is dropped (likewise)."""
    keys = {t.state_key: t for t in tools if t.state_key is not None}
    for key, tool in keys.items():
        if key in state:
            tool.load_state_dict(state[key])
        else:
            logger.warning("the checkpoint holds no %s state (it was written without it): "
                           "it starts afresh at the resumed step", key)
    for key in state:
        if key not in keys:
            logger.warning("the checkpoint holds %s state that this run does not use: it "
                           "is dropped", key)


def _tool_states(tools: Sequence[Tool]) -> dict[str, Any]:
    states = {t.state_key: t.state_dict() for t in tools if t.state_key is not None}
    return {k: v for k, v in states.items() if v is not None}


class _Snapshots:
    """The tools' in-memory state, for the divergence guard."""

    def __init__(self, tools: Sequence[Tool]) -> None:
        self.tools = tools

    def snapshot(self) -> list[Any]:
        return [t.snapshot() for t in self.tools]

    def restore(self, snapshots: list[Any]) -> None:
        for tool, snapshot in zip(self.tools, snapshots, strict=True):
            tool.restore(snapshot)


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
            "batch (below %g), so z tells almost nothing about x. %s", kl, COLLAPSE_NATS,
            collapse_remedy(vae.observation))


def _warn_if_warmup_unfinished(schedule: Any, steps: int) -> None:
    """A WARNING when a beta schedule has not reached its end by the run's last step
    (:meth:`~pyro_lvae.BetaSchedule.unfinished`): the model would silently end trained at a
    lower beta than the one it warms up to."""
    unfinished = getattr(schedule, "unfinished", None)
    message = unfinished(steps) if callable(unfinished) else None
    if message:
        logger.warning("%s", message)


def _sigma_stats(likelihood: Any, observation: Any) -> tuple[torch.Tensor, ...] | None:
    stats = scale_stats(likelihood)
    if stats is None and likelihood is None:  # parts not read: a sigma free of z, if any
        shared = getattr(observation, "shared_scale", None)
        if isinstance(shared, torch.Tensor):
            shared = shared.detach()
            stats = shared.mean(), shared.min(), shared.max()
    return stats


def _finish(history: History, run: Run) -> History:
    """The history with the averaged model and the best held-out evaluation attached."""
    averaging = run.find(AveragedWeights)
    history.averaged = None if averaging is None else averaging.averaged
    heldout = run.find(HeldOutEvaluation)
    if heldout is not None:
        history.best = heldout.best()
    return history


class _Loop:
    """The training loop: steps, and at every check one read of the pending rows, the
    divergence guard, the history and the tools' checks."""

    def __init__(self, run: Run, stream: _Stream, step: Any, schedule: Any,
                 guard: DivergenceGuard, pending: PendingRows, every: int) -> None:
        self.run, self.stream, self.step, self.schedule = run, stream, step, schedule
        self.guard, self.pending, self.every = guard, pending, every
        self.tools = run.tools

    def train(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Train from step ``start`` (on the batch ``x`` first) to the run's end; return the
        last batch."""
        run, steps = self.run, self.run.steps
        step = start
        while step < steps:
            x = x if x is not None else self.stream()
            beta = self.schedule(step)
            run.vae.observation.set_step(step)
            terms = self.step(x, beta)
            for tool in self.tools:
                tool.on_step_end(run, step)
            self.pending.add(terms.loss, terms.reconstruction, terms.kl, x.shape[0], beta,
                             _sigma_stats(terms.likelihood, run.vae.observation),
                             run.grad_norm)
            last, x = x, None
            step += 1
            if (step % self.every and step != steps
                    and not any(t.check_due(step) for t in self.tools)):
                continue
            if not self._check(last, step):
                step = self.pending.first
                continue
            if step == steps:
                run.save(CHECKPOINT_NAME, step)
        return last

    def _check(self, x: torch.Tensor, done: int) -> bool:
        """Read the pending rows (one host synchronisation); record them if they are good."""
        rows = self.pending.read(reduce_rows)
        if not self.guard.check(rows, x, self.pending.first, done):
            self.pending.restart(self.pending.first)
            return False
        rows = self.pending.complete(rows)
        self.run.history.extend(rows)
        for tool in self.tools:
            tool.on_check(self.run, done, rows)
        self.pending.restart(done)
        self.guard.remember()
        return True


def _after_backward(run: Run) -> Callable[[], None] | None:
    """The tools' hook between the backward pass and the update, if any tool has one."""
    hooked = [t for t in run.tools if type(t).after_backward is not Tool.after_backward]
    if not hooked:
        return None

    def hook() -> None:
        for tool in hooked:
            tool.after_backward(run)

    return hook


def fit(
    vae: VAE,
    data: Any,
    *,
    steps: int,
    batch_size: int = 100,
    lr: float = 1e-3,
    optimizer: Any = None,
    elbo: Any = None,
    beta: float | BetaSchedule | Callable[[int], float] = 1.0,
    transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    tools: Sequence[Tool] = (),
    device: str | torch.device | None = "auto",
    seed: int | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    **shorthands: Any,
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
    :param elbo: ``None`` (:class:`~pyro_lvae.DirectELBO`, or ``Trace_ELBO`` with a WARNING
        where it does not apply; :attr:`History.objective` says which) or a Pyro ELBO
        instance (``TraceMeanField_ELBO``, ``JitTrace_ELBO``, ``RenyiELBO``, ``DirectELBO()``)
    :param beta: weight of the latent term: a number or a function of the step (a
        :class:`~pyro_lvae.BetaSchedule`), or :class:`~pyro_lvae.GECO` (a weight that
        follows a reconstruction constraint: fit gives it the rows of every check and, on
        resume, the history)
    :param transform: applied to every batch on the device before the step, with the data
        stream's generator: dequantisation or binarisation of images kept as ``uint8`` (see
        :mod:`pyro_lvae.datasets`)
    :param tools: training tools (:mod:`pyro_lvae.training.tools`), each resumed exactly:
        :class:`~.tools.Checks` (``Checks(every=100, on_divergence="stop")`` if none is
        given), :class:`~.tools.Checkpoints`, :class:`~.tools.ProgressBar` (shown when
        stderr is a terminal if none is given), :class:`~.tools.Callback`,
        :class:`~.tools.Validation`, :class:`~.tools.ClipGradNorm`,
        :class:`~.schedules.LRSchedule`, :class:`~.averaging.AveragedWeights`,
        :class:`~.heldout.HeldOutEvaluation`, ``TensorBoardCallback``, or your own
        :class:`~.tools.Tool`
    :param device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ...
    :param int seed: seeds Pyro, torch and the data stream at the start of training; ``None``
        leaves them as they are. The initial weights are drawn when the VAE is built: call
        ``pyro.set_rng_seed(seed)`` before building it to fix them too
    :param out: the run folder: ``checkpoint.pt`` at the end (and on the way with
        :class:`~.tools.Checkpoints`); ``None`` writes nothing. A folder that already holds a
        run (``checkpoint.pt``, ``best.pt``) is refused unless ``resume=True``, and so is
        the folder of a command's run (``pyro-lvae train``, ``tabular fit``)
    :param bool resume: continue from ``out/checkpoint.pt`` if it exists, once the checkpoint,
        its run and ``best.pt`` are checked (a refused resume writes nothing)
    :param shorthands: deprecated keyword arguments of earlier versions, each mapped onto its
        tool with a DeprecationWarning: ``progress``, ``check_every``, ``on_divergence``,
        ``max_rollbacks``, ``checkpoint_every``, ``validate``, ``callbacks``,
        ``clip_grad_norm``, ``lr_schedule``, ``lr_warmup``, ``average``, ``heldout``,
        ``eval_every``

    At the first batch, the VAE takes what it measures on data where pending
    (``vae.initialize(x)``: a learned sigma's data-scaled start, a VampPrior's pseudo-inputs,
    standardising layers; with several processes, from rank 0's batch). The averaged model of
    :class:`~.averaging.AveragedWeights` is ``history.averaged``, the best held-out
    evaluation of :class:`~.heldout.HeldOutEvaluation` ``history.best``. Before training, a
    WARNING names the fix if ``beta`` warms up for longer than the run
    (:meth:`~pyro_lvae.BetaSchedule.unfinished`). At the end, a
    WARNING names the remedies if the model ended collapsed (``KL(q(z|x) || p(z))`` below 0.1
    nats per point on the last batch).
    """
    steps = check_positive_int("steps", steps)  # numpy integers become ints
    batch_size = check_positive_int("batch_size", batch_size)
    seed = None if seed is None else check_int("seed", seed, 0, 2**32 - 1)  # numpy's range
    lr = check_positive("lr", lr)  # numpy floats and 0-d tensors as floats; bools refused
    schedule = _check_arguments(vae, steps, batch_size, lr, beta, resume, out)
    tools = _run_tools(tools, shorthands, schedule, out)
    checks = next(t for t in tools if isinstance(t, Checks))
    rank, world = rank_info()
    device = resolve_device(device)
    vae.to(device)
    stream, streams = _data_stream(data, vae, batch_size, seed, device, transform, rank, world)
    opt = _make_optimizer(optimizer, vae, lr)
    _check_combination(opt, elbo, world)
    path, identity = prepare_folder(out, rank, resume)  # refuses a folder of another run
    run = Run(vae, opt, steps, History(), None if path is None else path.parent, rank, world,
              checks.every, tools, beta=schedule)
    for tool in tools:
        tool.setup(run)
    if resume and path.exists():
        run.start, run.history, tools_state = restore_checkpoint(
            path, vae, opt, stream.batches, streams, device, seed, rank, world)
        _load_tool_states(tools, tools_state)
        logger.info("resumed from %s at step %d", path, run.start)
        restore = getattr(schedule, "restore", None)
        if restore is not None:
            restore(run.history)
        if run.start >= steps:
            return _finish(run.history, run)
    if rank == 0:
        _warn_if_warmup_unfinished(schedule, steps)
    settings = {"steps": steps, "batch_size": batch_size, "lr": lr,
                "beta": schedule.spec() if isinstance(schedule, BetaSchedule) else repr(schedule)}
    for tool in tools:
        settings.update(tool.settings())

    def save(name: str, done: int) -> None:
        save_checkpoint(run.folder / name, done, vae, opt, run.history, streams,
                        stream.batches, settings, rank, world, _tool_states(tools), identity)

    run._save = None if path is None else save
    t0 = time.perf_counter()
    try:
        with pyro.validation_enabled(False):
            x = stream()  # the first batch as the model sees it
            _start_from_data(vae, x, world)
            for tool in tools:
                tool.on_train_start(run)
            vae.observation.set_step(run.start)
            step, run.history.objective = build_step(vae, x, opt, elbo, world,
                                                     _after_backward(run))
            logger.info("training objective: %s", run.history.objective)
            guard = DivergenceGuard(vae, opt, checks.on_divergence, checks.max_rollbacks,
                                    _Snapshots(tools))
            loop = _Loop(run, stream, step, schedule, guard, PendingRows(device, run.start),
                         checks.every)
            last = loop.train(x, run.start)
    finally:
        for tool in tools:
            tool.close(run)
    logger.info("trained %d steps in %.1f s", steps - run.start, time.perf_counter() - t0)
    if rank == 0:
        _warn_if_collapsed(vae, last)
    return _finish(run.history, run)
