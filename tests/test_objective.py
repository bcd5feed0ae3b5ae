"""fit's loss is Pyro's objective: DirectELBO where it applies (Trace_ELBO's objective without
tracing), Trace_ELBO otherwise (extra sites, handlers around fit), with parts that add up on
every path."""

import copy
import logging

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import JitTrace_ELBO, RenyiELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.nn import PyroModule, PyroParam, PyroSample

import pyro_lvae as lv
from pyro_lvae.direct_elbo import direct_elbo_terms
from pyro_lvae.nets import GaussianEncoder, ResidualMLP
from pyro_lvae.objective import elbo_terms
from pyro_lvae.training import Checks
from pyro_lvae.training.batches import data_seed
from pyro_lvae.training.step import DIRECT

OBSERVATIONS = {
    "fixed": lambda d: lv.FixedScale(0.4),
    "learned-scalar": lambda d: lv.LearnedScalarScale(init_scale=1.0),
    "learned-channel": lambda d: lv.LearnedChannelScale(d, init_scale=1.0),
    "learned-vector": lambda d: lv.LearnedVectorScale(init_scale=1.0),
    "scheduled": lambda d: lv.ScheduledScale([0.9, 0.5]),
    "bernoulli": lambda d: lv.BernoulliObservation(),
    "continuous-bernoulli": lambda d: lv.ContinuousBernoulliObservation(),
}
N = 16
X = lv.datasets.manifold2d(N, torch.Generator().manual_seed(7))


def _data(kind, shape):
    x = torch.rand((7,) + shape, generator=torch.Generator().manual_seed(2))
    return (x > 0.5).float() if kind == "bernoulli" else x


@pytest.mark.parametrize("path", ["traced", "direct"])
@pytest.mark.parametrize("image", [False, True], ids=["mlp", "conv"])
@pytest.mark.parametrize("kind", list(OBSERVATIONS))
@pytest.mark.parametrize("beta", [1.0, 0.3, 0.0])
def test_elbo_terms_have_trace_elbo_loss_and_gradients(kind, image, beta, path):
    """Both ways of computing the terms equal Trace_ELBO's loss under weight_latents(beta), and
    its gradients, with parts that add up."""
    if image:
        shape = (2, 8, 8)
        vae = lv.conv_vae(shape, 3, OBSERVATIONS[kind](2), width=4, convs=2, blocks=1)
    else:
        shape = (3,)
        vae = lv.mlp_vae(3, 2, OBSERVATIONS[kind](3), hidden=8, blocks=1)
    x = _data(kind, shape)
    pyro.set_rng_seed(21)
    if path == "direct":
        terms = direct_elbo_terms(vae, x, beta=beta)
    else:
        terms = elbo_terms(vae.model, vae.guide, x, beta=beta)
    assert float(terms.loss.detach()) == pytest.approx(
        float((terms.reconstruction + beta * terms.kl).detach()), rel=1e-6, abs=1e-5)
    terms.loss.backward()
    ours = [p.grad.clone() for p in vae.parameters()]
    vae.zero_grad()
    pyro.set_rng_seed(21)
    with lv.weight_latents(beta):
        ref = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
    ref.backward()
    assert float(terms.loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-6, abs=1e-5)
    for a, p in zip(ours, vae.parameters(), strict=True):
        assert torch.allclose(a, p.grad, rtol=1e-5, atol=1e-6)


def _fixed_batch(n, generator=None):
    return X[:n].clone()


def _first_step_loss(vae, seed=4, **kwargs):
    """The first step's loss (summed over the batch) that fit logs, on the batch X."""
    h = lv.fit(vae, _fixed_batch, steps=1, batch_size=N, seed=seed, tools=[Checks(every=1)],
               **kwargs)
    return float(h["loss"][0]) * N, h


def _trace_elbo_loss(vae, seed=4):
    """Trace_ELBO's loss for vae on X, with the draws fit's first step takes under ``seed``."""
    pyro.set_rng_seed(seed)
    return float(Trace_ELBO().differentiable_loss(vae.model, vae.guide, X).detach())


@pytest.mark.parametrize("obs", [lambda: lv.LearnedScalarScale(),
                                 lambda: lv.LearnedVectorScale()], ids=["LS", "LV"])
def test_own_vae_trains_on_direct_elbo_with_trace_elbo_loss(obs):
    vae = lv.mlp_vae(2, 2, obs(), hidden=8, blocks=1)
    vae.initialize(X)
    assert lv.DirectELBO.why_not(vae.model, vae.guide, X) is None
    ref = _trace_elbo_loss(vae)
    loss, h = _first_step_loss(vae)
    assert h.objective == DIRECT
    assert loss == pytest.approx(ref, rel=1e-6)


def test_fit_equals_a_hand_loop_of_direct_elbo():
    """fit's run equals a hand loop of the direct loss with Adam from the same seed."""
    pyro.set_rng_seed(1)
    vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=8, blocks=1)
    hand = copy.deepcopy(vae)
    hand.initialize(X)  # fit takes the data start from its first batch, X
    h = lv.fit(vae, _fixed_batch, steps=3, batch_size=N, seed=4, tools=[Checks(every=3)])
    opt = torch.optim.Adam(hand.parameters(), lr=1e-3)
    pyro.set_rng_seed(4)
    losses = []
    for _ in range(3):
        loss = direct_elbo_terms(hand, X).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()) / N)
    assert h.objective == DIRECT
    assert h["loss"] == pytest.approx(losses, rel=1e-6)
    for a, b in zip(vae.parameters(), hand.parameters(), strict=True):
        assert torch.equal(a, b)


class _GainDecoder(PyroModule):
    """A decoder with a random gain (a PyroSample weight: a sample site of the model)."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.gain = PyroSample(dist.Normal(1.0, 0.5))

    def forward(self, z):
        return self.net(z) * self.gain.unsqueeze(-1)


class _GainEncoder(PyroModule):
    """The guide's side of the gain: a learned Normal at the decoder's site name."""

    def __init__(self, net, latent_dim):
        super().__init__()
        self.net = GaussianEncoder(net, latent_dim)
        self.gain_loc = PyroParam(torch.tensor(0.8))
        self.site = None

    def forward(self, x):
        pyro.sample(self.site, dist.Normal(self.gain_loc, 0.2))
        return self.net(x)


def _gain_vae():
    encoder = _GainEncoder(ResidualMLP(2, 4, 8, 1), 2)
    vae = lv.VAE(encoder, _GainDecoder(ResidualMLP(2, 2, 8, 1)), 2, lv.LearnedScalarScale(),
                 data_shape=2)
    encoder.site = f"{vae.model.decoder._pyro_name}.gain"
    return vae


def test_pyro_sample_decoder_weight_trains_on_trace_elbo(caplog):
    vae = _gain_vae()
    ref = _trace_elbo_loss(vae)
    with caplog.at_level(logging.INFO, logger="pyro_lvae"):
        loss, h = _first_step_loss(vae)
    assert h.objective == "pyro Trace_ELBO"
    assert "_GainDecoder" in caplog.text and "not DirectELBO" in caplog.text
    assert loss == pytest.approx(ref, rel=1e-6)


class _PenalisedScale(lv.FixedScale):
    """A user observation model with a site of its own (a factor on the decoder output)."""

    def forward(self, output, event_dim):
        pyro.factor("smoothness", -0.5 * output.pow(2).sum(-1))
        return super().forward(output, event_dim)


def test_custom_observation_site_trains_on_trace_elbo():
    vae = lv.mlp_vae(2, 2, _PenalisedScale(0.5), hidden=8, blocks=1)
    ref = _trace_elbo_loss(vae)
    loss, h = _first_step_loss(vae)
    assert h.objective == "pyro Trace_ELBO"
    assert loss == pytest.approx(ref, rel=1e-6)


@pytest.mark.filterwarnings("ignore:Found vars in model but not guide")
def test_model_only_latent_site_trains_on_trace_elbo():
    """A latent site in the model alone (drawn from its prior) is part of Trace_ELBO's loss."""

    class Noisy(lv.FixedScale):
        def forward(self, output, event_dim):
            jitter = pyro.sample("jitter", dist.Normal(0.0, 0.1))
            return super().forward(output + jitter.unsqueeze(-1), event_dim)

    vae = lv.mlp_vae(2, 2, Noisy(0.5), hidden=8, blocks=1)
    ref = _trace_elbo_loss(vae)
    loss, h = _first_step_loss(vae)
    assert h.objective == "pyro Trace_ELBO" and loss == pytest.approx(ref, rel=1e-6)


@pytest.mark.parametrize("handler, factor, objective", [
    (lambda: pyro.poutine.scale(scale=0.5), 0.5, "pyro Trace_ELBO"),
    (lambda: lv.weight_latents(0.5), None, DIRECT),
], ids=["scale", "latents"])
def test_a_handler_around_fit_is_honoured(handler, factor, objective):
    vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=8, blocks=1)
    lv.fit(vae, _fixed_batch, steps=1, batch_size=N, seed=4, lr=1e-9)  # a cached verdict
    plain = _trace_elbo_loss(vae)
    with handler():
        ref = _trace_elbo_loss(vae)
        loss, h = _first_step_loss(vae)
    assert h.objective == objective
    assert loss == pytest.approx(ref, rel=1e-6)
    if factor is not None:
        assert loss == pytest.approx(factor * plain, rel=1e-6)
    assert np.allclose(h["loss"], h["reconstruction"] + h["beta"] * h["kl"], rtol=1e-5)


class _FactorModel(lv.vae.Model):
    """A model subclass with an extra observed factor (trained through Pyro)."""

    def forward(self, x=None, batch_size=None):
        pyro.factor("prior_on_sigma", -self.observation.scale.log().pow(2))
        return super().forward(x, batch_size)


def _subclassed_vae():
    vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=8, blocks=1)
    vae.model.__class__ = _FactorModel
    return vae


PATHS = {
    "default": (lambda: lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=8, blocks=1), {},
                DIRECT),
    "fallback": (_subclassed_vae, {}, "pyro Trace_ELBO"),
    "trace-elbo": (lambda: lv.mlp_vae(2, 2, lv.LearnedVectorScale(), hidden=8, blocks=1),
                   {"elbo": Trace_ELBO()}, "pyro Trace_ELBO"),
    "mean-field": (lambda: lv.mlp_vae(2, 2, lv.LearnedVectorScale(), hidden=8, blocks=1),
                   {"elbo": TraceMeanField_ELBO()}, "pyro TraceMeanField_ELBO"),
    "svi": (lambda: lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=8, blocks=1),
            {"optimizer": pyro.optim.Adam({"lr": 1e-2})}, "pyro Trace_ELBO"),
    "3-particles": (lambda: lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=8, blocks=1),
                    {"elbo": Trace_ELBO(num_particles=3)}, "pyro Trace_ELBO"),
    "3-vectorised": (lambda: lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=8, blocks=1),
                     {"elbo": Trace_ELBO(num_particles=3, vectorize_particles=True,
                                         max_plate_nesting=1)}, "pyro Trace_ELBO"),
}


@pytest.mark.parametrize("path", list(PATHS))
def test_logged_parts_add_up_on_every_path(path):
    make, kwargs, objective = PATHS[path]
    h = lv.fit(make(), lv.datasets.manifold2d, steps=12, batch_size=32, seed=0,
               tools=[Checks(every=6)], beta=lv.LinearWarmup(8, 0.0, 1.0), **kwargs)
    assert h.objective == objective
    assert h["beta"][0] == 0.0 and np.all(np.isfinite(h["kl"]))
    assert np.allclose(h["loss"], h["reconstruction"] + h["beta"] * h["kl"], rtol=1e-5,
                       atol=1e-6)


def test_mean_field_parts_use_the_analytic_kl():
    vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=8, blocks=1)
    h = lv.fit(vae, _fixed_batch, steps=1, batch_size=N, seed=4, elbo=TraceMeanField_ELBO(),
               lr=1e-9)
    with torch.no_grad():
        loc, scale = vae.guide.posterior(X)
        kl = torch.distributions.kl_divergence(dist.Normal(loc, scale), dist.Normal(0.0, 1.0))
    kl = kl.sum() / N
    assert h["kl"][0] == pytest.approx(float(kl), rel=1e-4)


def test_svi_path_takes_one_forward_pass_per_step():
    vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=8, blocks=1)
    calls = []
    vae.model.decoder.register_forward_hook(lambda *args: calls.append(1))
    h = lv.fit(vae, lv.datasets.manifold2d, steps=7, batch_size=16, seed=0,
               optimizer=pyro.optim.Adam({"lr": 1e-3}))
    assert len(calls) == 7
    assert np.allclose(h["loss"], h["reconstruction"] + h["kl"], rtol=1e-5)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("elbo", [RenyiELBO(), JitTrace_ELBO()], ids=["renyi", "jit"])
def test_parts_that_are_not_read_are_nan_and_say_why(elbo, caplog):
    vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=8, blocks=1)
    with caplog.at_level(logging.INFO, logger="pyro_lvae"):
        h = lv.fit(vae, lv.datasets.manifold2d, steps=3, batch_size=16, seed=0, elbo=elbo)
    assert np.all(np.isnan(h["reconstruction"])) and np.all(np.isnan(h["kl"]))
    assert np.all(np.isfinite(h["loss"]))
    assert "not logged (NaN)" in caplog.text


@pytest.mark.filterwarnings("ignore")
def test_jit_elbo_follows_the_beta_schedule_exactly():
    """Under JitTrace_ELBO a beta set by a handler would stay at its first value; fit passes
    beta as an input. Its losses equal a hand loop of Trace_ELBO on the annealed programs with
    the same draws (the JIT's compilation takes extra draws at the first step: the hand loop
    skips as many)."""
    schedule, steps, n = lv.LinearWarmup(5, 0.0, 1.0), 8, 32
    pyro.set_rng_seed(0)
    vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale(init_scale=1.0), hidden=8, blocks=1)
    start = copy.deepcopy(vae.state_dict())
    h = lv.fit(vae, lv.datasets.manifold2d, steps=steps, batch_size=n, seed=0, beta=schedule,
               elbo=JitTrace_ELBO(), lr=1e-2)
    matches = []
    for skipped in range(4):
        hand = lv.mlp_vae(2, 2, lv.LearnedScalarScale(init_scale=1.0), hidden=8, blocks=1)
        hand.load_state_dict(start)
        opt = torch.optim.Adam(hand.parameters(), lr=1e-2)
        data = torch.Generator().manual_seed(data_seed(0))
        pyro.set_rng_seed(0)
        torch.empty(skipped, n, 2).normal_()
        model, guide = lv.annealed(hand.model), lv.annealed(hand.guide)
        losses = []
        for step in range(steps):
            x = lv.datasets.manifold2d(n, generator=data)
            loss = Trace_ELBO().differentiable_loss(model, guide, torch.tensor(schedule(step)), x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()) / n)
        matches.append(np.allclose(h["loss"], losses, rtol=1e-5))
    assert sum(matches) == 1
