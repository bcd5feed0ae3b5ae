"""GECO: the KL weight as the Lagrange multiplier of a reconstruction constraint.

Rezende & Viola (2018) minimise the KL subject to a reconstruction target,
``min KL  s.t.  E[C] <= 0`` with ``C = reconstruction - target`` (here ``-log p(x|z)`` per data
point, in nats, the ``reconstruction`` column of :class:`~pyro_lvae.History`). The Lagrangian
``KL + lambda C`` has the gradient of ``lambda (reconstruction + KL / lambda)``: the ELBO's loss
with ``beta = 1 / lambda``, up to a positive factor. So :class:`GECO` is a KL weight for
:func:`~pyro_lvae.fit` that follows the constraint instead of a schedule: the multiplier rises
(beta falls, reconstruction gains weight) while the smoothed constraint is violated, and falls
(beta rises, the KL gains weight) while it holds. It is the other automatic way of balancing the
two terms; a learned sigma (Berger & Sebag) is the paper's.

The update (their Algorithm 1): ``C_ma <- smoothing * C_ma + (1 - smoothing) * C_t`` (``C_ma``
starts at the first step's ``C``), then ``lambda <- lambda * exp(rate * C_ma)``; beta is kept in
``[min_beta, max_beta]`` (and the multiplier with it, so it does not wind up). ``fit`` reads the
losses at every check (:class:`~pyro_lvae.training.Checks`): the multiplier takes every step's
constraint, in order, at each check, and beta holds between checks (``Checks(every=1)`` is the
paper's per-step update).
Its state is a function of the run's history, so a resumed run continues exactly
(:meth:`GECO.restore`).

In a training loop of your own (``SVI``), feed it each step's reconstruction loss with
:meth:`GECO.update`; a GECO asked for the weight of a step more than ``patience`` steps past
the steps it was given raises a :class:`~pyro_lvae.errors.ConfigError` naming that hook, rather
than stay at its start (beta = 1) in silence::

    geco = lv.GECO(target=-50.0)
    for step in range(steps):
        with lv.weight_latents(geco(step)):
            svi.step(x)
        geco.update(reconstruction)   # -log p(x|z) per data point at this step, in nats

**References**

- D. Rezende, F. Viola. *Taming VAEs*. arXiv:1810.00597, 2018.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .annealing import BETA_SCHEDULES, BetaSchedule
from .errors import ConfigError, check_positive_int

__all__ = ["GECO"]


def _finite(name: str, value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"Expected {name} to be a number but got {value!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"Expected a finite {name} but got {value}")
    return value


@BETA_SCHEDULES.register("geco")
class GECO(BetaSchedule):
    """A KL weight ``beta = 1 / lambda`` with ``lambda`` the Lagrange multiplier of the
    constraint ``reconstruction <= target`` (module docstring). Pass it as ``beta=`` to
    :func:`~pyro_lvae.fit` (``pyro-lvae train --geco TARGET``), which feeds it; in a loop of
    your own, call :meth:`update` with each step's reconstruction loss (forgetting it is an
    error, not a silent beta of 1: :meth:`__call__`). Its :meth:`spec` is
    ``geco:TARGET:RATE:SMOOTHING:MIN_BETA:MAX_BETA:PATIENCE``, which
    :func:`~pyro_lvae.parse_schedule` reads back (a new multiplier: the state is the run's,
    see :meth:`restore`).

    :param float target: the reconstruction loss to reach, ``-log p(x|z)`` per data point in
        nats (with a learned sigma it can be negative)
    :param float rate: the multiplier's step, ``log lambda += rate * C_ma`` per training step
        (``C`` in nats per point: choose it so that ``rate * |C|`` is about 1e-3 to 1e-2)
    :param float smoothing: the moving average's weight on its past, in ``[0, 1)``
    :param float min_beta: the smallest KL weight (the largest multiplier)
    :param float max_beta: the largest KL weight
    :param int patience: how many steps past the last one it was given (by :meth:`update`)
        it gives a weight for; ``fit`` gives it the steps at every check and raises it to the
        checks' ``every`` where it is lower

    Example::

        >>> import pyro_lvae as lv
        >>> geco = lv.GECO(target=1.0, rate=0.1, smoothing=0.0)
        >>> geco.update(3.0)   # one step's reconstruction: violated, lambda rises, beta falls
        >>> round(geco(1), 4)
        0.8187
    """

    def __init__(self, target: float, rate: float = 1e-2, smoothing: float = 0.99,
                 min_beta: float = 1e-3, max_beta: float = 1e3, patience: int = 1000) -> None:
        self.target = _finite("target", target)
        self.rate = _finite("rate", rate)
        if self.rate <= 0:
            raise ConfigError(f"Expected rate > 0 but got {self.rate}")
        self.smoothing = _finite("smoothing", smoothing)
        if not 0 <= self.smoothing < 1:
            raise ConfigError(f"Expected 0 <= smoothing < 1 but got {self.smoothing}")
        self.min_beta, self.max_beta = _finite("min_beta", min_beta), _finite("max_beta", max_beta)
        if not 0 < self.min_beta <= 1 <= self.max_beta:
            raise ConfigError(f"Expected 0 < min_beta <= 1 <= max_beta but got "
                              f"{self.min_beta}, {self.max_beta}")
        self.patience = check_positive_int("patience", patience)
        self.reset()

    def reset(self) -> None:
        """Back to the start: ``lambda = 1`` (beta 1, the ELBO), no constraint seen."""
        #: log of the multiplier lambda
        self.log_multiplier = 0.0
        #: the moving average of the constraint (None before the first step)
        self.constraint: float | None = None
        #: steps observed
        self.steps = 0

    @property
    def multiplier(self) -> float:
        """lambda, the Lagrange multiplier (``1 / beta``)."""
        return math.exp(self.log_multiplier)

    def __call__(self, step: int) -> float:
        """The KL weight for training step ``step`` (counted from 0): ``1 / lambda`` after the
        steps given so far. Raises :class:`~pyro_lvae.errors.ConfigError` when ``step`` lies
        more than ``patience`` steps past them: the multiplier moves only with the
        reconstruction losses that :meth:`update` (``fit``: :meth:`observe`) gives it."""
        if step - self.steps > self.patience:
            raise ConfigError(
                f"GECO was asked for the KL weight of step {step} but has been given the "
                f"reconstruction loss of {self.steps} step(s) only, so its beta would stay at "
                f"{math.exp(-self.log_multiplier):.4g} whatever the run does: call "
                f"geco.update(reconstruction) after each step (-log p(x|z) per data point, in "
                f"nats; lv.fit does it for you), or raise patience= (now {self.patience}) if "
                f"you give it the steps in larger groups"
            )
        return math.exp(-self.log_multiplier)

    def update(self, reconstruction: Any) -> None:
        """Update the multiplier with the reconstruction loss of the next training step, or of
        the next steps in order (a sequence): ``-log p(x|z)`` per data point, in nats, as a
        number or a tensor (reading a tensor on a GPU is a host synchronisation). The hook of a
        training loop of your own; ``fit`` gives it its rows through :meth:`observe`.

        :param reconstruction: one step's loss, or a sequence of them (one per step, in order)
        """
        if isinstance(reconstruction, torch.Tensor):
            reconstruction = reconstruction.detach().cpu().double().numpy()
        try:
            values = np.asarray(reconstruction, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ConfigError(f"GECO.update takes each step's reconstruction loss (a number, "
                              f"a tensor or a sequence of them), not {reconstruction!r}") from None
        if not np.isfinite(values).all():
            raise ConfigError(f"GECO needs each step's reconstruction loss, a finite number, "
                              f"but got {values[~np.isfinite(values)][0]}")
        self._take(values)

    def observe(self, rows: dict[str, Any]) -> None:
        """Update the multiplier with each step's ``reconstruction`` (per data point), in order
        (``fit`` calls it at every check with the rows recorded since the last one)."""
        values = np.asarray(rows["reconstruction"], dtype=np.float64).reshape(-1)
        if not np.isfinite(values).all():
            raise ConfigError("GECO needs each step's reconstruction loss, which this run's "
                              "ELBO does not log (the JIT ELBOs and RenyiELBO do not); train "
                              "with fit's default Trace_ELBO objective")
        self._take(values)

    def _take(self, values: np.ndarray) -> None:
        low, high = -math.log(self.max_beta), -math.log(self.min_beta)
        for value in values:
            c = float(value) - self.target
            self.constraint = c if self.constraint is None else (
                self.smoothing * self.constraint + (1 - self.smoothing) * c)
            self.log_multiplier = min(max(self.log_multiplier + self.rate * self.constraint,
                                          low), high)
            self.steps += 1

    def restore(self, history: Any) -> None:
        """The state after the steps of ``history`` (a resumed run's), replayed from the
        start: the same state as the uninterrupted run."""
        self.reset()
        if len(history):
            self.observe({"reconstruction": history["reconstruction"]})

    def __repr__(self) -> str:
        return (f"GECO(target={self.target:g}, rate={self.rate:g}, "
                f"smoothing={self.smoothing:g}, beta={self(0):.4g})")
