"""Training a VAE: :func:`fit` (stochastic variational inference with checkpoints, exact resume
and a divergence guard), as a short loop over small parts: the step and its verified direct
objective (:mod:`.step`), the batches (:mod:`.batches`), checkpoints (:mod:`.checkpoint`), the
divergence guard (:mod:`.guard`) and the :class:`History` (:mod:`.history`); data-parallel
helpers (:mod:`.distributed`) and the TensorBoard callback (:mod:`.tensorboard`, needs the
``tensorboard`` extra)."""

from .checkpoint import CHECKPOINT_NAME, load_checkpoint_info
from .fit import fit, fused_adam, resolve_device
from .history import History

__all__ = ["fit", "History", "fused_adam", "resolve_device", "load_checkpoint_info",
           "CHECKPOINT_NAME"]
