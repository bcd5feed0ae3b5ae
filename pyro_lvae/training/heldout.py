"""The held-out ELBO of :func:`pyro_lvae.fit` and its best checkpoint.

Every ``every`` steps (and at the last one), the model's ELBO per point on a fixed held-out
set is computed with :func:`pyro_lvae.evaluate.elbo_parts` under a fixed seed, inside
:func:`torch.random.fork_rng`: the value is a function of the weights alone, and training draws
the same numbers with or without it. The value goes into the :class:`History`
(``heldout_elbo``, and ``heldout_elbo_averaged`` for the averaged model); when it is the best so
far, the whole checkpoint is written as ``best.pt`` beside ``checkpoint.pt``.

With a reconstruction target (a :class:`~pyro_lvae.GECO` run's, by default), the best is chosen
among the evaluations whose held-out reconstruction ``-log p(x|z)`` per point meets the target:
a GECO run minimises the KL *subject to* that constraint, and its highest ELBO often lies at a
collapsed start that does not meet it. Until one evaluation meets it, the best is the one that
reconstructs best (the nearest to the constraint).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch

from .. import evaluate
from ..errors import ConfigError, DataError, check_positive_int
from ..geco import GECO
from ..vae import VAE
from .averaging import AveragedWeights
from .checkpoint import BEST_NAME
from .distributed import gather_objects
from .tools import Tool

__all__ = ["HeldOut", "HeldOutEvaluation"]

logger = logging.getLogger(__name__)


class HeldOut:
    """A fixed held-out set, evaluated every ``every`` steps; remembers the best.

    :param data: the held-out points, a tensor or numpy array ``(N, ...)`` as the model sees
        them (after any transform)
    :param int every: steps between evaluations (fit checks its losses at those steps too)
    :param int seed: the seed of the evaluation's draws of ``z``
    :param int batch_size: points per evaluation batch
    :param reconstruction_target: ``None``, or the held-out reconstruction ``-log p(x|z)`` per
        point (nats) an evaluation must meet to be the best (module docstring)
    """

    def __init__(self, data: Any, every: int, seed: int = 0, batch_size: int = 1000,
                 reconstruction_target: float | None = None) -> None:
        if isinstance(data, np.ndarray):
            data = torch.as_tensor(data)
        if not isinstance(data, torch.Tensor) or data.ndim < 1 or data.shape[0] < 1:
            raise DataError(f"Expected heldout to be a tensor or numpy array of at least one "
                            f"point but got {type(data).__name__}")
        if not data.is_floating_point():
            raise DataError(f"Expected heldout data as the model sees them (floats, after any "
                            f"transform) but got {data.dtype}")
        every = check_positive_int("eval_every", every)
        batch_size = check_positive_int("the held-out batch_size", batch_size)
        self.data, self.every, self.seed, self.batch_size = data, every, seed, batch_size
        self.target = _target(reconstruction_target)
        self.reset()

    def reset(self) -> None:
        """Forget the best (a new run)."""
        self.best_elbo, self.best_step = -math.inf, -1
        self.best_reconstruction, self.best_met = math.inf, False

    def attach(self, vae: VAE) -> None:
        """Move the held-out set to ``vae``'s device and dtype, and check it against the
        model's data shape (before training starts)."""
        self.data = self.data.to(device=vae.device, dtype=vae.dtype)
        vae.model.check_data(self.data, finite=True)

    def due(self, done: int, steps: int) -> bool:
        """Whether to evaluate after ``done`` steps of ``steps``."""
        return done % self.every == 0 or done == steps

    def evaluate(self, vae: VAE) -> float:
        """The held-out ELBO per point of ``vae`` (:meth:`evaluate_parts`)."""
        return self.evaluate_parts(vae)["elbo"]

    def evaluate_parts(self, vae: VAE) -> dict[str, float]:
        """The held-out ``{"elbo", "reconstruction", "kl"}`` per point of ``vae``, leaving
        every random state as it was (rank 0's values on every process)."""
        if self.data.device != vae.device:
            self.attach(vae)
        devices = [vae.device] if vae.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            parts = evaluate.elbo_parts(vae, self.data, batch_size=self.batch_size)
        return {k: float(v) for k, v in gather_objects(parts)[0].items()}

    def improved(self, elbo: float, step: int, reconstruction: float = math.nan) -> bool:
        """Remember the evaluation of the model after the 0-based step ``step`` (the history
        row it is recorded in) if it is the best so far: the highest ``elbo``, or with a
        reconstruction target, the highest ``elbo`` among the evaluations whose
        ``reconstruction`` meets it (before any does, the lowest ``reconstruction``)."""
        if self.target is None:
            better = elbo > self.best_elbo
        else:
            met = reconstruction <= self.target
            if met != self.best_met:
                better = met
            elif met:
                better = elbo > self.best_elbo
            else:
                better = reconstruction < self.best_reconstruction
        if not better:
            return False
        self.best_elbo, self.best_step = elbo, step
        if self.target is not None:
            self.best_reconstruction, self.best_met = reconstruction, met
        return True

    def state_dict(self) -> dict[str, Any]:
        """The best so far (for checkpoints)."""
        return {"best_elbo": self.best_elbo, "best_step": self.best_step, "row": True,
                "target": self.target, "best_reconstruction": self.best_reconstruction,
                "best_met": self.best_met}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s best (checkpoints written before the best's
        step named its history row stored the number of steps done: one more). A state kept
        under another reconstruction target is refused: its best was chosen by another rule.
        A state of an earlier version (chosen on the ELBO alone, before targets existed) is
        taken under a target with a WARNING: the next evaluation starts the constrained
        choice."""
        legacy = "target" not in state
        target = self.target if legacy else state["target"]
        if target != self.target:
            def rule(t: Any) -> str:
                if t is None or t == math.inf:
                    return "the highest ELBO"
                return f"a reconstruction target of {t:g}"
            raise ConfigError(f"this run's held-out best was chosen by {rule(target)}, but "
                              f"the held-out evaluation now chooses by {rule(self.target)}: "
                              f"resume with the run's own settings (the same beta, or "
                              f"reconstruction_target=)")
        if legacy and self.target is not None:
            logger.warning("the best held-out evaluation so far was chosen on the ELBO alone "
                           "(a checkpoint of an earlier version); from the next evaluation the "
                           "best meets the reconstruction target %g", self.target)
        step = int(state["best_step"])
        if not state.get("row") and step > 0:
            step -= 1
        self.best_elbo, self.best_step = float(state["best_elbo"]), step
        self.best_reconstruction = float(state.get("best_reconstruction", math.inf))
        self.best_met = bool(state.get("best_met", False))

    def best(self) -> dict[str, Any] | None:
        """``{"step", "elbo"}`` of the best evaluation (``step``: its history row, the
        0-based step after which it was computed), with a reconstruction target also its
        ``reconstruction``, the ``target`` and whether it was ``met``; ``None`` before the
        first."""
        if self.best_step < 0:
            return None
        best: dict[str, Any] = {"step": self.best_step, "elbo": self.best_elbo}
        if self.target is not None:
            best.update(reconstruction=self.best_reconstruction, target=self.target,
                        met=self.best_met)
        return best


def _target(value: Any) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"Expected reconstruction_target to be a number of nats per point "
                          f"(or None) but got {value!r}") from None
    if math.isnan(value):
        raise ConfigError("Expected reconstruction_target to be a number of nats per point "
                          "but got nan; math.inf selects on the ELBO alone")
    return value


class HeldOutEvaluation(Tool):
    """A training tool (:mod:`pyro_lvae.training.tools`): the ELBO per point of a fixed
    held-out set every ``every`` steps and at the last one, into the history's
    ``heldout_elbo`` (and ``heldout_elbo_averaged`` with
    :class:`~pyro_lvae.training.averaging.AveragedWeights`); with ``out=``, the whole
    checkpoint of the best one so far is kept as ``best.pt`` beside ``checkpoint.pt``, and
    ``history.best`` says which it was (``step``: its history row). The value is a function
    of the weights alone: the evaluation draws under its own seed and leaves the run's random
    streams as they were.

    In a run whose ``beta`` is a :class:`~pyro_lvae.GECO`, the best is chosen among the
    evaluations that meet GECO's reconstruction target (module docstring), and
    ``history.best`` also holds the ``reconstruction``, the ``target`` and whether it was
    ``met``. ``reconstruction_target=`` sets another target (any run), ``math.inf`` chooses on
    the ELBO alone.

    :param data: the held-out points, a tensor or numpy array ``(N, ...)`` as the model sees
        its data (after any transform)
    :param int every: steps between evaluations (default ``10 *`` the checks' ``every``); the
        losses are checked at those steps too
    :param int seed: the seed of the evaluation's draws of ``z``
    :param int batch_size: points per evaluation batch
    :param reconstruction_target: the held-out reconstruction ``-log p(x|z)`` per point
        (nats) the best must meet; ``None``: a GECO run's target, else the ELBO alone
    """

    state_key = "heldout"
    order = 20

    def __init__(self, data: Any, every: int | None = None, seed: int = 0,
                 batch_size: int = 1000, reconstruction_target: float | None = None) -> None:
        if every is not None:
            every = check_positive_int("eval_every", every)
        self.every_given = every
        self.target_given = _target(reconstruction_target)
        self.evaluator = HeldOut(data, every or 1, seed, batch_size)

    @property
    def every(self) -> int:
        """Steps between evaluations (known once the run is set up)."""
        return self.evaluator.every

    def setup(self, run: Any) -> None:
        target = self.target_given
        if target is None and isinstance(getattr(run, "beta", None), GECO):
            target = run.beta.target
        self.evaluator.target = target
        self.evaluator.reset()  # afresh per run
        self.evaluator.every = self.every_given or 10 * run.check_every
        self.evaluator.attach(run.vae)

    def check_due(self, done: int) -> bool:
        return done % self.evaluator.every == 0

    def on_check(self, run: Any, done: int, rows: Any) -> None:
        if not self.evaluator.due(done, run.steps):
            return
        parts = self.evaluator.evaluate_parts(run.vae)
        elbo = parts["elbo"]
        run.history.record("heldout_elbo", elbo)
        averaging = run.find(AveragedWeights)
        if averaging is not None and averaging.averaged is not None:
            run.history.record("heldout_elbo_averaged",
                               self.evaluator.evaluate(averaging.averaged))
        if self.evaluator.improved(elbo, done - 1, parts["reconstruction"]):
            run.history.best = self.evaluator.best()
            run.save(BEST_NAME, done)

    def on_train_start(self, run: Any) -> None:
        best = self.evaluator.best()
        if best is not None:
            run.history.best = best

    def state_dict(self) -> Any:
        return self.evaluator.state_dict()

    def load_state_dict(self, state: Any) -> None:
        self.evaluator.load_state_dict(state)
        best = self.evaluator.best()
        if best is not None:
            logger.info("best held-out ELBO so far: %.4g at step %d", best["elbo"], best["step"])

    def best(self) -> dict[str, Any] | None:
        """``{"step", "elbo"}`` of the best evaluation so far (:meth:`HeldOut.best`), or
        ``None``."""
        return self.evaluator.best()

    def settings(self) -> dict[str, Any]:
        if self.evaluator.target is None:
            return {"eval_every": self.evaluator.every}
        return {"eval_every": self.evaluator.every,
                "heldout_reconstruction_target": self.evaluator.target}
