"""The objective of a Pyro model/guide pair, split into its reconstruction and latent parts.

Pyro's ELBO is the definition. :func:`trace_parts` reads the parts off the traces of one step
(the traces the ELBO itself ran, recorded by a ``poutine.trace`` nested inside it, so their values
and scales are the ELBO's own):

- ``reconstruction = -sum over observed sites of log p(x | z)``
- ``kl = sum over latent sites of [log q(z | x) - log p(z)] / beta`` (the single-draw estimate
  that ``Trace_ELBO`` uses; its expectation is the KL divergence), or the analytic KL where
  ``TraceMeanField_ELBO`` uses it

so that ``loss = reconstruction + beta * kl`` is the ELBO's loss under
:func:`~pyro_lvae.annealed` / :func:`~pyro_lvae.weight_latents` ``(beta)``. Sums run over the batch
and every dimension (the full log-density, constants and ``log sigma`` included); scales set by
handlers outside (``poutine.scale``) are part of both terms.

:func:`elbo_terms` runs the guide, replays the model on its draws (as ``Trace_ELBO`` does) and
returns those parts. :class:`~pyro_lvae.DirectELBO` computes them for pyro-lvae's own model and
guide without Pyro's handler stack (the same ``rsample`` call, so the same random numbers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import kl_divergence

__all__ = ["ELBOTerms", "elbo_terms", "trace_parts", "likelihood_scale", "scale_stats"]


class ELBOTerms(NamedTuple):
    """Summed over the batch: ``loss = reconstruction + beta * kl``."""

    loss: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    #: the observation site's distribution (for scale summaries); None where unknown
    likelihood: Any


def _site_log_prob(site: dict[str, Any], weight: Any) -> torch.Tensor:
    log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    return scale_and_mask(log_p, weight, site["mask"]).sum()


def _latent_weight(site: dict[str, Any], beta: float) -> Any:
    """The site's scale without beta (outer handlers' scales kept); beta 0: unscaled."""
    return site["scale"] / beta if beta != 0 else 1.0


def _analytic_kl(guide_site: dict[str, Any], model_site: dict[str, Any],
                 beta: float) -> torch.Tensor | None:
    try:
        kl = kl_divergence(guide_site["fn"], model_site["fn"])
    except NotImplementedError:
        return None
    kl = scale_and_mask(kl, _latent_weight(guide_site, beta), guide_site["mask"])
    if torch.is_tensor(kl):
        return kl.sum()
    return torch.as_tensor(kl * torch.Size(guide_site["fn"].batch_shape).numel())


def trace_parts(model_traces: Sequence[Trace], guide_traces: Sequence[Trace],
                beta: float = 1.0, analytic_kl: bool = False,
                particles: int | None = None) -> ELBOTerms:
    """The parts of an ELBO's loss from its traces, averaged over particles.

    :param model_traces: the model's trace of each particle (values replayed from the guide)
    :param guide_traces: the guide's trace of each particle
    :param float beta: the weight the latent sites carry in the traces
    :param bool analytic_kl: use ``KL(q || p)`` in closed form where it is known (as
        ``TraceMeanField_ELBO`` does) instead of the one-draw estimate
    :param int particles: the number of particles the traces hold (default: one per trace;
        an ELBO with ``vectorize_particles=True`` runs all of them in one trace)
    """
    reconstruction: Any = 0.0
    kl: Any = 0.0
    likelihood = None
    for model_trace, guide_trace in zip(model_traces, guide_traces, strict=True):
        model_trace = prune_subsample_sites(model_trace)
        guide_trace = prune_subsample_sites(guide_trace)
        done = set()
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                reconstruction = reconstruction - _site_log_prob(site, site["scale"])
                if likelihood is None or name == "x":
                    likelihood = site["fn"]
                continue
            guide_site = guide_trace.nodes.get(name)
            if analytic_kl and guide_site is not None:
                closed = _analytic_kl(guide_site, site, beta)
                if closed is not None:
                    kl = kl + closed
                    done.add(name)
                    continue
            kl = kl - _site_log_prob(site, _latent_weight(site, beta))
        for name, site in guide_trace.nodes.items():
            if site["type"] != "sample" or name in done:
                continue
            if site["is_observed"]:  # enters the loss unweighted, as -log q
                reconstruction = reconstruction + _site_log_prob(site, site["scale"])
            else:
                kl = kl + _site_log_prob(site, _latent_weight(site, beta))
    particles = particles or max(len(model_traces), 1)
    reconstruction = torch.as_tensor(reconstruction) / particles
    kl = torch.as_tensor(kl) / particles
    return ELBOTerms(reconstruction + beta * kl, reconstruction, kl, likelihood)


def elbo_terms(model, guide, *args, beta: float | torch.Tensor = 1.0, **kwargs) -> ELBOTerms:
    """One-draw ELBO terms of ``model``/``guide`` on ``args`` (see the module docstring)."""
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
        *args, **kwargs
    )
    terms = trace_parts([model_trace], [guide_trace])
    return ELBOTerms(terms.reconstruction + beta * terms.kl, terms.reconstruction, terms.kl,
                     terms.likelihood)


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
