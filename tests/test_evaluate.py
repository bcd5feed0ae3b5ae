"""Evaluation: IWAE against an exact log p(x), active units, KL per dimension, sigma."""

import math

import pytest
import torch
from torch import nn

import pyro_lvae as lv
from pyro_lvae import evaluate

SIGMA = 0.5
W = torch.tensor([[1.0, 0.0], [0.0, 0.7], [0.0, 0.0]], dtype=torch.float64)  # orthogonal columns
B = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)


class LinearEncoder(nn.Module):
    """q(z | x) = N(A (x - b), diag(scale^2)) with fixed A and scale."""

    def __init__(self, A, scale):
        super().__init__()
        self.register_buffer("A", A)
        self.register_buffer("scale", scale)

    def forward(self, x):
        loc = (x - B.to(x)) @ self.A.T
        return loc, self.scale.expand(loc.shape)


def linear_vae(encoder_scale_factor=1.0, encoder_shift=1.0):
    """A linear-Gaussian VAE; with factors 1 the encoder is the exact posterior."""
    post_var = 1.0 / (1.0 + (W**2).sum(0) / SIGMA**2)          # diagonal since W'W is
    A = (post_var[:, None] * W.T / SIGMA**2) * encoder_shift
    decoder = nn.Linear(2, 3).double()
    with torch.no_grad():
        decoder.weight.copy_(W)
        decoder.bias.copy_(B)
    encoder = LinearEncoder(A, post_var.sqrt() * encoder_scale_factor)
    vae = lv.VAE(encoder, decoder, 2, lv.FixedScale(SIGMA), data_shape=3).double()
    return vae


def data(n=300):
    # seeds unlike the fixture's global seed (0): otherwise the guide's noise would replay the
    # very draws that made the data
    z = torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(101))
    noise = torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(102))
    return z @ W.T + B + SIGMA * noise


def exact_log_p(x):
    cov = W @ W.T + SIGMA**2 * torch.eye(3, dtype=torch.float64)
    return torch.distributions.MultivariateNormal(B, cov).log_prob(x).mean().item()


def test_with_the_exact_posterior_every_bound_equals_log_p():
    vae, x = linear_vae(), data()
    log_p = exact_log_p(x)
    assert evaluate.elbo_parts(vae, x)["elbo"] == pytest.approx(log_p, abs=1e-9)
    assert evaluate.iwae(vae, x, num_samples=1) == pytest.approx(log_p, abs=1e-9)
    assert evaluate.iwae(vae, x, num_samples=1000, chunk_size=64) == pytest.approx(log_p,
                                                                                 abs=1e-9)


def test_iwae_rises_with_k_towards_log_p_for_a_poor_encoder():
    vae, x = linear_vae(encoder_scale_factor=2.0, encoder_shift=0.6), data()
    log_p = exact_log_p(x)
    elbo = evaluate.elbo_parts(vae, x, num_particles=50)["elbo"]
    bounds = [evaluate.iwae(vae, x, num_samples=k, chunk_size=200) for k in (10, 100, 3000)]
    assert elbo < bounds[0] < bounds[1] < bounds[2] <= log_p + 1e-3
    assert log_p - bounds[2] < 0.05 * (log_p - elbo)  # closes at least 95% of the gap


def test_iwae_is_not_below_the_elbo_on_a_trained_model():
    torch.manual_seed(0)
    vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=16, blocks=1)
    lv.fit(vae, lv.datasets.manifold2d, steps=200, lr=3e-3, seed=0)
    x = lv.datasets.manifold2d(400, torch.Generator().manual_seed(2))
    per_point = evaluate.iwae(vae, x, num_samples=500, return_per_point=True)
    elbo = evaluate.elbo_parts(vae, x, num_particles=20)["elbo"]
    stderr = per_point.std().item() / len(per_point) ** 0.5
    assert per_point.mean().item() >= elbo - 3 * stderr
    assert per_point.shape == (400,)


def test_active_units_count_the_dimensions_that_vary():
    class Encoder(nn.Module):
        def forward(self, x):
            loc = torch.stack([x[:, 0], torch.full_like(x[:, 0], 0.5), 1e-3 * x[:, 1]], -1)
            return loc, torch.ones_like(loc)

    vae = lv.VAE(Encoder(), nn.Linear(3, 2), 3, lv.FixedScale(1.0), data_shape=2)
    x = torch.randn(500, 2)
    count, variance = evaluate.active_units(vae, x)
    assert count == 1
    assert variance[0] > 0.5 and variance[1] == 0 and variance[2] < 1e-5


def test_kl_per_dim_is_the_analytic_value():
    class Encoder(nn.Module):
        def forward(self, x):
            loc = torch.stack([torch.ones_like(x[:, 0]), torch.zeros_like(x[:, 0])], -1)
            scale = torch.stack([torch.ones_like(x[:, 0]), 0.5 * torch.ones_like(x[:, 0])], -1)
            return loc, scale

    vae = lv.VAE(Encoder(), nn.Linear(2, 2), 2, lv.FixedScale(1.0), data_shape=2)
    kl = evaluate.kl_per_dim(vae, torch.randn(10, 2))
    # KL(N(1, 1) || N(0, 1)) = 0.5; KL(N(0, 0.25) || N(0, 1)) = 0.5 (0.25 - 1) - log 0.5
    assert kl.tolist() == pytest.approx([0.5, 0.5 * (0.25 - 1) - math.log(0.5)])


def test_scale_summary_per_dimension_and_group():
    vae = lv.mlp_vae(2, 2, lv.LearnedVectorScale(), hidden=8, blocks=1)
    x = torch.randn(50, 2)
    vae.initialize(x)
    groups = torch.arange(50) % 3
    s = evaluate.scale_summary(vae, x, groups)
    assert s["sigma_per_dim"].shape == (2,)
    assert set(s["sigma_per_group"]) == {0, 1, 2}
    fixed_vae = lv.mlp_vae(2, 2, lv.FixedScale(0.3), hidden=8, blocks=1)
    fixed_vae.initialize(x)
    fixed = evaluate.scale_summary(fixed_vae, x)
    assert fixed["sigma"] == pytest.approx(0.3)
    assert "share_at_floor" not in fixed
    assert evaluate.scale_summary(fixed_vae, x, floor=0.28)["share_at_floor"] == 1.0
    assert evaluate.scale_summary(fixed_vae, x, floor=0.1)["share_at_floor"] == 0.0


def test_summary_has_every_number():
    vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=8, blocks=1)
    x = torch.randn(40, 2)
    vae.initialize(x)
    s = evaluate.summary(vae, x, iwae_samples=20)
    for key in ("elbo", "reconstruction", "kl", "iwae", "active_units", "kl_per_dim", "sigma"):
        assert key in s


@pytest.mark.parametrize("kwargs", [{"num_samples": 0}, {"chunk_size": 0}, {"batch_size": -1}])
def test_iwae_bad_arguments(kwargs):
    with pytest.raises(lv.ConfigError):
        evaluate.iwae(linear_vae(), data(10), **kwargs)
