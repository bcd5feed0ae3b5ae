"""Weight selection on a validation split, for the studies' runs (which keep no run folder).

:class:`SelectedWeights` is :func:`pyro_lvae.fit`'s
:class:`~pyro_lvae.training.HeldOutEvaluation` (the held-out ELBO of a validation split every
``every`` steps and at the last one, in the history's ``heldout_elbo``; the best one in
``history.best``) that also keeps, in memory, a copy of the weights of the best evaluation so
far, and the validation curve. Where :class:`~pyro_lvae.training.HeldOutEvaluation` writes the
best checkpoint only into a run folder (``out=``), a study's job trains without one: it measures
the selected weights on its test images with :meth:`SelectedWeights.load` and reports the test
numbers of those weights, with the selected step.

With ``milestones`` (steps at which the validation is evaluated: multiples of ``every``), the
best weights *up to* each milestone are kept too: the weights a run of that many steps would
have selected. With a constant learning rate and a KL weight that does not depend on the run's
length, a run of ``m`` steps is exactly the first ``m`` steps of a longer run (the evaluation
draws under its own seed and leaves the run's random streams as they were), so one run measures
several training lengths.

In a :class:`~pyro_lvae.GECO` run (or with ``reconstruction_target=``), the selected weights are
the best among the evaluations that meet the reconstruction target
(:class:`~pyro_lvae.training.HeldOutEvaluation`).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from ..training import HeldOutEvaluation

__all__ = ["SelectedWeights"]


def _copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class SelectedWeights(HeldOutEvaluation):
    """:class:`~pyro_lvae.training.HeldOutEvaluation` that keeps the best weights in memory.

    :param data: the validation images as the model sees them (after any transform)
    :param int every: steps between evaluations
    :param int seed: the seed of the evaluation's draws of ``z``
    :param int batch_size: images per evaluation batch
    :param milestones: steps (multiples of ``every``) at which to remember the best weights so
        far (:meth:`load` with ``upto=``)
    :param reconstruction_target: as :class:`~pyro_lvae.training.HeldOutEvaluation`'s
    """

    def __init__(self, data: Any, every: int, seed: int = 0, batch_size: int = 1000,
                 milestones: tuple[int, ...] = (),
                 reconstruction_target: float | None = None) -> None:
        super().__init__(data, every, seed, batch_size, reconstruction_target)
        bad = [m for m in milestones if not isinstance(m, int) or m < 1 or m % every]
        if bad:
            raise ConfigError(f"milestones {bad}: each must be a positive multiple of the "
                              f"evaluation interval {every}")
        self.milestones = tuple(sorted(set(milestones)))
        #: ``(steps trained, validation ELBO per image)`` of every evaluation
        self.curve: list[tuple[int, float]] = []
        self._best: tuple[int, dict[str, torch.Tensor]] | None = None
        self._at: dict[int, tuple[int, dict[str, torch.Tensor]]] = {}

    def setup(self, run: Any) -> None:
        super().setup(run)
        self.curve, self._best, self._at = [], None, {}

    def on_check(self, run: Any, done: int, rows: Any) -> None:
        due = self.evaluator.due(done, run.steps)
        super().on_check(run, done, rows)
        if not due:
            return
        self.curve.append((done, float(run.history["heldout_elbo"][-1])))
        if self.evaluator.best_step == done - 1:  # this evaluation is the best so far
            self._best = (done, _copy(run.vae))
        if done in self.milestones:
            self._at[done] = self._best

    def selected_step(self, upto: int | None = None) -> int:
        """The steps trained when the selected weights were evaluated (the best validation ELBO
        of the run, or of its first ``upto`` steps, a milestone)."""
        return self._selected(upto)[0]

    def _selected(self, upto: int | None) -> tuple[int, dict[str, torch.Tensor]]:
        chosen = self._best if upto is None else self._at.get(upto)
        if chosen is None:
            where = "" if upto is None else f" by step {upto}"
            raise ConfigError(f"no weights were selected{where}: the run has not been "
                              f"evaluated there (milestones {list(self.milestones)})")
        return chosen

    def load(self, vae: torch.nn.Module, upto: int | None = None) -> int:
        """Put the selected weights into ``vae`` (the model that was trained) and tell its
        observation model the step they come from; return that step (steps trained)."""
        step, state = self._selected(upto)
        vae.load_state_dict(state)
        vae.observation.set_step(step - 1)
        return step
