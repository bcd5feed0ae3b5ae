"""The latent diagnostics on constructed encoders whose answers are known: the ELBO-surgery split
(mutual information and marginal KL), the prior's hole mass, the aggregated density."""

import math

import pytest
import torch
from torch import nn

import pyro_lvae as lv
from pyro_lvae import evaluate


class LinearEncoder(nn.Module):
    """``q(z | x) = N(a x + b, s^2)`` for one-dimensional data and latent."""

    def __init__(self, a, s, b=0.0):
        super().__init__()
        self.a, self.s, self.b = a, s, b
        self.dummy = nn.Parameter(torch.zeros(()))  # a VAE needs a parameter

    def forward(self, x):
        loc = self.a * x + self.b + 0 * self.dummy
        return loc, torch.full_like(loc, self.s)


def constructed(a, s, b=0.0, prior=None):
    return lv.VAE(LinearEncoder(a, s, b), nn.Linear(1, 1), 1, lv.FixedScale(1.0),
                  data_shape=1, prior=prior)


def normal(n, seed=0):
    """``n`` draws of N(0, 1), shifted and scaled to mean 0 and variance 1 exactly (so the
    aggregated posterior's moments are the population's)."""
    x = torch.randn(n, 1, generator=torch.Generator().manual_seed(seed))
    return (x - x.mean()) / x.std(unbiased=False)


def test_mutual_information_of_a_gaussian_channel():
    """x ~ N(0, 1), q(z|x) = N(r x, 1 - r^2): z ~ N(0, 1) and I(x; z) = -log(1 - r^2) / 2."""
    r = 0.8
    out = evaluate.latent_surgery(constructed(r, math.sqrt(1 - r**2)), normal(2000), draws=10)
    assert out["mutual_information"] == pytest.approx(-0.5 * math.log(1 - r**2), abs=0.03)
    assert abs(out["marginal_kl"]) < 0.03
    assert out["mi_bound"] == pytest.approx(math.log(2000)) and out["points"] == 2000


def test_marginal_kl_of_a_wider_aggregate():
    """x ~ N(0, 4), q(z|x) = N(x, 0.25): q(z) = N(0, 4.25), KL(q(z) || N(0, 1)) in closed form."""
    v = 4.25
    out = evaluate.latent_surgery(constructed(1.0, 0.5), 2 * normal(2000), draws=10)
    assert out["marginal_kl"] == pytest.approx(0.5 * (v - 1 - math.log(v)), abs=0.03)


def test_surgery_adds_up_to_the_analytic_average_kl():
    vae = constructed(1.0, 0.5)
    x = 2 * normal(1000, seed=1)
    out = evaluate.latent_surgery(vae, x, draws=20)
    assert out["kl"] == pytest.approx(out["mutual_information"] + out["marginal_kl"], abs=1e-9)
    assert out["kl"] == pytest.approx(vae.kl_per_point(x), abs=0.02)


def test_an_encoder_that_ignores_x_carries_no_information_and_leaves_no_hole():
    vae = constructed(0.0, 1.0)  # q(z|x) = N(0, 1) = p(z) for every x
    x = normal(2000)
    out = evaluate.latent_surgery(vae, x)
    assert abs(out["mutual_information"]) < 1e-6 and abs(out["marginal_kl"]) < 1e-6
    hole = evaluate.prior_hole(vae, x, prior_samples=20000)
    assert hole["hole_mass"] == pytest.approx(0.05, abs=0.01)


def test_no_hole_when_the_aggregated_posterior_is_the_prior():
    hole = evaluate.prior_hole(constructed(1.0, 0.2), normal(4000), prior_samples=20000)
    assert hole["hole_mass"] == pytest.approx(0.05, abs=0.02)
    assert hole["hole_quantile"] == 0.05


def test_half_the_prior_is_a_hole_when_the_posterior_covers_half():
    """Posterior means on z > 0 only (x = |N(0, 1)|): the prior's z < 0 half is a hole, plus
    the prior's share (quantile / 2 = 0.025) of the posterior's own thin tail, less the strip
    just below 0 that the posteriors' own width (0.05) covers (about 0.02): about 0.505."""
    x = normal(4000).abs()
    hole = evaluate.prior_hole(constructed(1.0, 0.05), x, prior_samples=20000)
    assert hole["hole_mass"] == pytest.approx(0.505, abs=0.03)
    far = evaluate.prior_hole(constructed(1.0, 0.05, b=6.0), x, prior_samples=5000)
    assert far["hole_mass"] > 0.99  # the posterior mass lies outside the prior's


def test_aggregate_log_density_is_the_mixture_density():
    loc = torch.tensor([[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]])
    scale = torch.tensor([[1.0, 0.5], [0.3, 2.0], [1.0, 1.0]])
    z = torch.randn(7, 2)
    parts = torch.distributions.Normal(loc, scale).log_prob(z[:, None]).sum(-1)
    expected = torch.logsumexp(parts, 1) - math.log(3)
    got = evaluate.aggregate_log_density(loc, scale, z, chunk=3)
    assert torch.allclose(got, expected.double(), atol=1e-6)
    z3 = torch.randn(3, 2)
    parts = torch.distributions.Normal(loc, scale).log_prob(z3[:, None]).sum(-1)
    parts[torch.arange(3), torch.arange(3)] = -math.inf
    left_out = evaluate.aggregate_log_density(loc, scale, z3, leave_out=True)
    assert torch.allclose(left_out, (torch.logsumexp(parts, 1) - math.log(2)).double(),
                          atol=1e-6)


def test_diagnostics_draw_noise_unlike_data_drawn_with_a_small_seed():
    """With the data's own seed as the noise's, every draw z_n = x_n + s x_n: a wider aggregate
    than the true one."""
    x = normal(2000, seed=0)
    own = evaluate.latent_surgery(constructed(1.0, 0.5), 2 * x, seed=0)["marginal_kl"]
    default = evaluate.latent_surgery(constructed(1.0, 0.5), 2 * x)["marginal_kl"]
    assert abs(default - 0.9015) < 0.03 < abs(own - 0.9015)


def test_diagnostics_run_for_every_prior_and_leave_the_random_stream_alone():
    x = lv.datasets.manifold2d(200, torch.Generator().manual_seed(0))
    for prior in (lv.StandardNormal(), lv.MixturePrior(3), lv.VampPrior(3),
                  lv.FlowPrior(layers=1, hidden=8)):
        vae = lv.mlp_vae(2, 2, lv.FixedScale(0.5), hidden=8, blocks=1, prior=prior)
        vae.initialize(x)
        state = torch.get_rng_state()
        d = evaluate.latent_diagnostics(vae, x)
        assert torch.equal(torch.get_rng_state(), state)
        assert 0 <= d["hole_mass"] <= 1 and d["mutual_information"] <= d["mi_bound"] + 1e-9
        assert d["surgery_kl"] == pytest.approx(d["mutual_information"] + d["marginal_kl"])
    with pytest.raises(lv.ConfigError, match="latent_surgery"):
        evaluate.kl_per_dim(vae, x)
    assert "kl_per_dim" not in evaluate.summary(vae, x, iwae_samples=4)
