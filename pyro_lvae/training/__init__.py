"""Training a VAE: :func:`fit` (stochastic variational inference with checkpoints, exact resume
and a divergence guard), as a short loop over small parts: the step and its verified direct
objective (:mod:`.step`), the batches (:mod:`.batches`), checkpoints (:mod:`.checkpoint`), the
divergence guard (:mod:`.guard`) and the :class:`History` (:mod:`.history`); the optional tools,
each off by default and resumable exactly (:mod:`.tools`): learning-rate schedules
(:mod:`.schedules`), averaged weights (:mod:`.averaging`), the held-out ELBO and its best
checkpoint (:mod:`.heldout`), and gradient-norm clipping (in the step); data-parallel helpers
(:mod:`.distributed`) and the TensorBoard callback (:mod:`.tensorboard`, needs the
``tensorboard`` extra)."""

from .averaging import WeightAverage, load_averaged, parse_average
from .checkpoint import BEST_NAME, CHECKPOINT_NAME, load_checkpoint_info
from .fit import fit, fused_adam, resolve_device
from .history import History
from .schedules import LR_SCHEDULES, make_scheduler

__all__ = ["fit", "History", "fused_adam", "resolve_device", "load_checkpoint_info",
           "CHECKPOINT_NAME", "BEST_NAME", "WeightAverage", "parse_average", "load_averaged",
           "LR_SCHEDULES", "make_scheduler"]
