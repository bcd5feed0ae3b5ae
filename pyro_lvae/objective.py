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

:func:`direct_elbo_terms` computes the same terms for pyro-lvae's own model and guide without
Pyro's handler stack: the encoder gives ``q(z | x)``, one reparameterised draw (through the same
``rsample`` call Pyro makes, so the same random numbers), the decoder gives ``p(x | z)``. It is
:func:`pyro_lvae.fit`'s default step; parity tests pin its loss and gradients to
``Trace_ELBO().differentiable_loss`` on the same inputs and seed.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from pyro import poutine

__all__ = ["ELBOTerms", "elbo_terms", "direct_elbo_terms", "supports_direct", "likelihood_scale",
           "scale_stats"]


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


def supports_direct(vae: Any) -> bool:
    """Whether :func:`direct_elbo_terms` computes ``vae``'s ELBO: pyro-lvae's own model and
    guide classes (a subclass may add sites, so it goes through Pyro)."""
    from .vae import Guide, Model

    return type(vae.model) is Model and type(vae.guide) is Guide


def direct_elbo_terms(vae: Any, x: torch.Tensor, beta: float | torch.Tensor = 1.0) -> ELBOTerms:
    """The terms of :func:`elbo_terms` for a pyro-lvae VAE, without Pyro's tracing.

    The draw ``z = loc + eps * scale`` takes ``eps`` exactly as ``Normal.rsample`` does, so a
    seed gives the same ``z`` as Pyro's guide. With ``eps = (z - loc) / scale``,
    ``log q(z|x) - log p(z) = sum(z^2 / 2 - eps^2 / 2 - log scale + log prior_scale)`` for the
    standard Normal prior.
    """
    model = vae.model
    loc, scale = vae.guide.posterior(x)
    eps = torch.empty_like(loc).normal_()
    z = loc + eps * scale
    likelihood = model.likelihood(z)
    reconstruction = -likelihood.log_prob(x).sum()
    prior_eps = (z - model.prior_loc) / model.prior_scale
    kl = (0.5 * prior_eps**2 - 0.5 * eps**2 - scale.log() + model.prior_scale.log()).sum()
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
