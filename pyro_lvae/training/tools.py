"""Training tools: objects that :func:`pyro_lvae.fit` takes in a list (``tools=[...]``), each
with hooks into the run and its own state in the checkpoint, so that a resumed run continues
exactly (the model after PyTorch Lightning's ``Callback``).

A tool subclasses :class:`Tool` and overrides the hooks it needs; :class:`Run` is what it sees
of the run. The order of a step and of a check:

- :meth:`Tool.setup` once, before anything runs: check the settings against the run (the
  optimiser's kind, the number of processes, the other tools) and raise
  :class:`~pyro_lvae.errors.ConfigError` on a combination it cannot honour;
- :meth:`Tool.on_train_start` once, after the model took its start from the first batch
  (and after a resumed run's state came back through :meth:`Tool.load_state_dict`);
- each step: the loss, the backward pass, :meth:`Tool.after_backward` (a torch optimiser's
  gradients are ready), the optimiser's step, :meth:`Tool.on_step_end`;
- every ``Checks.every`` steps (and when a tool's :meth:`Tool.check_due` asks), the losses
  are read, checked and recorded, then :meth:`Tool.on_check` runs in the tools' ``order``;
- :meth:`Tool.close` at the end, also when the run fails.

:meth:`Tool.state_dict` goes into the checkpoint under the tool's :attr:`Tool.state_key`
and :meth:`Tool.settings` into its record of the run's settings; :meth:`Tool.snapshot` and
:meth:`Tool.restore` let the divergence guard roll the tool back with the weights.

The tools of this package: :class:`Checks` (the loss checks and the divergence guard),
:class:`Checkpoints` (their cadence), :class:`ProgressBar`, :class:`Callback` (a function at
every check), :class:`Validation` (Pyro's validation during training), :class:`ClipGradNorm`,
:class:`~pyro_lvae.training.schedules.LRSchedule`,
:class:`~pyro_lvae.training.averaging.AveragedWeights`,
:class:`~pyro_lvae.training.heldout.HeldOutEvaluation` and
:class:`~pyro_lvae.training.tensorboard.TensorBoardCallback`.

Example::

    >>> import torch, pyro_lvae as lv
    >>> from pyro_lvae.training import Callback, Checks, ClipGradNorm, ProgressBar
    >>> vae = lv.mlp_vae(2, 1, lv.FixedScale(0.5), hidden=8, blocks=1)
    >>> seen = []
    >>> history = lv.fit(vae, torch.randn(64, 2), steps=20, batch_size=16, seed=0,
    ...                  tools=[ClipGradNorm(10.0), Checks(every=10), ProgressBar(False),
    ...                         Callback(lambda step, rows, vae: seen.append(step))])
    >>> seen
    [10, 20]
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyro
import pyro.optim
import torch
from tqdm.auto import tqdm

from ..errors import ConfigError, check_int, check_positive_int

__all__ = ["Tool", "Run", "Checks", "Checkpoints", "ProgressBar", "Callback", "Validation",
           "ClipGradNorm"]


class Run:
    """What a :class:`Tool` sees of a :func:`~pyro_lvae.fit` run.

    :ivar vae: the model being trained
    :ivar optimizer: the run's optimiser (torch, or ``pyro.optim`` under ``SVI``)
    :ivar int steps: the run's total number of steps
    :ivar int start: the first step of this call (after a resume, the checkpoint's)
    :ivar history: the :class:`~pyro_lvae.training.History` so far
    :ivar folder: the run folder (``out``), or ``None``
    :ivar int rank: this process's rank (0 alone)
    :ivar int world: the number of processes
    :ivar int check_every: steps between checks (:class:`Checks`)
    :ivar tools: every tool of the run
    :ivar grad_norm: the last step's total gradient norm before clipping, or ``None``
    :ivar beta: the run's KL weight, a function of the step (a
        :class:`~pyro_lvae.BetaSchedule`, a :class:`~pyro_lvae.GECO`, ...), or ``None``
    """

    def __init__(self, vae: Any, optimizer: Any, steps: int, history: Any,
                 folder: Path | None, rank: int, world: int, check_every: int,
                 tools: Sequence[Tool], beta: Any = None) -> None:
        self.vae, self.optimizer, self.steps = vae, optimizer, steps
        self.start, self.history, self.folder = 0, history, folder
        self.rank, self.world, self.check_every = rank, world, check_every
        self.tools = list(tools)
        self.grad_norm: torch.Tensor | None = None
        self.beta = beta
        self._save: Callable[[str, int], None] | None = None

    @property
    def torch_optimizer(self) -> bool:
        """Whether the optimiser is a torch one (not ``pyro.optim`` under ``SVI``)."""
        return not isinstance(self.optimizer, pyro.optim.PyroOptim)

    def find(self, kind: type) -> Any:
        """The run's tool of class ``kind`` (or a subclass), or ``None``."""
        return next((t for t in self.tools if isinstance(t, kind)), None)

    def save(self, name: str, done: int) -> None:
        """Write the checkpoint of ``done`` steps as ``name`` in the run folder (every process
        calls; nothing without a folder)."""
        if self._save is not None:
            self._save(name, done)


class Tool:
    """Base class of the training tools (see the module docstring): every hook does
    nothing by default."""

    #: the key of the tool's state in the checkpoint; ``None``: it keeps no state
    state_key: ClassVar[str | None] = None
    #: the order of :meth:`on_check` among the tools (lower first)
    order: ClassVar[int] = 50

    def setup(self, run: Run) -> None:
        """Check the settings against the run before anything runs."""

    def on_train_start(self, run: Run) -> None:
        """After the model's start from the first batch and the restore of a resumed run."""

    def after_backward(self, run: Run) -> None:
        """After the backward pass of a torch optimiser's step, before its update."""

    def on_step_end(self, run: Run, step: int) -> None:
        """After the optimiser's step ``step`` (0-based)."""

    def check_due(self, done: int) -> bool:
        """Whether the run must check after ``done`` steps for this tool."""
        return False

    def on_check(self, run: Run, done: int, rows: dict[str, np.ndarray]) -> None:
        """After a good check at ``done`` steps; ``rows`` are the steps recorded since the
        last check (numpy arrays per column)."""

    def close(self, run: Run) -> None:
        """At the end of the run, also when it fails."""

    def state_dict(self) -> Any:
        """The state a resumed run needs (saved when :attr:`state_key` is set)."""
        return None

    def load_state_dict(self, state: Any) -> None:
        """Continue from :meth:`state_dict`'s state."""

    def snapshot(self) -> Any:
        """An in-memory copy of the state the divergence guard restores."""
        return None

    def restore(self, snapshot: Any) -> None:
        """Go back to a :meth:`snapshot`."""

    def settings(self) -> dict[str, Any]:
        """The tool's settings, for the checkpoint's record of the run."""
        return {}

    def __repr__(self) -> str:
        inside = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({inside})"


class Checks(Tool):
    """How often the run reads its losses, and what it does when they diverge.

    Every ``every`` steps the losses kept on the device are read (one host synchronisation)
    and checked: if a loss or a parameter is NaN or infinite, the parameters, the optimiser
    and the tools' state of the last good check come back, and the run stops with
    :class:`~pyro_lvae.errors.TrainingDiverged` (``on_divergence="stop"``) or goes on at half
    the learning rate (``"rollback"``, up to ``max_rollbacks`` times; torch optimisers only).
    One is always part of a run (``Checks()`` if none is given).

    :param int every: steps between checks
    :param str on_divergence: ``"stop"`` or ``"rollback"``
    :param int max_rollbacks: rollbacks allowed before giving up
    """

    def __init__(self, every: int = 100, on_divergence: str = "stop",
                 max_rollbacks: int = 3) -> None:
        every = check_positive_int("check_every", every)
        if on_divergence not in ("stop", "rollback"):
            raise ConfigError(f"Expected on_divergence to be 'stop' or 'rollback' but got "
                              f"{on_divergence!r}")
        max_rollbacks = check_int("max_rollbacks", max_rollbacks, 0)
        self.every, self.on_divergence, self.max_rollbacks = every, on_divergence, max_rollbacks

    def setup(self, run: Run) -> None:
        if self.on_divergence == "rollback" and not run.torch_optimizer:
            raise ConfigError("on_divergence='rollback' needs a torch optimiser (it lowers the "
                              "learning rate of its parameter groups), not a pyro.optim one")

    def settings(self) -> dict[str, Any]:
        return {"check_every": self.every, "on_divergence": self.on_divergence,
                "max_rollbacks": self.max_rollbacks}


class Checkpoints(Tool):
    """Write ``checkpoint.pt`` into the run folder every ``every`` steps (rounded up to a
    multiple of :class:`Checks`'s ``every``); without it, only at the end. Needs ``out=``.

    :param int every: steps between checkpoints
    """

    order = 95  # after every other tool's check, so the checkpoint holds their latest state

    def __init__(self, every: int) -> None:
        self.every = every = check_positive_int("checkpoint_every", every)
        self._rounded = every

    def setup(self, run: Run) -> None:
        if run.folder is None:
            raise ConfigError("Checkpoints needs out= (the run folder to write them into)")
        self._rounded = math.ceil(self.every / run.check_every) * run.check_every

    def on_check(self, run: Run, done: int, rows: dict[str, np.ndarray]) -> None:
        from .checkpoint import CHECKPOINT_NAME

        if done % self._rounded == 0 and done != run.steps:  # the last one: fit's own
            run.save(CHECKPOINT_NAME, done)

    def settings(self) -> dict[str, Any]:
        return {"checkpoint_every": self.every}


class ProgressBar(Tool):
    """A progress bar on stderr (``tqdm``) with the last loss and sigma, on rank 0.

    :param bool enabled: show it; ``None`` (the default): when stderr is a terminal
    """

    order = 90

    def __init__(self, enabled: bool | None = None) -> None:
        if enabled is not None and not isinstance(enabled, bool):
            raise ConfigError(f"Expected progress to be True, False or None but got "
                              f"{enabled!r}")
        self.enabled = enabled
        self._bar: Any = None

    def on_train_start(self, run: Run) -> None:
        show = sys.stderr.isatty() if self.enabled is None else self.enabled
        self._bar = tqdm(total=run.steps, initial=run.start, desc="training", unit="step",
                         dynamic_ncols=True, disable=not show or run.rank != 0)

    def on_check(self, run: Run, done: int, rows: dict[str, np.ndarray]) -> None:
        self._bar.update(done - self._bar.n)
        self._bar.set_postfix(loss=f"{float(rows['loss'][-1]):.4g}",
                              sigma=f"{float(rows['sigma'][-1]):.4g}", refresh=False)

    def close(self, run: Run) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class Callback(Tool):
    """A function ``f(step, rows, vae)`` called at every check on rank 0 with the rows
    recorded since the last one (numpy arrays per column), for logging.

    :param fn: the function
    """

    order = 60

    def __init__(self, fn: Callable[[int, dict[str, np.ndarray], Any], None]) -> None:
        if not callable(fn):
            raise ConfigError(f"Expected a function f(step, rows, vae) but got {fn!r}")
        self.fn = fn

    def on_check(self, run: Run, done: int, rows: dict[str, np.ndarray]) -> None:
        if run.rank == 0:
            self.fn(done, rows, run.vae)

    def __repr__(self) -> str:
        return f"Callback({self.fn!r})"


class Validation(Tool):
    """Keep Pyro's distribution validation on during training (slower; off by default, also
    when it is on globally, and back as it was after the run)."""

    def on_train_start(self, run: Run) -> None:
        pyro.enable_validation(True)

    def close(self, run: Run) -> None:
        pyro.enable_validation(False)  # fit restores the caller's setting after the run

    def settings(self) -> dict[str, Any]:
        return {"validate": True}


class ClipGradNorm(Tool):
    """Clip the norm of all gradients together to ``max_norm`` before every optimiser step
    (:func:`torch.nn.utils.clip_grad_norm_`; with several processes, after the gradients are
    averaged, so every rank clips alike). The norm before clipping is recorded in the
    history's ``grad_norm`` column (of the summed loss). Torch optimisers only: a
    ``pyro.optim`` optimiser clips each parameter on its own, through its ``clip_args``.

    :param float max_norm: the largest total norm
    """

    def __init__(self, max_norm: float) -> None:
        if not (isinstance(max_norm, (int, float)) and not isinstance(max_norm, bool)
                and math.isfinite(max_norm) and max_norm > 0):
            raise ConfigError(f"Expected clip_grad_norm > 0 but got {max_norm!r}")
        self.max_norm = float(max_norm)
        self._params: list[torch.Tensor] = []

    def setup(self, run: Run) -> None:
        if not run.torch_optimizer:
            raise ConfigError(
                "clip_grad_norm clips the norm of all gradients together, which needs a torch "
                "optimiser; a pyro.optim optimiser clips each parameter on its own: give it "
                "clip_args={'clip_norm': ...} (or use pyro.optim.ClippedAdam) instead")
        self._params = [p for group in run.optimizer.param_groups for p in group["params"]]

    def after_backward(self, run: Run) -> None:
        run.grad_norm = torch.nn.utils.clip_grad_norm_(self._params, self.max_norm)

    def settings(self) -> dict[str, Any]:
        return {"clip_grad_norm": self.max_norm}


def check_tools(tools: Any) -> list[Tool]:
    """The list of tools, checked: each a :class:`Tool`, at most one of each class (and of
    each checkpoint key), any number of :class:`Callback` s."""
    if isinstance(tools, Tool) or not isinstance(tools, (list, tuple)):
        raise ConfigError(f"Expected tools to be a list of training tools but got {tools!r}")
    for tool in tools:
        if not isinstance(tool, Tool):
            raise ConfigError(f"Expected every tool to be a pyro_lvae.training.Tool but got "
                              f"{tool!r}; wrap a function f(step, rows, vae) in Callback(f)")
    seen: dict[Any, Tool] = {}
    for tool in tools:
        if isinstance(tool, Callback):  # any number of functions
            continue
        key = tool.state_key or type(tool)
        if key in seen:
            raise ConfigError(f"two tools of one kind: {seen[key]!r} and {tool!r}; give one")
        seen[key] = tool
    return list(tools)
