"""Training a VAE: :func:`fit` (stochastic variational inference with checkpoints, exact resume
and a divergence guard), its :class:`History`, data-parallel helpers (:mod:`.distributed`) and
the TensorBoard callback (:mod:`.tensorboard`, needs the ``tensorboard`` extra)."""

from .fit import CHECKPOINT_NAME, History, fit, fused_adam, load_checkpoint_info, resolve_device

__all__ = ["fit", "History", "fused_adam", "resolve_device", "load_checkpoint_info",
           "CHECKPOINT_NAME"]
