"""Averaged weights for :func:`pyro_lvae.fit`: an exponential moving average (EMA) or a
stochastic weight average (SWA) of every parameter of the VAE, the learned sigma included,
kept by torch's own :class:`torch.optim.swa_utils.AveragedModel`.

The averaged model is an independent :class:`~pyro_lvae.VAE` (a copy with param-store names of
its own, so it can be trained, sampled or evaluated beside the raw one): after ``fit`` it is
``history.averaged``; checkpoints hold it beside the raw model, and ``pyro-lvae train`` saves it
as ``averaged.pt``. Parameters are averaged as the optimiser sees them (a learned sigma in its
unconstrained form, ``log(sigma - min_scale)``); buffers and the learned sigma's measured start
are copied from the raw model.

**References**

- P. Izmailov, D. Podoprikhin, T. Garipov, D. Vetrov, A. G. Wilson. *Averaging Weights Leads to
  Wider Optima and Better Generalization*. UAI 2018.
- B. T. Polyak, A. B. Juditsky. *Acceleration of Stochastic Approximation by Averaging*. SIAM
  J. Control Optim. 30(4), 1992.
"""

from __future__ import annotations

import copy
import logging
import numbers
import os
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, get_swa_multi_avg_fn

from ..errors import CheckpointError, ConfigError, check_int
from ..io import safe_load
from ..registry import Registry
from ..vae import VAE
from .tools import Tool

__all__ = ["WeightAverage", "parse_average", "Averager", "AveragedWeights", "load_averaged",
           "AVERAGES"]

logger = logging.getLogger(__name__)

#: the weight averagings by command-line name (``--average``): ``NAME[:ARG...]``
#: (:mod:`pyro_lvae.registry`); ``none`` is no averaging
AVERAGES = Registry("weight averaging")


class WeightAverage:
    """How to average a run's weights.

    :param str kind: ``"ema"`` (exponential moving average: ``w <- decay w + (1 - decay) w_t``)
        or ``"swa"`` (the plain mean of the weights since ``start``)
    :param float decay: the EMA's decay, in ``[0, 1)`` (``"ema"`` only)
    :param int start: the first step (counted from 0) whose weights enter the average (until
        then the averaged model holds the weights of the start of training; a start at or
        beyond a run's last step gets a WARNING from :class:`AveragedWeights`)
    :param int every: average the weights of every ``every``-th step from ``start``

    Example::

        >>> from pyro_lvae.training.averaging import WeightAverage
        >>> WeightAverage("ema", decay=0.99).spec()
        'ema:0.99:0:1'
    """

    def __init__(self, kind: str = "ema", decay: float = 0.999, start: int = 0,
                 every: int = 1) -> None:
        if kind not in ("ema", "swa"):
            raise ConfigError(f"Expected the averaging kind to be 'ema' or 'swa' but got {kind!r}")
        if isinstance(decay, bool) or not (isinstance(decay, numbers.Real) and 0 <= decay < 1):
            raise ConfigError(f"Expected the EMA decay in [0, 1) but got {decay!r}")
        start = check_int("the averaging start", start, 0)
        every = check_int("the averaging every", every, 1)
        self.kind, self.decay, self.start, self.every = kind, float(decay), start, every

    def spec(self) -> str:
        """The command-line form, ``ema:DECAY:START:EVERY`` or ``swa:START:EVERY``
        (:data:`AVERAGES`)."""
        return AVERAGES.spec(self)

    def wrap(self, vae: VAE) -> AveragedModel:
        """torch's ``AveragedModel`` of an independent copy of ``vae``."""
        fn = get_ema_multi_avg_fn(self.decay) if self.kind == "ema" else get_swa_multi_avg_fn()
        return AveragedModel(vae, multi_avg_fn=fn)

    def due(self, step: int) -> bool:
        """Whether the weights after step ``step`` (0-based) enter the average."""
        return step >= self.start and (step - self.start) % self.every == 0

    def __repr__(self) -> str:
        return f"WeightAverage({self.spec()!r})"


@AVERAGES.register("ema")
def _ema(decay: float = 0.999, start: int = 0, every: int = 1) -> WeightAverage:
    """An exponential moving average of the weights."""
    return WeightAverage("ema", decay, start, every)


@AVERAGES.register("swa")
def _swa(start: int = 0, every: int = 1) -> WeightAverage:
    """The mean of the weights since ``start`` (stochastic weight averaging)."""
    return WeightAverage("swa", start=start, every=every)


@AVERAGES.register("none")
def _none() -> None:
    """No averaging."""
    return None


def parse_average(text: str | WeightAverage | None) -> WeightAverage | None:
    """An averaging from its command-line form: ``ema[:DECAY[:START[:EVERY]]]`` or
    ``swa[:START[:EVERY]]`` (``none`` or ``None``: no averaging); one of :data:`AVERAGES`.

    Example::

        >>> from pyro_lvae.training.averaging import parse_average
        >>> parse_average("swa:500").start
        500
    """
    if text is None or isinstance(text, WeightAverage):
        return text
    return AVERAGES.parse(str(text))


class Averager:
    """The run's averaged model: updated after the steps :meth:`WeightAverage.due` names, its
    state in the checkpoint (``state_dict``) and in the divergence guard's snapshots."""

    def __init__(self, average: WeightAverage, vae: VAE) -> None:
        self.average, self.vae = average, vae
        self.model = average.wrap(vae)

    @property
    def averaged(self) -> VAE:
        """The averaged VAE (an independent copy of the raw one)."""
        return self.model.module

    def after_step(self, step: int) -> None:
        """Average in the weights after step ``step`` if due; the observation model follows
        the raw one's step (scheduled sigmas)."""
        if self.average.due(step):
            self.model.update_parameters(self.vae)
        self.averaged.observation.set_step(step)

    def state_dict(self) -> dict[str, Any]:
        """The averaging's form, the number of averaged steps and the averaged VAE as
        :meth:`~pyro_lvae.VAE.to_file_dict` writes it (so :func:`load_averaged` rebuilds it)."""
        return {"spec": self.average.spec(), "n_averaged": self.model.n_averaged.clone(),
                "model": self.averaged.to_file_dict()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s state (the same averaging only)."""
        if state.get("spec") != self.average.spec():
            raise ConfigError(f"the checkpoint averaged weights with {state.get('spec')!r}, "
                              f"this run with {self.average.spec()!r}: resume with the same "
                              f"averaging")
        self.averaged._load_checked(state["model"]["state_dict"], "the checkpoint's averaged "
                                    "model")
        self.model.n_averaged.copy_(state["n_averaged"])

    def snapshot(self) -> dict[str, Any]:
        """An in-memory copy of the state (for the divergence guard)."""
        return copy.deepcopy({"n_averaged": self.model.n_averaged,
                              "state_dict": self.averaged.state_dict()})

    @torch.no_grad()
    def restore(self, snapshot: dict[str, Any]) -> None:
        """Go back to a :meth:`snapshot`."""
        self.averaged.load_state_dict(snapshot["state_dict"])
        self.model.n_averaged.copy_(snapshot["n_averaged"])


def load_averaged(path: str | os.PathLike, map_location: Any = None) -> VAE:
    """The averaged model of a training checkpoint of a run with ``average=`` (``best.pt`` or
    ``checkpoint.pt``); :func:`pyro_lvae.load` gives the raw one.

    :param path: the checkpoint
    :param map_location: as in :func:`torch.load`, e.g. ``"cpu"``
    """
    blob = safe_load(path, map_location=map_location)
    state = blob.get("tools", {}).get("averaged") if isinstance(blob, dict) else None
    if state is None:
        raise CheckpointError(f"{path} holds no averaged model: it is not a checkpoint of a "
                              f"run with average= (--average)")
    return VAE.from_file_dict(state["model"], f"{path} (averaged model)", map_location)


class AveragedWeights(Tool):
    """A training tool (:mod:`pyro_lvae.training.tools`): averaged weights of every
    parameter, sigma included, kept beside the raw ones; the averaged VAE is
    ``history.averaged`` (an independent copy: ``history.averaged.sample(n)``), the
    checkpoints hold it (:func:`load_averaged`) and a held-out evaluation scores it too.

    :param average: ``"ema"``, ``"ema:DECAY[:START[:EVERY]]"``, ``"swa[:START[:EVERY]]"`` or a
        :class:`WeightAverage`
    """

    state_key = "averaged"

    def __init__(self, average: str | WeightAverage = "ema") -> None:
        parsed = parse_average(average)
        if parsed is None:
            raise ConfigError("AveragedWeights needs an averaging (ema or swa), not none: "
                              "leave the tool out instead")
        self.average = parsed
        self.averager: Averager | None = None
        self._pending: dict[str, Any] | None = None

    @property
    def averaged(self) -> VAE | None:
        """The averaged model, once the run has started."""
        return None if self.averager is None else self.averager.averaged

    def setup(self, run: Any) -> None:
        self.averager, self._pending = None, None  # a tool used again starts afresh
        if self.average.start >= run.steps and run.rank == 0:
            logger.warning(
                "the weight averaging %s starts at step %d, after the run's last step (%d): "
                "the averaged model (history.averaged, averaged.pt) holds the weights of the "
                "start of training, not an average; start it before step %d or train for more "
                "than %d steps", self.average.spec(), self.average.start, run.steps - 1,
                run.steps, self.average.start)

    def on_train_start(self, run: Any) -> None:
        # after the model's data start, so the copy holds the same start
        if self.averager is None:
            self.averager = Averager(self.average, run.vae)
        if self._pending is not None:
            self.averager.load_state_dict(self._pending)
            self._pending = None

    def on_step_end(self, run: Any, step: int) -> None:
        self.averager.after_step(step)

    def state_dict(self) -> Any:
        return None if self.averager is None else self.averager.state_dict()

    def load_state_dict(self, state: Any) -> None:
        if state.get("spec") != self.average.spec():
            raise ConfigError(f"the checkpoint averaged weights with {state.get('spec')!r}, "
                              f"this run with {self.average.spec()!r}: resume with the same "
                              f"averaging")
        if self.averager is None:
            self._pending = state  # taken at the start, once the copy exists
        else:
            self.averager.load_state_dict(state)

    def snapshot(self) -> Any:
        return None if self.averager is None else self.averager.snapshot()

    def restore(self, snapshot: Any) -> None:
        if self.averager is not None and snapshot is not None:
            self.averager.restore(snapshot)

    def settings(self) -> dict[str, Any]:
        return {"average": self.average.spec()}
