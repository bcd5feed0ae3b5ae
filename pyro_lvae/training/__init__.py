"""Training a VAE: :func:`fit` (stochastic variational inference with checkpoints, exact resume
and a divergence guard) as a short loop over small parts: the step (:mod:`.step`), the batches
(:mod:`.batches`), checkpoints (:mod:`.checkpoint`), the divergence guard (:mod:`.guard`) and
the :class:`History` (:mod:`.history`). Everything optional is a training tool
(:mod:`.tools`), an object with hooks and its own state in the checkpoint, passed as
``fit(..., tools=[...])``: :class:`Checks`, :class:`Checkpoints`, :class:`ProgressBar`,
:class:`Callback`, :class:`Validation`, :class:`ClipGradNorm`, :class:`LRSchedule`
(:mod:`.schedules`), :class:`AveragedWeights` (:mod:`.averaging`), :class:`HeldOutEvaluation`
(:mod:`.heldout`) and ``TensorBoardCallback`` (:mod:`.tensorboard`, needs the ``tensorboard``
extra); data-parallel helpers are in :mod:`.distributed`."""

from .averaging import AveragedWeights, WeightAverage, load_averaged, parse_average
from .checkpoint import BEST_NAME, CHECKPOINT_NAME, load_checkpoint_info
from .fit import fit, fused_adam, resolve_device
from .heldout import HeldOutEvaluation
from .history import History
from .schedules import LR_SCHEDULES, LRSchedule, make_scheduler
from .tools import (
    Callback,
    Checkpoints,
    Checks,
    ClipGradNorm,
    ProgressBar,
    Run,
    Tool,
    Validation,
)

__all__ = ["fit", "History", "fused_adam", "resolve_device", "load_checkpoint_info",
           "CHECKPOINT_NAME", "BEST_NAME", "WeightAverage", "parse_average", "load_averaged",
           "LR_SCHEDULES", "make_scheduler", "Tool", "Run", "Checks", "Checkpoints",
           "ProgressBar", "Callback", "Validation", "ClipGradNorm", "LRSchedule",
           "AveragedWeights", "HeldOutEvaluation"]
