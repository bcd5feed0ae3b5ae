"""weight_latents: weights latent sites in model and guide, never observed ones; schedules."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import kl_divergence

import pyro_lvae as lv
from pyro_lvae.annealing import parse_schedule


def plain_model(x):
    """A hand-written Pyro model (not ours): a global and a local latent, one observed site."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        h = pyro.sample("h", dist.Normal(mu, 1.0))
        pyro.sample("obs", dist.Normal(h, 0.5), obs=x)


def plain_guide(x):
    m = pyro.param("m", torch.tensor(0.1))
    loc = pyro.param("loc", torch.zeros(x.shape[0]))
    pyro.sample("mu", dist.Normal(m, 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("h", dist.Normal(loc, 0.7))


def test_annealing_leaves_observed_site_unscaled_and_scales_latents_on_both_sides():
    x = torch.randn(5)
    with lv.weight_latents(0.3):
        guide_tr = poutine.trace(plain_guide).get_trace(x)
        model_tr = poutine.trace(poutine.replay(plain_model, trace=guide_tr)).get_trace(x)
    assert model_tr.nodes["obs"]["scale"] == 1.0
    for name in ("mu", "h"):
        assert model_tr.nodes[name]["scale"] == pytest.approx(0.3)
        assert guide_tr.nodes[name]["scale"] == pytest.approx(0.3)


def test_hand_written_svi_step_changes_only_the_latent_contribution():
    x = torch.randn(5)
    elbo = Trace_ELBO()

    def parts(beta):
        pyro.set_rng_seed(1)
        with lv.weight_latents(beta):
            total = elbo.loss(plain_model, plain_guide, x)
        pyro.set_rng_seed(1)
        guide_tr = poutine.trace(plain_guide).get_trace(x)
        model_tr = poutine.trace(poutine.replay(plain_model, trace=guide_tr)).get_trace(x)
        obs = -float(model_tr.nodes["obs"]["fn"].log_prob(x).sum().detach())
        return total, obs

    full, obs1 = parts(1.0)
    scaled, obs3 = parts(0.3)
    zero, obs0 = parts(0.0)
    assert obs1 == obs3 == obs0
    # loss = obs + beta * latent: the latent part scales linearly, the observed part is fixed
    latent = full - obs1
    assert scaled == pytest.approx(obs1 + 0.3 * latent, rel=1e-5)
    assert zero == pytest.approx(obs1, rel=1e-5)


def test_with_weight_latents_around_svi_step_uses_the_weighted_objective():
    x = torch.randn(5)
    svi = SVI(plain_model, plain_guide, pyro.optim.SGD({"lr": 0.0}), Trace_ELBO())
    svi.step(x)  # create params
    pyro.set_rng_seed(3)
    with lv.weight_latents(0.25):
        stepped = svi.step(x)
    pyro.set_rng_seed(3)
    with lv.weight_latents(0.25):
        direct = Trace_ELBO().loss(plain_model, plain_guide, x)
    assert stepped == pytest.approx(direct)


def tiny_vae():
    return lv.mlp_vae(3, 2, lv.FixedScale(0.7), hidden=8, blocks=1)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0, torch.tensor(0.3)])
def test_trace_elbo_and_meanfield_agree_under_beta(beta):
    vae = tiny_vae()
    x = torch.randn(6, 3)
    b = float(beta)
    pyro.set_rng_seed(4)
    with lv.weight_latents(beta):
        trace = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(4)
    with lv.weight_latents(beta):
        meanfield = TraceMeanField_ELBO().differentiable_loss(vae.model, vae.guide, x)
    # same z draws: they differ only by beta * (Monte Carlo KL - analytic KL)
    pyro.set_rng_seed(4)
    terms = lv.objective.elbo_terms(vae.model, vae.guide, x)
    loc, scale = vae.guide.posterior(x)
    q = dist.Normal(loc, scale).to_event(1)
    p = dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1)
    analytic = kl_divergence(q, p).sum()
    gap = float((trace - meanfield).detach())
    assert gap == pytest.approx(b * float((terms.kl - analytic).detach()), abs=1e-4)
    # and in expectation over draws they agree (the Monte Carlo KL is unbiased)
    many = {}
    for name, elbo in (("trace", Trace_ELBO), ("meanfield", TraceMeanField_ELBO)):
        pyro.set_rng_seed(5)
        with lv.weight_latents(beta):
            many[name] = elbo(num_particles=4000, vectorize_particles=True).loss(
                vae.model, vae.guide, x)
    assert many["trace"] == pytest.approx(many["meanfield"], abs=0.15)


def test_beta_equals_sigma_times_sqrt_beta_for_a_fixed_sigma_model():
    """beta * L(sigma * sqrt(beta)) = L_beta(sigma) + constant, same gradients (up to beta)."""
    torch.manual_seed(0)
    sigma, beta, d, n = 0.8, 0.25, 3, 6
    vae = lv.mlp_vae(d, 2, lv.FixedScale(sigma), hidden=8, blocks=1)
    other = lv.mlp_vae(d, 2, lv.FixedScale(sigma * math.sqrt(beta)), hidden=8, blocks=1)
    weights = {k: v for k, v in vae.state_dict().items() if k != "model.observation.scale"}
    other.load_state_dict(weights, strict=False)
    assert float(other.observation.scale) == pytest.approx(sigma * math.sqrt(beta))
    x = torch.randn(n, d)

    def loss_and_grads(v, scale, b):
        pyro.set_rng_seed(7)
        v.zero_grad()
        with lv.weight_latents(b):
            loss = scale * Trace_ELBO().differentiable_loss(v.model, v.guide, x)
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in v.parameters()]

    l1, g1 = loss_and_grads(vae, 1.0, beta)
    l2, g2 = loss_and_grads(other, beta, 1.0)
    log2pi = math.log(2 * math.pi)
    const = n * d * (beta * (math.log(sigma * math.sqrt(beta)) + 0.5 * log2pi)
                     - (math.log(sigma) + 0.5 * log2pi))
    assert l2 == pytest.approx(l1 + const, rel=1e-5)
    for a, b in zip(g1, g2, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_beta_zero_has_its_own_path_and_stays_finite():
    vae = tiny_vae()
    x = torch.randn(4, 3)
    with lv.weight_latents(0.0):
        loss = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
    loss.backward()
    assert torch.isfinite(loss)
    with pytest.raises(ValueError):
        poutine.scale(scale=0.0)  # why the own path exists


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "x", torch.ones(2)])
def test_bad_beta_is_refused(bad):
    with pytest.raises(lv.ConfigError, match="beta"):
        lv.weight_latents(bad)


def test_schedules_values():
    assert lv.ConstantBeta(0.4)(10) == 0.4
    warm = lv.LinearWarmup(100)
    assert [warm(s) for s in (0, 50, 100, 500)] == pytest.approx([0.0, 0.5, 1.0, 1.0])
    half = lv.LinearWarmup(100, 0.5, 1.0)
    assert half(50) == pytest.approx(0.75)
    sig = lv.SigmoidWarmup(600)
    assert sig(0) < 0.01 and sig(600) == pytest.approx(0.5) and sig(1200) > 0.99
    cyc = lv.CyclicalWarmup(100, ramp=0.5)
    assert [cyc(s) for s in (0, 25, 50, 99, 100, 125)] == pytest.approx(
        [0.0, 0.5, 1.0, 1.0, 0.0, 0.5])


@pytest.mark.parametrize("schedule", [
    lv.ConstantBeta(0.5), lv.LinearWarmup(1000, 0.2, 1.0), lv.SigmoidWarmup(300, 40.0),
    lv.CyclicalWarmup(200, 0.25, 0.9)])
def test_schedule_spec_round_trips_through_the_parser(schedule):
    again = parse_schedule(schedule.spec())
    assert [again(s) for s in range(0, 2000, 37)] == pytest.approx(
        [schedule(s) for s in range(0, 2000, 37)])


@pytest.mark.parametrize("text, message", [
    ("warmup:100", "unknown beta schedule"),
    ("linear:abc", "non-numeric"),
    ("linear", "wrong number"),
    ("linear:0", "steps"),
    ("-1", "beta >= 0"),
])
def test_bad_schedule_strings(text, message):
    with pytest.raises(lv.ConfigError, match=message):
        parse_schedule(text)
