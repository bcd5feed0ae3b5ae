"""The ELBO of a Pyro model/guide pair, split into its reconstruction and latent parts.

:func:`elbo_terms` runs the guide, replays the model on its draws (Pyro's ``trace`` and
``replay`` handlers, as ``Trace_ELBO`` does) and sums the log-densities site by site:

- ``reconstruction = -sum over observed sites of log p(x | z)``
- ``kl = sum over latent sites of [log q(z | x) - log p(z)]`` (the single-draw estimate that
  ``Trace_ELBO`` uses; its expectation is the KL divergence)

so that ``loss = reconstruction + beta * kl`` equals ``Trace_ELBO().differentiable_loss`` under
:func:`~pyro_lvae.scale_latents` ``(beta)`` for reparameterised guides (a parity test pins it).
Sums run over the batch and every dimension (the log-density is the full one, constants and
``log sigma`` included).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from pyro import poutine

__all__ = ["ELBOTerms", "elbo_terms", "likelihood_scale", "scale_stats"]


class ELBOTerms(NamedTuple):
    """Summed over the batch: ``loss = reconstruction + beta * kl``."""

    loss: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    #: the observation site's distribution (for scale summaries)
    likelihood: Any


def elbo_terms(model, guide, *args, beta: float | torch.Tensor = 1.0, **kwargs) -> ELBOTerms:
    """One-draw ELBO terms of ``model``/``guide`` on ``args`` (see module docstring)."""
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
        *args, **kwargs
    )
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    reconstruction = 0.0
    kl = 0.0
    likelihood = None
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            reconstruction = reconstruction - site["log_prob_sum"]
            likelihood = site["fn"]
        else:
            kl = kl + guide_trace.nodes[name]["log_prob_sum"] - site["log_prob_sum"]
    reconstruction = torch.as_tensor(reconstruction)
    kl = torch.as_tensor(kl)
    return ELBOTerms(reconstruction + beta * kl, reconstruction, kl, likelihood)


def likelihood_scale(likelihood: Any) -> torch.Tensor | None:
    """The ``scale`` tensor of a (possibly ``Independent``-wrapped) Normal-family likelihood,
    broadcast to its batch and event shape; ``None`` for families without a scale."""
    base = likelihood
    while hasattr(base, "base_dist"):
        base = base.base_dist
    scale = getattr(base, "scale", None)
    return scale if isinstance(scale, torch.Tensor) else None


def scale_stats(likelihood: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(mean, min, max)`` of the scale of a Normal-family likelihood, else ``None``."""
    scale = likelihood_scale(likelihood)
    if scale is None:
        return None
    scale = scale.detach()
    return scale.mean(), scale.min(), scale.max()
