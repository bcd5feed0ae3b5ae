"""Pyro paths that must be exact or refuse clearly: JIT annealing, copies and param-store names,
observation models inside plain modules, models built inside programs, reading sigma, the
data-scaled start and the collapse warning."""

import copy
import gc
import json
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import (
    SVI,
    JitTrace_ELBO,
    JitTraceEnum_ELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceMeanField_ELBO,
)
from torch import nn

import pyro_lvae as lv
from pyro_lvae.errors import ConfigError


def tiny(obs=None, **kw):
    return lv.mlp_vae(2, 2, obs or lv.LearnedScalarScale(), hidden=8, blocks=1, **kw)


def data(n=32, seed=1, scale=1.0):
    return lv.datasets.manifold2d(n, torch.Generator().manual_seed(seed)) * scale


# ---- 1. annealing under the JIT ELBOs ----------------------------------------------------------
@pytest.mark.parametrize("jit_cls, ref_cls", [(JitTrace_ELBO, Trace_ELBO),
                                              (JitTraceEnum_ELBO, TraceEnum_ELBO)])
def test_annealed_programs_are_exact_under_jit_at_every_beta(jit_cls, ref_cls):
    vae = tiny(lv.LearnedScalarScale(init_scale=0.5))
    x = data()
    model, guide = lv.annealed(vae.model), lv.annealed(vae.guide)
    kw = {"max_plate_nesting": 1} if ref_cls is TraceEnum_ELBO else {}
    jit, ref = jit_cls(ignore_jit_warnings=True, **kw), ref_cls(**kw)  # one object, reused
    jit.differentiable_loss(model, guide, torch.tensor(1.0), x)  # compiles at beta 1
    for beta in (0.1, 0.5, 0.0, 1.0, 0.3):
        pyro.set_rng_seed(7)
        got = jit.differentiable_loss(model, guide, torch.tensor(beta), x)
        pyro.set_rng_seed(7)
        want = ref.differentiable_loss(model, guide, torch.tensor(beta), x)
        assert float(got) == pytest.approx(float(want), rel=1e-5, abs=1e-4), beta


def test_a_handler_around_a_jit_elbo_is_refused_with_the_remedy():
    vae = tiny(lv.LearnedScalarScale(init_scale=0.5))
    with lv.weight_latents(0.5), pytest.raises(ConfigError, match="lv.annealed"):
        JitTrace_ELBO(ignore_jit_warnings=True).differentiable_loss(vae.model, vae.guide, data())


def test_annealed_equals_the_handler_around_both_programs_under_trace_elbo():
    vae = tiny(lv.LearnedScalarScale(init_scale=0.5))
    x = data()
    pyro.set_rng_seed(3)
    got = Trace_ELBO().loss(lv.annealed(vae.model), lv.annealed(vae.guide), 0.25, x)
    pyro.set_rng_seed(3)
    with lv.weight_latents(0.25):
        want = Trace_ELBO().loss(vae.model, vae.guide, x)
    assert got == pytest.approx(want, rel=1e-6)
    # wrapping the model alone is another objective (documented): the guide's log q unscaled
    pyro.set_rng_seed(3)
    model_only = Trace_ELBO().loss(lv.weight_latents(0.25)(vae.model), vae.guide, x)
    assert model_only != pytest.approx(want, rel=1e-3)


def test_a_site_enumerated_in_the_model_refuses_a_kl_weight():
    x = torch.tensor([0.1, 0.9, 1.2, -0.3])

    def model(x):
        probs = pyro.param("probs", torch.tensor([0.4, 0.6]), constraint=dist.constraints.simplex)
        with pyro.plate("data", 4):
            c = pyro.sample("c", dist.Categorical(probs), infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(c.float(), 1.0), obs=x)

    def guide(x):
        pass

    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    plain = elbo.loss(model, guide, x)
    with lv.weight_latents(1.0):  # beta = 1 changes nothing
        assert elbo.loss(model, guide, x) == pytest.approx(plain)
    # summed out in the model: no weight on it is a KL weight (never a silent beta of 1)
    with pytest.raises(ConfigError, match="enumerated in the model only"), \
            lv.weight_latents(0.3):
        elbo.loss(model, guide, x)


def test_global_latents_are_scaled_too():
    def model():
        pyro.sample("w", dist.Normal(0.0, 1.0))

    def guide():
        pyro.sample("w", dist.Normal(pyro.param("m", torch.tensor(1.0)), 0.5))

    pyro.set_rng_seed(0)
    full = TraceMeanField_ELBO().loss(model, guide)
    with lv.weight_latents(0.2):
        pyro.set_rng_seed(0)
        assert TraceMeanField_ELBO().loss(model, guide) == pytest.approx(0.2 * full, rel=1e-6)


# ---- 2. copies and param-store names ----------------------------------------------------------
def _snapshot(vae):
    return {k: v.clone() for k, v in vae.state_dict().items()}


def test_a_deepcopy_trained_under_svi_moves_only_itself():
    x = data(64)
    vae = tiny()
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(3):
        svi.step(x)
    best = copy.deepcopy(vae)
    assert best.name != vae.name and best.model._pyro_name == f"{best.name}.model"
    assert best.model.observation._pyro_name == f"{best.name}.model.observation"
    before = _snapshot(vae)
    copy_before = _snapshot(best)
    svi_copy = SVI(best.model, best.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(5):
        svi_copy.step(x)
    assert all(torch.equal(v, vae.state_dict()[k]) for k, v in before.items())
    moved = [k for k, v in best.state_dict().items() if not torch.equal(v, copy_before[k])]
    assert "model.observation.scale_unconstrained" in moved
    assert any(k.startswith("model.decoder") for k in moved)
    assert any(k.startswith("guide.encoder") for k in moved)


def test_loaded_vaes_are_independent(tmp_path):
    x = data(64)
    vae = tiny()
    vae.initialize(x)
    vae.save(tmp_path / "m.pt")
    a, b = lv.load(tmp_path / "m.pt"), lv.load(tmp_path / "m.pt")
    assert len({a.name, b.name, vae.name}) == 3
    b_before = _snapshot(b)
    svi = SVI(a.model, a.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(3):
        svi.step(x)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in b_before.items())
    assert not torch.equal(a.sigma(), b.sigma())


def test_a_restored_param_store_is_refused_or_ignored_never_half_used(tmp_path):
    x = data(64)
    trained = tiny(name="ls")
    svi = SVI(trained.model, trained.guide, pyro.optim.Adam({"lr": 5e-2}), Trace_ELBO())
    for _ in range(5):
        svi.step(x)
    pyro.get_param_store().save(tmp_path / "store.pt")
    del trained, svi
    gc.collect()
    # "another process": an empty store restored from the file, VAEs built afresh
    pyro.clear_param_store()
    pyro.get_param_store().load(tmp_path / "store.pt")
    other = tiny()  # an automatic name: the stored entries are not its own and stay unused
    other.initialize(x)
    before = _snapshot(other)
    Trace_ELBO().loss(other.model, other.guide, x)
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in before.items())
    # the same name: Pyro would swap in the stored sigma but leave the networks' weights fresh
    # (and train stored tensors the networks never use); refused instead
    again = tiny(name="ls")
    with pytest.raises(ConfigError, match="not its parameters"):
        Trace_ELBO().loss(again.model, again.guide, x)


def test_copies_of_standalone_modules_get_their_own_names():
    obs = lv.LearnedScalarScale(init_scale=1.0)
    twin = copy.deepcopy(obs)
    assert twin._pyro_name != obs._pyro_name
    vae = tiny()
    model = copy.deepcopy(vae.model)
    assert model._pyro_name != vae.model._pyro_name
    assert model.observation._pyro_name == f"{model._pyro_name}.observation"
    inside = copy.deepcopy(vae).model.observation  # a child is renamed with its parent only
    assert inside._pyro_name.endswith(".model.observation")


# ---- 3. a learned sigma inside a plain nn.Module registered with pyro.module -------------------
class _Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(1, 2)
        self.observation = lv.LearnedScalarScale(init_scale=1.0)

    def forward(self, z):
        return self.observation(self.net(z), event_dim=1)


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(2, 2)

    def forward(self, x):
        out = self.net(x)
        return out[:, :1], out[:, 1:].exp()


@pytest.mark.parametrize("elbo_cls", [Trace_ELBO, JitTrace_ELBO])
def test_observation_inside_a_plain_module_trains_under_one_name(elbo_cls):
    decoder, encoder = _Decoder(), _Encoder()

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([1]).to_event(1))
            pyro.sample("x", decoder(z), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    x = data(64, scale=0.1)
    kw = {"ignore_jit_warnings": True} if elbo_cls is JitTrace_ELBO else {}
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), elbo_cls(**kw))
    for _ in range(30):
        svi.step(x)
    names = [k for k in pyro.get_param_store().keys() if "scale" in k]
    assert names == ["decoder$$$observation.scale_unconstrained"]
    assert float(decoder.observation.scale) < 0.5  # trained down from 1 towards the data


# ---- 6. smaller traps -------------------------------------------------------------------------
def test_an_observation_built_inside_the_model_is_refused():
    def model(x):
        obs = lv.LearnedScalarScale(init_scale=1.0)
        pyro.sample("x", obs(x, event_dim=1), obs=x)

    with pytest.raises(ConfigError, match="outside the model function"):
        Trace_ELBO().loss(model, lambda x: None, data())
    with lv.weight_latents(0.5), pyro.plate("p", 3):  # handlers alone do not run a program
        assert lv.LearnedScalarScale(init_scale=1.0) is not None


def test_a_squashed_scale_half_is_reported():
    obs = lv.LearnedVectorScale(init_scale=1.0)
    with pytest.warns(UserWarning, match="unsquashed"):
        obs(torch.sigmoid(torch.randn(32, 32)), event_dim=1)
    quiet = lv.LearnedVectorScale(init_scale=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet(torch.randn(32, 32), event_dim=1)
    # a linear head at its start: small outputs, all inside [0, 1] by chance (a conv decoder)
    small = lv.LearnedVectorScale(init_scale=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small(0.05 + 0.02 * torch.rand(32, 32), event_dim=1)
        pyro.set_rng_seed(0)
        vae = lv.conv_vae((1, 28, 28), 16, lv.LearnedVectorScale(init_scale=0.1), width=16,
                          blocks=1)
        vae.initialize(torch.rand(64, 1, 28, 28))
        vae.likelihood(torch.randn(64, 16))


@pytest.mark.parametrize("obs, shared", [
    (lv.FixedScale(0.3), True), (lv.LearnedScalarScale(init_scale=0.4), True),
    (lv.LearnedChannelScale(2, init_scale=0.4), True), (lv.ScheduledScale([0.9, 0.2]), True),
    (lv.LearnedVectorScale(init_scale=0.4), False),
])
def test_vae_sigma_reads_every_variant(obs, shared):
    vae = tiny(obs)
    x = data(5)
    vae.initialize(x)
    at_data = vae.sigma(x)
    assert at_data.shape == x.shape and bool((at_data > 0).all())
    if shared:
        assert torch.allclose(at_data, vae.sigma().expand_as(x))
    else:
        with pytest.raises(ConfigError, match=r"vae.sigma\(x\)"):
            vae.sigma()


def test_vae_sigma_refuses_a_model_without_one():
    vae = lv.mlp_vae(2, 2, lv.BernoulliObservation(), hidden=8, blocks=1)
    vae.initialize(torch.ones(3, 2))
    with pytest.raises(ConfigError, match="no sigma"):
        vae.sigma(torch.ones(3, 2))


# ---- 7. a start scaled to the data ------------------------------------------------------------
def test_default_start_is_half_the_first_batch_spread():
    x = data(256, scale=0.05)
    for obs in (lv.LearnedScalarScale(), lv.LearnedVectorScale(), lv.LearnedChannelScale(2)):
        vae = tiny(obs)
        Trace_ELBO().loss(vae.model, vae.guide, x)  # the first observed batch
        want = 0.5 * float(x.var(0).mean().sqrt())
        assert obs.init_scale == pytest.approx(want, rel=1e-5)
        at_zero = obs.forward(torch.zeros(1, 2 * obs.outputs_per_channel), 1).base_dist.scale
        assert torch.allclose(at_zero, torch.tensor(want))  # a raw output of 0 gives the start
        first = obs.init_scale
        Trace_ELBO().loss(vae.model, vae.guide, x * 10)  # later batches do not move it
        assert obs.init_scale == first


def test_the_start_survives_save_load_and_state_dicts(tmp_path):
    x = data(64, scale=0.1)
    vae = tiny(lv.LearnedVectorScale())
    vae.initialize(x)
    vae.save(tmp_path / "m.pt")
    again = lv.load(tmp_path / "m.pt")
    assert again.observation.init_scale == vae.observation.init_scale
    assert torch.equal(again.sigma(x), vae.sigma(x))
    fresh = tiny(lv.LearnedVectorScale())
    fresh.load_state_dict(vae.state_dict())
    assert fresh.observation.init_scale == vae.observation.init_scale
    fresh.observation.initialize(x * 100)  # started: a no-op
    assert torch.equal(fresh.sigma(x), vae.sigma(x))


def test_an_unstarted_observation_used_alone_says_how_to_start_it():
    obs = lv.LearnedScalarScale()
    with pytest.raises(ConfigError, match=r"initialize\(x\)"):
        obs(torch.zeros(4, 2), event_dim=1)


def test_a_spread_below_the_floor_is_refused():
    obs = lv.LearnedScalarScale(min_scale=0.1)
    with pytest.raises(ConfigError, match="min_scale"):
        obs.initialize(data(64, scale=0.01))


def _svi_run(init_scale, steps=150):
    pyro.set_rng_seed(0)
    g = torch.Generator().manual_seed(1)
    pool = lv.datasets.manifold2d(2000, g) * 0.1  # a spread well below 1
    vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale(init_scale=init_scale), hidden=16, blocks=1)
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(steps):
        svi.step(pool[torch.randint(0, 2000, (100,), generator=g)])
    return vae, pool


def test_plain_svi_with_the_default_escapes_the_collapse_the_paper_start_falls_into():
    default, pool = _svi_run(None)
    paper, _ = _svi_run(1.0)
    assert paper.kl_per_point(pool) < lv.vae.COLLAPSE_NATS  # Theorem 1's collapsed optimum
    assert default.kl_per_point(pool) > 10 * paper.kl_per_point(pool)
    with pytest.warns(UserWarning, match="collapsed"):
        paper.reconstruct(pool[:100])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        default.reconstruct(pool[:100])


def _svi_losses(scale, steps=40, standardize=True):
    pyro.set_rng_seed(0)
    g = torch.Generator().manual_seed(2)
    pool = lv.datasets.manifold2d(1000, g) * scale
    vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale(min_scale=1e-9), hidden=16, blocks=1,
                     standardize=standardize)
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(pool[torch.randint(0, 1000, (50,), generator=g)]) for _ in range(steps)]
    return torch.tensor(losses, dtype=torch.float64), vae


def test_the_default_networks_train_alike_on_the_data_times_any_factor():
    """Standardised networks and the data-scaled start: the run on the data times a is the run
    on the data, with every loss moved by the change of units (N D log a)."""
    unit, _ = _svi_losses(1.0)
    for a in (0.01, 100.0):
        scaled, vae = _svi_losses(a)
        moved = scaled - 50 * 2 * torch.log(torch.tensor(a, dtype=torch.float64))
        assert torch.allclose(moved, unit, rtol=1e-3, atol=1e-2)
        assert float(vae.sigma()) / a == pytest.approx(float(_svi_losses(1.0)[1].sigma()),
                                                       rel=1e-3)
    paper_small, _ = _svi_losses(0.01, standardize=False)  # the paper's networks do not
    moved = paper_small - 50 * 2 * torch.log(torch.tensor(0.01, dtype=torch.float64))
    assert not torch.allclose(moved, unit, rtol=1e-2, atol=1.0)


def test_standardize_measures_once_and_says_when_it_has_not():
    layer = lv.nets.Standardize(3)
    with pytest.raises(ConfigError, match=r"initialize\(x\)"):
        layer(torch.zeros(4, 3))
    with pytest.raises(lv.DataError, match="at least two points"):
        layer.initialize(torch.zeros(1, 3))
    x = torch.tensor([[1.0, 5.0, 2.0], [3.0, 5.0, 6.0]])
    layer.initialize(x)
    assert torch.allclose(layer.mean, torch.tensor([2.0, 5.0, 4.0]))
    assert torch.allclose(layer.std, torch.tensor([1.0, 1.0, 2.0]))  # a constant feature: 1
    layer.initialize(x * 10)  # measured: a no-op
    assert torch.allclose(layer(x), torch.tensor([[-1.0, 0.0, -1.0], [1.0, 0.0, 1.0]]))
    back = lv.nets.Standardize(3, inverse=True)
    back.load_state_dict(layer.state_dict())  # loaded values count as measured
    out = back(torch.cat([layer(x), torch.full((2, 3), 7.0)], -1))  # a scale half passes
    assert torch.allclose(out[:, :3], x) and torch.equal(out[:, 3:], torch.full((2, 3), 7.0))


def test_the_decoder_is_standardised_only_for_a_location():
    assert isinstance(tiny(lv.LearnedVectorScale()).model.decoder[-1], lv.nets.Standardize)
    bernoulli = tiny(lv.BernoulliObservation())
    assert not isinstance(bernoulli.model.decoder, nn.Sequential)  # logits stay as they are
    assert isinstance(bernoulli.guide.encoder.net[0], lv.nets.Standardize)


def test_files_saved_before_standardize_load_with_the_paper_networks(tmp_path):
    vae = tiny(standardize=False)
    vae.observation.initialize(data(64))
    blob = vae.to_file_dict()
    config = json.loads(blob["config"])
    del config["args"]["standardize"]  # as written by earlier versions
    blob["config"] = json.dumps(config)
    torch.save(blob, tmp_path / "old.pt")
    again = lv.load(tmp_path / "old.pt")
    assert again.config["args"]["standardize"] is False
    assert torch.equal(again.reconstruct(data(8)), vae.reconstruct(data(8)))
    standardized = tiny()
    standardized.initialize(data(64))
    standardized.save(tmp_path / "new.pt")
    assert torch.equal(lv.load(tmp_path / "new.pt").reconstruct(data(8)),
                       standardized.reconstruct(data(8)))


def test_under_jit_the_standardising_layers_keep_their_first_batch():
    """A compiled program must not re-measure on later batches (it would move the networks'
    units every step)."""
    pyro.set_rng_seed(0)
    pool = data(400, scale=20.0)
    vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=8, blocks=1)
    svi = SVI(lv.annealed(vae.model), lv.annealed(vae.guide), pyro.optim.Adam({"lr": 1e-2}),
              JitTrace_ELBO(ignore_jit_warnings=True))
    for i in range(4):
        svi.step(torch.tensor(0.5), pool[100 * i: 100 * (i + 1)])
    first = pool[:100].double()
    for layer in (vae.guide.encoder.net[0], vae.model.decoder[-1]):
        assert torch.allclose(layer.mean.double(), first.mean(0), rtol=1e-5)
        assert torch.allclose(layer.std.double(), first.std(0, unbiased=False), rtol=1e-5)
