"""The observation models beyond the paper, one behaviour each: sigma-VAE's calibrated sigma,
Student-t, the low-rank covariance and LV-VAE's beta-NLL option."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO

import pyro_lvae as lv
from pyro_lvae import evaluate
from pyro_lvae.observations import observation_from_config
from pyro_lvae.training import ProgressBar

D, K, N = 3, 2, 16


def data(n=N, seed=3):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


# ---- sigma-VAE: the calibrated shared sigma ---------------------------------------------------
def test_calibrated_sigma_is_the_rmse_of_the_training_batch():
    vae = lv.mlp_vae(D, K, lv.CalibratedScale(), hidden=8, blocks=1)
    x = data()
    guide_trace = pyro.poutine.trace(vae.guide).get_trace(x)
    trace = pyro.poutine.trace(pyro.poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    fn = trace.nodes["x"]["fn"]
    loc = fn.mean.detach()
    log_p = fn.log_prob(x)  # gradients on: calibrates
    rmse = (x - loc).pow(2).mean().sqrt()
    assert float(vae.observation.scale) == pytest.approx(float(rmse), rel=1e-6)
    want = dist.Normal(loc, rmse).log_prob(x).sum(-1)
    torch.testing.assert_close(log_p.detach(), want)
    # at sigma = RMSE the reconstruction term is (N D / 2)(log(2 pi MSE) + 1)
    total = -float(log_p.detach().sum())
    assert total == pytest.approx(N * D / 2 * (math.log(2 * math.pi * float(rmse) ** 2) + 1),
                                  rel=1e-5)


def test_calibrated_sigma_is_floored_and_detached():
    obs = lv.CalibratedScale(min_scale=0.05)
    loc = torch.zeros(4, D, requires_grad=True)
    fn = obs(loc, event_dim=1)
    fn.log_prob(torch.zeros(4, D))  # RMSE 0: the floor
    assert float(obs.scale) == pytest.approx(0.05)
    x = torch.randn(4, D)
    loss = -fn.log_prob(x).sum()
    loss.backward()
    # the gradient of the profiled objective: that of a Normal with sigma held at the RMSE
    sigma = (x - loc.detach()).pow(2).mean().sqrt()
    assert torch.allclose(loc.grad, -(x - loc.detach()) / sigma**2)


def test_calibrated_evaluation_uses_the_last_training_sigma_not_the_held_out_data():
    vae = lv.mlp_vae(D, K, lv.CalibratedScale(), hidden=8, blocks=1)
    x = data()
    history = lv.fit(vae, x, steps=5, batch_size=N, seed=0, tools=[ProgressBar(False)])
    kept = float(vae.observation.scale)
    assert history["sigma"][-1] == pytest.approx(kept)  # logged, so a schedule can replay it
    held_out = 10 * data(seed=4)  # far larger errors: its own RMSE would be about 10
    with torch.no_grad():
        z = vae.encode(held_out)
        got = vae.likelihood(z).log_prob(held_out)
        want = dist.Normal(vae.likelihood(z).mean, kept).log_prob(held_out).sum(-1)
    torch.testing.assert_close(got, want)
    evaluate.elbo_parts(vae, held_out)
    assert float(vae.observation.scale) == kept  # evaluation never recalibrates
    assert float(vae.sigma()) == kept


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_calibrated_sigma_is_refused_by_the_jit_elbos():
    vae = lv.mlp_vae(D, K, lv.CalibratedScale(), hidden=8, blocks=1)
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), JitTrace_ELBO())
    # Pyro re-raises the ConfigError as a ValueError with the trace's shapes
    with pytest.raises(ValueError, match=r"compiled \(JIT\) ELBO would freeze"):
        svi.step(data())


def test_calibrated_sigma_reaches_its_optimum_at_once_a_learned_one_by_steps():
    """On the same network and data, after one step sigma-VAE's sigma is the batch RMSE, while
    LS-VAE's learned sigma has moved from its start by one Adam step only."""
    x = 3 * data(n=64)  # a spread of 3 around a decoder mean near 0
    calibrated = lv.mlp_vae(D, K, lv.CalibratedScale(), hidden=8, blocks=1)
    learned = lv.mlp_vae(D, K, lv.LearnedScalarScale(init_scale=1.0), hidden=8, blocks=1)
    for vae in (calibrated, learned):
        lv.fit(vae, x, steps=1, batch_size=64, lr=1e-2, seed=0, tools=[ProgressBar(False)])
    assert float(learned.observation.scale.detach()) == pytest.approx(1.0, abs=0.02)
    assert 2.0 < float(calibrated.observation.scale) < 4.0


# ---- Student-t ------------------------------------------------------------------------------
def test_student_t_log_density_and_learned_degrees_of_freedom():
    obs = lv.StudentTObservation(init_scale=0.5, init_df=4.0, min_df=2.0)
    out = torch.randn(5, 2 * D)
    fn = obs(out, event_dim=1)
    x = torch.randn(5, D)
    loc, raw = out.chunk(2, -1)
    scale = obs.scale_from_raw(raw)
    want = torch.distributions.StudentT(4.0, loc, scale).log_prob(x).sum(-1)
    torch.testing.assert_close(fn.log_prob(x), want)
    names = dict(obs.named_parameters())
    assert set(names) == {"df_unconstrained"}
    with pytest.raises(lv.ConfigError, match="init_df > min_df"):
        lv.StudentTObservation(init_df=2.0, min_df=2.0)


def test_student_t_lowers_its_degrees_of_freedom_on_data_with_outliers():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(256, D, generator=g)
    x[::10] += 20 * torch.randn(26, D, generator=g)  # one point in ten is an outlier
    vae = lv.mlp_vae(D, K, lv.StudentTObservation(init_df=10.0), hidden=16, blocks=1)
    lv.fit(vae, x, steps=150, batch_size=64, lr=1e-2, seed=0, tools=[ProgressBar(False)])
    assert float(vae.observation.df.detach()) < 8.0


# ---- low-rank plus diagonal covariance ------------------------------------------------------
@pytest.mark.parametrize("shape", [(4,), (2, 2, 3)])
def test_low_rank_log_density_matches_the_full_covariance_normal(shape):
    torch.manual_seed(0)
    obs = lv.LowRankNormal(rank=2, init_scale=0.3)
    out = torch.randn((5,) + obs.output_shape(shape), dtype=torch.float64)
    fn = obs(out, event_dim=len(shape))
    assert fn.batch_shape == (5,) and fn.event_shape == shape
    d = math.prod(shape)
    c = shape[0]
    loc = out[:, :c].reshape(5, d)
    diag = obs.scale_from_raw(out[:, c:2 * c]).reshape(5, d)
    factor = out[:, 2 * c:].reshape(5, 2, d).transpose(-1, -2) * (0.3 / math.sqrt(2))
    cov = factor @ factor.transpose(-1, -2) + torch.diag_embed(diag**2)
    x = torch.randn((5,) + shape, dtype=torch.float64)
    want = torch.distributions.MultivariateNormal(loc, cov).log_prob(x.reshape(5, d))
    torch.testing.assert_close(fn.log_prob(x), want)
    assert fn.sample().shape == (5,) + shape
    torch.testing.assert_close(fn.mean, loc.reshape((5,) + shape))


def test_low_rank_memory_is_linear_in_the_pixels():
    """A 3 x 256 x 256 image (D = 196608): a full covariance would need 155 GB; the low-rank
    density and draws need O(D r)."""
    obs = lv.LowRankNormal(rank=4, init_scale=0.1)
    shape = (3, 256, 256)
    out = 0.1 * torch.randn((2,) + obs.output_shape(shape))
    fn = obs(out, event_dim=3)
    log_p = fn.log_prob(torch.zeros((2,) + shape))
    assert torch.isfinite(log_p).all() and fn.sample().shape == (2,) + shape


def test_low_rank_puts_its_variance_along_the_tangent_of_the_data_manifold():
    """Points on the line y = x: what the code leaves uncertain lies along the line, and the
    rank-1 factor takes that direction (1, 1), which a diagonal sigma cannot express."""
    g = torch.Generator().manual_seed(0)
    t = 4 * torch.rand(512, 1, generator=g) - 2
    x = t * torch.tensor([1.0, 1.0]) + 0.01 * torch.randn(512, 2, generator=g)
    vae = lv.mlp_vae(2, 1, lv.LowRankNormal(rank=1, init_scale=0.3), hidden=16, blocks=1)
    lv.fit(vae, x, steps=200, batch_size=128, lr=1e-2, seed=0, tools=[ProgressBar(False)])
    with torch.no_grad():
        fn = vae.likelihood(vae.encode(x[:256]))
    w = fn.cov_factor[..., 0]
    cos = (w[:, 0] + w[:, 1]).abs() / (w.norm(dim=-1) * math.sqrt(2))
    assert float(cos.median()) > 0.99


# ---- beta-NLL ------------------------------------------------------------------------------
@pytest.mark.parametrize("event_dim", [0, 1])
def test_beta_nll_keeps_the_normal_value_and_weights_its_gradient(event_dim):
    loc = torch.randn(4, D, requires_grad=True)
    scale = (0.1 + torch.rand(4, D)).requires_grad_(True)
    x = torch.randn(4, D)
    weighted = lv.observations.BetaNLLNormal(loc, scale, 0.5, event_dim).log_prob(x)
    plain = dist.Normal(loc, scale).log_prob(x)
    assert torch.equal(weighted, plain)
    got = torch.autograd.grad(weighted.sum(), [loc, scale])
    want = torch.autograd.grad(plain.sum(), [loc, scale])
    w = scale.detach()  # sigma^(2 * 0.5)
    if event_dim:  # mean 1 over each point's dimensions
        w = w / w.mean(-1, keepdim=True)
    for g, r in zip(got, want, strict=True):
        torch.testing.assert_close(g, w * r)


def test_beta_nll_reports_the_true_elbo_with_another_gradient_and_fit_trains_on_it():
    torch.manual_seed(0)
    x = data(n=32)
    vae = lv.mlp_vae(D, K, lv.LearnedVectorScale(init_scale=0.5, beta_nll=0.5), hidden=8,
                     blocks=1)
    plain = lv.mlp_vae(D, K, lv.LearnedVectorScale(init_scale=0.5), hidden=8, blocks=1)
    plain.load_state_dict(vae.state_dict())
    losses, grads = [], []
    for model in (vae, plain):
        pyro.set_rng_seed(1)
        loss = Trace_ELBO().differentiable_loss(model.model, model.guide, x)
        losses.append(float(loss.detach()))
        grads.append(torch.autograd.grad(loss, list(model.model.decoder.parameters())))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)  # the value: the ELBO's
    assert any(not torch.allclose(a, b, rtol=1e-2) for a, b in zip(*grads, strict=True))
    history = lv.fit(vae, x, steps=3, batch_size=32, seed=0, tools=[ProgressBar(False)])
    assert history.objective == "DirectELBO"


def test_beta_nll_setting_round_trips_and_old_configs_mean_zero():
    obs = lv.LearnedVectorScale(init_scale=0.5, beta_nll=0.5)
    assert observation_from_config(obs.config()).beta_nll == 0.5
    old = {"kind": "learned-vector", "init_scale": 0.5, "min_scale": 1e-3}
    assert observation_from_config(old).beta_nll == 0.0
    assert lv.LearnedVectorScale(init_scale=0.5).config() == old
    with pytest.raises(lv.ConfigError, match="beta_nll in \\[0, 1\\]"):
        lv.LearnedVectorScale(beta_nll=2.0)


def test_beta_nll_one_gives_the_mean_the_gradient_of_a_scaled_squared_error():
    obs = lv.LearnedVectorScale(init_scale=0.5, beta_nll=1.0)
    out = torch.randn(4, 2 * D, requires_grad=True)
    x = torch.randn(4, D)
    obs(out, event_dim=1).log_prob(x).sum().backward()
    loc, raw = out.detach().chunk(2, -1)
    variance = obs.scale_from_raw(raw) ** 2
    # sigma_i^2 / mean_j sigma_j^2 * (x_i - mu_i) / sigma_i^2
    torch.testing.assert_close(out.grad[:, :D], (x - loc) / variance.mean(-1, keepdim=True))

