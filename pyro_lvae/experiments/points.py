"""The artificial 2D problem end to end: variants, held-out summaries and figures.

Shared by ``pyro-lvae train``, ``pyro-lvae demo`` and the examples.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import evaluate
from ..datasets import MANIFOLD_REGIONS, manifold2d, manifold2d_noise_profile
from ..objective import likelihood_scale
from ..vae import VAE

__all__ = ["EVAL_SEED", "held_out", "summarize", "figure_row"]

#: seed of the held-out points every run is evaluated on (the same for every variant)
EVAL_SEED = 20200305


def held_out(n: int = 5000) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` held-out points of the artificial problem and their regions (fixed seed)."""
    return manifold2d(n, torch.Generator().manual_seed(EVAL_SEED), return_region=True)


@torch.no_grad()
def _sigma_at_data(vae: VAE, x: torch.Tensor) -> torch.Tensor | None:
    """The model's sigma (mean over dimensions) at each point's posterior mean."""
    scale = likelihood_scale(vae.likelihood(vae.encode(x)))
    return None if scale is None else scale.expand_as(x).mean(-1)


def summarize(vae: VAE, x: torch.Tensor, region: torch.Tensor,
              num_particles: int = 4) -> dict[str, Any]:
    """Held-out ELBO (per point, nats) with its parts, the latent diagnostics
    (:func:`~pyro_lvae.evaluate.latent_diagnostics`: active units, mutual information,
    marginal KL, the prior's hole mass), and sigma overall and per noise region."""
    x, region = x.to(vae.device), region.to(vae.device)
    summary: dict[str, Any] = dict(evaluate.elbo_parts(vae, x, num_particles=num_particles))
    summary.update(evaluate.latent_diagnostics(vae, x))
    sigma = _sigma_at_data(vae, x)
    if sigma is not None:
        summary["sigma"] = float(sigma.mean())
        for i, name in enumerate(MANIFOLD_REGIONS):
            summary[f"sigma_{name}"] = float(sigma[region == i].mean())
    return summary


@torch.no_grad()
def figure_row(vae: VAE, title: str, x: torch.Tensor, n_generate: int = 2000) -> dict[str, Any]:
    """One row of :func:`~pyro_lvae.experiments.plots.points_figure` for ``vae`` on held-out
    ``x``."""
    x = x.to(vae.device)
    z = vae.prior().sample((n_generate,))  # the prior in use
    px = vae.likelihood(z)
    row: dict[str, Any] = {
        "title": title,
        "data": x.cpu(),
        "reconstructions": vae.reconstruct(x).cpu(),
        "samples": px.sample().cpu(),
        "means": px.mean.cpu(),
    }
    sigma = _sigma_at_data(vae, x)
    if sigma is not None:
        row["sigma_along"] = (x[:, 0].cpu(), sigma.cpu())
        row["noise_along"] = manifold2d_noise_profile()
    return row
