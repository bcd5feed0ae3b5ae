"""Paths of a Pyro program written by hand (``pyro.module`` networks, one's own model and guide)
that must be exact or refuse clearly: learned priors under the JIT ELBOs, discretised
likelihoods off their grid, KL annealing of a discrete latent enumerated in the guide, a float
beta under the JIT ELBOs, GECO in a plain SVI loop, the VampPrior with one's own encoder."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import (
    SVI,
    JitTrace_ELBO,
    JitTraceEnum_ELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    config_enumerate,
)
from torch import nn

import pyro_lvae as lv
from pyro_lvae.errors import ConfigError, DataError
from pyro_lvae.training import Checks


def data(n=32, seed=1):
    return lv.datasets.manifold2d(n, torch.Generator().manual_seed(seed))


class Encoder(nn.Module):
    """x -> (loc, scale) of q(z | x), a plain network."""

    def __init__(self, data_dim=2, latent_dim=2):
        super().__init__()
        self.net = nn.Linear(data_dim, 2 * latent_dim)

    def forward(self, x):
        loc, raw = self.net(x).chunk(2, dim=-1)
        return loc, nn.functional.softplus(raw) + 1e-3


class Decoder(nn.Module):
    """A plain network holding the prior (Pyro's ss_vae_M2 / dmm pattern: registered with
    pyro.module, the prior's parameters live under the decoder's name)."""

    def __init__(self, prior, latent_dim=2, data_dim=2):
        super().__init__()
        self.prior = prior
        self.net = nn.Linear(latent_dim, data_dim)


def programs(decoder, encoder):
    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", decoder.prior())
            pyro.sample("x", dist.Normal(decoder.net(z), 0.5).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    return model, guide


# ---- 1. a learned prior inside a pyro.module-registered module, under the JIT ELBOs ----------
PRIORS = {
    "mixture": lambda encoder: lv.MixturePrior(components=3),
    "flow": lambda encoder: lv.FlowPrior(layers=2, hidden=8),
    "vamp": lambda encoder: lv.VampPrior(components=3, encoder=encoder),
}


@pytest.mark.parametrize("kind", list(PRIORS))
def test_a_prior_inside_a_pyro_module_trains_under_jit_trace_elbo(kind):
    torch.manual_seed(0)
    encoder = Encoder()
    prior = PRIORS[kind](encoder).setup(2, (2,))
    decoder = Decoder(prior)
    x = data()
    prior.initialize(x)
    model, guide = programs(decoder, encoder)
    jit = JitTrace_ELBO(ignore_jit_warnings=True)
    before = {k: v.detach().clone() for k, v in prior.named_parameters()}
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), jit)
    losses = [svi.step(x) for _ in range(4)]  # was a bare AssertionError in pyro.ops.jit
    assert all(math.isfinite(v) for v in losses)
    for name, p in prior.named_parameters():
        assert not torch.equal(p.detach(), before[name]), name
    # one param-store entry per tensor, under the decoder's name only
    store = dict(pyro.get_param_store().named_parameters())
    prior_keys = [k for k in store if "prior" in k or k.startswith(prior._pyro_name)]
    assert prior_keys and all(k.startswith("decoder$$$prior.") for k in prior_keys)
    assert len({v.data_ptr() for v in store.values()}) == len(store)
    # the compiled loss is Trace_ELBO's on the same draws
    for seed in (3, 4):
        pyro.set_rng_seed(seed)
        got = jit.differentiable_loss(model, guide, x)
        pyro.set_rng_seed(seed)
        want = Trace_ELBO().differentiable_loss(model, guide, x)
        assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-5), seed


def test_a_prior_as_a_child_of_a_pyro_module_keeps_its_own_entries():
    """A prior under a user PyroModule is a sub-PyroModule: its entries carry the parent's name,
    and a plain child of the prior (a flow's layers) is registered once, under that name."""

    class Model(pyro.nn.PyroModule):
        def __init__(self):
            super().__init__("mine")
            self.prior = lv.FlowPrior(layers=1, hidden=8).setup(2)
            self.net = nn.Linear(2, 2)

        def forward(self, x):
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", self.prior())
                pyro.sample("x", dist.Normal(self.net(z), 0.5).to_event(1), obs=x)

    encoder, model = Encoder(), Model()
    _, guide = programs(Decoder(None), encoder)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), JitTrace_ELBO(ignore_jit_warnings=True))
    before = [p.detach().clone() for p in model.prior.parameters()]
    for _ in range(3):
        svi.step(data())
    assert all(not torch.equal(p, b) for p, b in zip(model.prior.parameters(), before, strict=True))
    keys = [k for k in pyro.get_param_store().keys() if "prior" in k]
    assert keys and all(k.startswith("mine.prior.flows$$$") for k in keys)


def test_a_prior_on_its_own_keeps_registering_itself():
    """The check that skips a second registration must not skip the only one: a flow prior
    used on its own registers its layers under its own name at every step."""
    prior = lv.FlowPrior(layers=1, hidden=8).setup(2)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", prior(), obs=x)

    svi = SVI(model, lambda x: None, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    before = [p.detach().clone() for p in prior.parameters()]
    for _ in range(3):
        svi.step(data() + 2.0)
    assert all(k.startswith(f"{prior._pyro_name}.flows$$$") for k in pyro.get_param_store())
    assert all(not torch.equal(p, b) for p, b in zip(prior.parameters(), before, strict=True))


# ---- 2. the discretised likelihoods refuse values off the 8-bit grid ----------------------
@pytest.mark.parametrize("obs", [lv.DiscretizedNormal(init_scale=0.05),
                                 lv.DiscretizedLogistic(init_scale=0.05),
                                 lv.DiscretizedLogisticMixture(components=2, init_scale=0.05)])
@pytest.mark.parametrize("validate", [True, False])
def test_a_discretised_distribution_refuses_values_off_its_grid(obs, validate):
    pixels = torch.randint(0, 256, (4, 6), generator=torch.Generator().manual_seed(0))
    on_grid = lv.datasets.UnitLevels()(pixels.to(torch.uint8))  # k / 255, float32
    dequantised = lv.datasets.Dequantize()(pixels.to(torch.uint8),
                                           torch.Generator().manual_seed(1))
    p = obs(torch.zeros(4, obs.outputs_per_channel * 6), event_dim=1)
    with pyro.validation_enabled(validate):
        assert torch.isfinite(p.log_prob(on_grid)).all()
        with pytest.raises(DataError, match=r"off that grid.*lv\.datasets\.UnitLevels"):
            p.log_prob(dequantised)  # was rounded to the nearest level, silently
        with pytest.raises(DataError, match="off that grid"):
            p.log_prob(on_grid + 0.3 / 255)
        with pytest.raises(DataError, match="off that grid"):
            p.log_prob(torch.full((4, 6), 256 / 255))
    assert not bool(p.support.check(dequantised).all())  # the support is the grid
    assert bool(p.support.check(on_grid).all())


def test_a_discretised_likelihood_in_ones_own_model_refuses_dequantised_data():
    obs = lv.DiscretizedLogistic(init_scale=0.05)
    pixels = torch.randint(0, 256, (8, 2), generator=torch.Generator().manual_seed(0))
    x = lv.datasets.Dequantize()(pixels.to(torch.uint8), torch.Generator().manual_seed(1))
    encoder, net = Encoder(), nn.Linear(2, 4)

    def model(x):
        pyro.module("net", net)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", obs(net(z), event_dim=1), obs=x)

    _, guide = programs(Decoder(None), encoder)
    for validate in (False, True):  # Pyro re-raises it as a ValueError naming the site
        with pyro.validation_enabled(validate), \
                pytest.raises(ValueError, match=r"site 'x'(.|\n)*lv\.datasets\.UnitLevels"):
            Trace_ELBO().loss(model, guide, x)
    on_grid = lv.datasets.UnitLevels()(pixels.to(torch.uint8))
    assert math.isfinite(Trace_ELBO().loss(model, guide, on_grid))


def test_the_vae_and_the_distribution_share_one_check():
    obs = lv.DiscretizedLogistic(init_scale=0.05)
    x = torch.full((2, 3), 0.5)  # 127.5 / 255: between two levels
    with pytest.raises(DataError) as from_model:
        obs.check_support(x)
    with pytest.raises(DataError) as from_distribution:
        obs(torch.zeros(2, 6), event_dim=1).log_prob(x)
    assert "DiscretizedLogistic" in str(from_model.value)
    tail = str(from_model.value).split("values are off", 1)[1]
    assert str(from_distribution.value).endswith(tail)


def test_under_jit_a_later_batch_off_the_grid_is_nan_not_a_rounded_value():
    obs = lv.DiscretizedLogistic(init_scale=0.05)
    out = torch.zeros(3, 2)

    def log_p(x):
        return obs(out, event_dim=1).log_prob(x)

    on_grid = torch.tensor([[0.0], [1.0], [128 / 255]])
    traced = torch.jit.trace(log_p, (on_grid,), check_trace=False)
    assert torch.allclose(traced(on_grid), log_p(on_grid))
    assert torch.isnan(traced(on_grid + 0.3 / 255)).all()
    with pytest.raises(DataError, match="off that grid"):
        torch.jit.trace(log_p, (on_grid + 0.3 / 255,), check_trace=False)


# ---- 3. a discrete latent enumerated in the guide is annealed exactly -----------------------
class SSVAE(nn.Module):
    """A tiny ss_vae_M2 (Kingma et al. 2014, Pyro's example): a class y enumerated in the guide
    and a code z; ``beta`` weights both latent sites by hand with poutine.scale."""

    def __init__(self, data_dim=4, latent_dim=2, classes=3):
        super().__init__()
        self.d, self.k, self.c = data_dim, latent_dim, classes
        self.encoder_y = nn.Linear(data_dim, classes)
        self.encoder_z = nn.Linear(data_dim + classes, 2 * latent_dim)
        self.decoder = nn.Linear(latent_dim + classes, data_dim)

    def model(self, x, beta=None):
        pyro.module("ss_vae", self)
        with pyro.plate("data", x.shape[0]), poutine.scale(scale=beta or 1.0):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.k), 1.0).to_event(1))
            y = pyro.sample("y", dist.OneHotCategorical(x.new_ones(self.c) / self.c))
            with poutine.scale(scale=1.0 / (beta or 1.0)):  # the likelihood is not weighted
                loc = self.decoder(torch.cat([z.expand(y.shape[:-1] + (self.k,)), y], -1))
                pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(self, x, beta=None):
        pyro.module("ss_vae", self)
        with pyro.plate("data", x.shape[0]), poutine.scale(scale=beta or 1.0):
            y = pyro.sample("y", dist.OneHotCategorical(logits=self.encoder_y(x)))
            out = self.encoder_z(torch.cat([x.expand(y.shape[:-1] + (self.d,)), y], -1))
            loc, raw = out.chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, raw.exp()).to_event(1))


def _ss_vae():
    torch.manual_seed(0)
    return SSVAE(), torch.randn(6, 4, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("beta", [0.3, 0.0])
def test_weight_latents_anneals_a_latent_enumerated_in_the_guide_exactly(beta):
    ss, x = _ss_vae()
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    guide = config_enumerate(ss.guide, "parallel", expand=True)
    hand_beta = beta or 1e-9  # poutine.scale refuses 0: its limit
    pyro.set_rng_seed(5)
    plain = elbo.differentiable_loss(ss.model, guide, x)
    pyro.set_rng_seed(5)
    want = elbo.differentiable_loss(ss.model, guide, x, hand_beta)
    assert float(want.detach()) < float(plain.detach()) - 1.0  # beta changes the loss here
    pyro.set_rng_seed(5)
    with lv.weight_latents(beta):  # was the loss at beta 1
        got = elbo.differentiable_loss(ss.model, guide, x)
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-6, abs=1e-5)
    pyro.set_rng_seed(5)  # the programs' own form, with the enumeration inside or outside it
    annealed = elbo.differentiable_loss(lv.annealed(ss.model),
                                        lv.annealed(guide), beta, x)
    assert float(annealed.detach()) == pytest.approx(float(want.detach()), rel=1e-6, abs=1e-5)
    pyro.set_rng_seed(5)
    outside = config_enumerate(lv.annealed(ss.guide), "parallel", expand=True)
    assert float(elbo.differentiable_loss(lv.annealed(ss.model), outside, beta, x).detach()) \
        == pytest.approx(float(want.detach()), rel=1e-6, abs=1e-5)
    # and its gradients
    params = list(ss.parameters())
    pyro.set_rng_seed(5)
    want_grads = torch.autograd.grad(elbo.differentiable_loss(ss.model, guide, x, hand_beta),
                                     params)
    pyro.set_rng_seed(5)
    with lv.weight_latents(beta):
        got_grads = torch.autograd.grad(elbo.differentiable_loss(ss.model, guide, x), params)
    for g, w in zip(got_grads, want_grads, strict=True):
        assert torch.allclose(g, w, rtol=1e-5, atol=1e-5)


def test_annealing_a_latent_enumerated_in_the_guide_is_exact_under_jit():
    ss, x = _ss_vae()
    guide = config_enumerate(ss.guide, "parallel", expand=True)
    jit = JitTraceEnum_ELBO(max_plate_nesting=1, ignore_jit_warnings=True)
    model, annealed_guide = lv.annealed(ss.model), lv.annealed(guide)
    jit.differentiable_loss(model, annealed_guide, torch.tensor(1.0), x)  # compiles at 1
    for beta in (0.3, 0.7):
        pyro.set_rng_seed(5)
        got = jit.differentiable_loss(model, annealed_guide, torch.tensor(beta), x)
        pyro.set_rng_seed(5)
        want = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(ss.model, guide, x, beta)
        assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-5), beta


# ---- 6a. a float beta under the JIT ELBOs -----------------------------------------------------
def test_a_float_beta_under_a_jit_elbo_is_refused_with_the_remedy():
    vae = lv.mlp_vae(2, 2, lv.FixedScale(0.5), hidden=8, blocks=1)
    x = data()
    svi = SVI(lv.annealed(vae.model), lv.annealed(vae.guide), pyro.optim.Adam({"lr": 1e-3}),
              JitTrace_ELBO(ignore_jit_warnings=True))
    with pytest.raises(ConfigError, match=r"torch\.tensor\(beta, dtype=torch\.float32"):
        svi.step(0.5, x)  # was torch's "Type 'Tuple[...float...]' cannot be traced"
    assert math.isfinite(svi.step(torch.tensor(0.5), x))
    # outside the JIT a float stays fine
    assert math.isfinite(Trace_ELBO().loss(lv.annealed(vae.model), lv.annealed(vae.guide),
                                           0.5, x))


# ---- 6b. GECO in a plain SVI loop ---------------------------------------------------------------
def _reconstruction(model, guide, x):
    """-log p(x|z) per data point at one draw of the guide (what fit logs)."""
    with torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
        site = model_trace.nodes["x"]
        return -float(site["fn"].log_prob(site["value"]).sum()) / x.shape[0]


def test_geco_in_a_plain_svi_loop_follows_its_updates():
    torch.manual_seed(0)
    decoder, encoder = Decoder(lv.StandardNormal().setup(2)), Encoder()
    model, guide = programs(decoder, encoder)
    x = data(64)
    geco = lv.GECO(target=-10.0, rate=1e-2, smoothing=0.0)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    betas, recs = [], []
    for step in range(5):
        betas.append(geco(step))
        with lv.weight_latents(betas[-1]):
            svi.step(x)
        recs.append(_reconstruction(model, guide, x))
        geco.update(recs[-1])  # the documented hook
    # log lambda += rate * (rec - target) per step (smoothing 0): beta falls from 1
    want = [1.0] + [math.exp(-1e-2 * sum(r + 10.0 for r in recs[:i])) for i in range(1, 5)]
    assert betas == pytest.approx(want, rel=1e-12)
    assert betas[-1] < 0.9
    same = lv.GECO(target=-10.0, rate=1e-2, smoothing=0.0)
    same.update(torch.tensor(recs))  # a tensor of several steps, in order
    assert same(5) == pytest.approx(geco(5), rel=1e-12) and same.steps == 5


def test_geco_that_is_never_updated_refuses_instead_of_staying_at_beta_one():
    geco = lv.GECO(target=0.0, patience=10)
    assert geco(0) == 1.0 and geco(10) == 1.0
    with pytest.raises(ConfigError, match=r"geco\.update\(reconstruction\)"):
        geco(11)  # was 1.0 at every step
    geco.update([1.0] * 5)
    assert geco(15) < 1.0
    with pytest.raises(ConfigError, match="patience"):
        geco(16)
    with pytest.raises(ConfigError, match="finite"):
        geco.update(float("nan"))
    with pytest.raises(ConfigError, match="patience"):
        lv.GECO(target=0.0, patience=0)


def test_fit_keeps_feeding_geco_past_its_patience():
    h = lv.fit(lv.mlp_vae(2, 2, lv.FixedScale(0.1), hidden=8, blocks=1), data(64), steps=12,
               batch_size=32, beta=lv.GECO(target=-50.0, rate=1e-3, patience=4), seed=0,
               tools=[Checks(every=3)])
    assert len(h) == 12 and h["beta"][-1] < 1.0


# ---- 6d. the VampPrior in one's own program -------------------------------------------------
@pytest.mark.parametrize("elbo_cls", [Trace_ELBO, JitTrace_ELBO])
def test_a_vamp_prior_with_ones_own_encoder_trains_in_a_hand_written_pair(elbo_cls):
    torch.manual_seed(0)
    encoder = Encoder()
    prior = lv.VampPrior(components=4, encoder=encoder).setup(2, data_shape=(2,))
    x = data(64)
    prior.initialize(x)  # the explicit data start
    assert torch.equal(prior.pseudo_inputs.detach(), x[:4])
    decoder = nn.Linear(2, 2)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", prior())
            pyro.sample("x", dist.Normal(decoder(z), 0.5).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    # p(z) is the mixture of the encoder's posteriors at the pseudo-inputs
    z = torch.randn(5, 2)
    loc, scale = encoder(prior.pseudo_inputs)
    want = torch.logsumexp(dist.Normal(loc, scale).log_prob(z[:, None]).sum(-1), -1) - math.log(4)
    assert torch.allclose(prior().log_prob(z), want, atol=1e-6)
    # one SGD step moves each encoder weight once, by -lr times the gradient of both terms
    params = list(encoder.parameters()) + [prior.pseudo_inputs]
    pyro.set_rng_seed(1)
    grads = torch.autograd.grad(Trace_ELBO().differentiable_loss(model, guide, x), params)
    before = [p.detach().clone() for p in params]
    elbo = elbo_cls(**({"ignore_jit_warnings": True} if elbo_cls is JitTrace_ELBO else {}))
    if elbo_cls is JitTrace_ELBO:  # compile first: compiling draws from the generator
        elbo.loss_and_grads(model, guide, x)
        for p in params:
            p.grad = None
    pyro.set_rng_seed(1)
    SVI(model, guide, pyro.optim.SGD({"lr": 0.01}), elbo).step(x)
    for p, b, g in zip(params, before, grads, strict=True):
        assert torch.allclose(p.detach() - b, -0.01 * g, atol=1e-5)


def test_a_vamp_prior_says_what_it_needs():
    with pytest.raises(ConfigError, match=r"setup\(latent_dim, data_shape"):
        lv.VampPrior(2, encoder=Encoder()).setup(2)
    with pytest.raises(ConfigError, match="encoder=net"):
        lv.VampPrior(2).setup(2, (2,))()
    with pytest.raises(ConfigError, match=r"\(loc, scale\).*\(2, 2\)"):
        lv.VampPrior(2, encoder=nn.Linear(2, 4)).setup(2, (2,))()
    with pytest.raises(ConfigError, match="leave encoder= out"):
        lv.mlp_vae(2, 2, lv.FixedScale(0.5), hidden=8, blocks=1,
                   prior=lv.VampPrior(2, encoder=Encoder()))
    with pytest.raises(ConfigError, match="shape"):
        lv.VampPrior(2, encoder=Encoder()).setup(2, (2,)).initialize(torch.zeros(4, 3))
