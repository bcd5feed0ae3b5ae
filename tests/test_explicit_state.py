"""Explicit state: data-dependent starts are measured by ``vae.initialize(x)`` (or training's
first batch) and never by a query; every observation model reports its standard deviation
(``spread``); Lightning starts a model/guide pair of one's own on its first batch."""

import copy
import math

import lightning.pytorch as pl
import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO
from pyro.nn import PyroModule
from torch import nn

import pyro_lvae as lv
from pyro_lvae import evaluate, observations
from pyro_lvae.errors import ConfigError, NotInitialized
from pyro_lvae.nets import Standardize
from pyro_lvae.observations.calibrated import CalibratedNormal
from pyro_lvae.observations.counts import (
    NegativeBinomialLogMean,
    PoissonLogMean,
    ZeroInflatedNBLogMean,
)
from pyro_lvae.observations.discrete import Discretized
from pyro_lvae.observations.lowrank import ReshapedEvent
from pyro_lvae.observations.table import MixedColumns
from pyro_lvae.training import AveragedWeights, Checks
from pyro_lvae.training.averaging import load_averaged
from pyro_lvae.training.lightning import PyroLVAEModule, initialize_modules


def tiny(obs=None, **kwargs):
    return lv.mlp_vae(2, 2, obs or lv.LearnedScalarScale(), hidden=8, blocks=1, **kwargs)


def data(n=64, seed=0, scale=1.0):
    return scale * lv.datasets.manifold2d(n, torch.Generator().manual_seed(seed))


# ---- 4. queries never measure ---------------------------------------------------------------
QUERIES = {
    "vae.reconstruct": lambda vae, x: vae.reconstruct(x),
    "vae.sample": lambda vae, x: vae.sample(4),
    "vae.encode": lambda vae, x: vae.encode(x),
    "vae.sigma": lambda vae, x: vae.sigma(),
    "vae.spread": lambda vae, x: vae.spread(x),
    "vae.kl_per_point": lambda vae, x: vae.kl_per_point(x),
    "vae.likelihood": lambda vae, x: vae.likelihood(torch.zeros(3, 2)),
    "evaluate.elbo_parts": lambda vae, x: evaluate.elbo_parts(vae, x),
    "evaluate.iwae": lambda vae, x: evaluate.iwae(vae, x, num_samples=4),
    "evaluate.active_units": lambda vae, x: evaluate.active_units(vae, x),
    "evaluate.kl_per_dim": lambda vae, x: evaluate.kl_per_dim(vae, x),
    "evaluate.latent_surgery": lambda vae, x: evaluate.latent_diagnostics(vae, x),
    "evaluate.scale_summary": lambda vae, x: evaluate.scale_summary(vae, x),
}


@pytest.mark.parametrize("name", list(QUERIES))
def test_a_query_on_an_unstarted_vae_is_an_error_and_measures_nothing(name):
    vae = tiny()
    test_batch = 10 * torch.randn(50, 2)  # held-out data of another scale
    assert not vae.initialized
    with pytest.raises(NotInitialized, match=r"vae\.initialize\(x\)") as error:
        QUERIES[name](vae, test_batch)
    assert name in str(error.value)
    assert isinstance(error.value, ConfigError)
    # nothing was measured on the test batch: the start comes from the training data
    assert vae.observation.init_scale is None
    assert not any(m.started for m in vae.modules() if isinstance(m, Standardize))
    train = data()
    vae.initialize(train)
    assert vae.initialized
    assert vae.observation.init_scale == pytest.approx(lv.initial_scale(train))
    QUERIES[name](vae, test_batch)  # now it runs


def test_sigma_before_the_start_is_an_error_not_the_placeholder_one():
    vae = tiny(standardize=False)
    with pytest.raises(NotInitialized, match="the data start of LearnedScalarScale"):
        vae.sigma()
    x = data(scale=0.1)
    vae.initialize(x)
    assert float(vae.sigma()) == pytest.approx(lv.initial_scale(x))
    assert float(vae.sigma()) < 0.5


def test_the_error_names_every_pending_part():
    vae = tiny(lv.LearnedVectorScale(), prior=lv.VampPrior(3))
    with pytest.raises(NotInitialized) as error:
        vae.sample(2)
    message = str(error.value)
    for part in ("LearnedVectorScale", "VampPrior", "Standardize layer decoder",
                 "Standardize layer encoder"):
        assert part in message
    vae.initialize(data())
    assert vae.prior.started and vae.initialized
    assert vae.sample(2).shape == (2, 2)


def test_a_vae_with_nothing_data_dependent_is_started_from_the_beginning():
    for vae in (tiny(lv.FixedScale(0.5), standardize=False),
                tiny(lv.LearnedScalarScale(init_scale=1.0), standardize=False),
                tiny(lv.BernoulliObservation(), standardize=False),
                tiny(lv.FixedScale(0.5), standardize=False, prior=lv.MixturePrior(2))):
        assert vae.initialized
        assert vae.sample(3).shape == (3, 2)
    assert not tiny(lv.FixedScale(0.5)).initialized  # standardize=True measures the data


def test_initialize_is_explicit_once_and_checks_the_data():
    vae = tiny()
    x = data()
    vae.initialize(x)
    start = vae.observation.init_scale
    mean = vae.guide.encoder.net[0].mean.clone()
    vae.initialize(100 * x)  # measured: a no-op
    assert vae.observation.init_scale == start
    assert torch.equal(vae.guide.encoder.net[0].mean, mean)
    with pytest.raises(lv.DataError, match="shape"):
        tiny().initialize(torch.randn(8, 3))
    with pytest.raises(lv.DataError, match="binary"):
        tiny(lv.BernoulliObservation()).initialize(torch.rand(8, 2))


def test_a_plain_svi_loop_starts_at_its_first_step():
    vae = tiny(lv.LearnedVectorScale(), prior=lv.VampPrior(4))
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    first = data(32, seed=1, scale=0.2)
    svi.step(first)
    assert vae.initialized
    assert vae.observation.init_scale == pytest.approx(lv.initial_scale(first))
    assert torch.allclose(vae.prior.pseudo_inputs, first[:4], atol=2e-3)  # one Adam step
    svi.step(data(32, seed=2, scale=5.0))  # later batches do not move it
    assert vae.observation.init_scale == pytest.approx(lv.initial_scale(first))


def test_started_survives_files_copies_checkpoints_and_averaging(tmp_path):
    x = data(128)
    vae = tiny(lv.LearnedVectorScale(), prior=lv.VampPrior(3))
    history = lv.fit(vae, x, steps=4, batch_size=32, seed=0, out=tmp_path,
                     tools=[Checks(every=2), AveragedWeights("ema:0.5")])
    assert vae.initialized
    vae.save(tmp_path / "m.pt")
    fresh = tiny(lv.LearnedVectorScale(), prior=lv.VampPrior(3))
    fresh.load_state_dict(vae.state_dict())
    reloaded = tiny(lv.LearnedVectorScale(), prior=lv.VampPrior(3))
    reloaded.load_state(tmp_path / "m.pt")
    copies = {"lv.load": lv.load(tmp_path / "m.pt"), "VAE.load": lv.VAE.load(tmp_path / "m.pt"),
              "checkpoint": lv.load(tmp_path / "checkpoint.pt"), "state_dict": fresh,
              "load_state": reloaded, "deepcopy": copy.deepcopy(vae),
              "history.averaged": history.averaged,
              "load_averaged": load_averaged(tmp_path / "checkpoint.pt")}
    for name, other in copies.items():
        assert other.initialized, name
        assert other.observation.init_scale == vae.observation.init_scale, name
        other.initialize(100 * x)  # started: a no-op
        assert other.observation.init_scale == vae.observation.init_scale, name
    assert torch.equal(copies["lv.load"].reconstruct(x), vae.reconstruct(x))


def test_a_file_saved_before_the_start_loads_unstarted(tmp_path):
    vae = tiny()
    vae.save(tmp_path / "m.pt")
    again = lv.load(tmp_path / "m.pt")
    assert not again.initialized
    with pytest.raises(NotInitialized):
        again.reconstruct(data(8))
    fresh = tiny()
    fresh.initialize(data())
    fresh.load_state_dict(vae.state_dict())  # an unstarted state: pending again
    assert not fresh.initialized
    fresh.initialize(data())
    assert fresh.initialized


def test_rebuild_and_fixed_star_build_fresh_vaes():
    ls = tiny(standardize=False)
    ls.initialize(data())
    star = lv.fixed_star(ls)
    assert star.initialized  # a fixed sigma, no standardising layer: nothing to measure
    assert float(star.sigma()) == pytest.approx(float(ls.sigma()))
    again = lv.rebuild(ls, lv.LearnedScalarScale())
    assert not again.initialized  # its own data start


# ---- 5. the standard deviation of every family ----------------------------------------------
#: the settings a registered observation model needs beyond its defaults
NEEDS = {
    "fixed": {"scale": 0.3},
    "learned-channel": {"channels": 2},
    "scheduled": {"schedule": [0.7, 0.3]},
    "mixed": {"schema": [["continuous"], ["integer", 1.0, 0.0, 4.0], ["binary"],
                         ["categorical", 3]]},
    # counts: the plain mean (no library sizes to give) and a theta per channel (2)
    "poisson": {"mean": "plain"},
    "negative-binomial": {"mean": "plain", "init_theta": 1.5, "dims": 2},
    "zero-inflated-nb": {"mean": "plain", "init_theta": 1.5, "dims": 2},
}


def _reference_stddev(d):
    """The standard deviation of each element of ``d``'s value, from torch's distributions
    (or by brute force where torch has none)."""
    if isinstance(d, dist.Independent):
        return _reference_stddev(d.base_dist)
    if isinstance(d, ReshapedEvent):
        return _reference_stddev(d.base_dist).reshape(d.batch_shape + d.event_shape)
    if isinstance(d, CalibratedNormal):
        return torch.distributions.Normal(d.loc, d.scale).stddev
    if isinstance(d, Discretized):  # every level's mass
        probs = d.bin_log_probs().exp()
        levels = torch.arange(256, dtype=probs.dtype) / 255
        mean = (probs * levels).sum(-1, keepdim=True)
        return (probs * (levels - mean) ** 2).sum(-1).sqrt()
    if isinstance(d, MixedColumns):
        lay = d.layout
        out = torch.full(d.batch_shape + d.event_shape, math.nan, dtype=d.loc.dtype)
        out[..., lay["cont"]] = torch.distributions.Normal(d.loc, d.scale).stddev
        out[..., lay["bin"]] = torch.distributions.Bernoulli(logits=d.bin_logits).stddev
        return out
    if isinstance(d, torch.distributions.StudentT):
        return d.variance.sqrt()
    if isinstance(d, ZeroInflatedNBLogMean):  # Pyro's own, theta = exp(log theta)
        theta, mu = d.log_theta.exp(), d.log_mean.exp()
        return dist.ZeroInflatedNegativeBinomial(theta, logits=mu.log() - theta.log(),
                                                 gate_logits=d.gate_logits).variance.sqrt()
    if isinstance(d, NegativeBinomialLogMean):
        theta, mu = d.log_theta.exp(), d.log_mean.exp()
        return dist.GammaPoisson(theta, theta / mu).variance.sqrt()
    if isinstance(d, PoissonLogMean):
        return dist.Poisson(d.log_mean.exp()).stddev
    if type(d).__module__.startswith(("torch.distributions", "pyro.distributions.torch")):
        return d.stddev
    pytest.fail(f"no reference standard deviation for {type(d).__name__}: add one here")


def _shapes(kind):
    return [(4,)] if kind == "mixed" else [(2,), (2, 3, 3)]


@pytest.mark.parametrize("kind", sorted(observations.OBSERVATIONS))
def test_spread_is_the_standard_deviation_of_every_registered_family(kind):
    torch.manual_seed(0)
    for shape in _shapes(kind):
        obs = observations.build(kind, **NEEDS.get(kind, {}))
        if not obs.initialized:
            obs.initialize(torch.rand((16,) + shape))
        assert obs.initialized
        out = torch.randn((3,) + obs.output_shape(shape), dtype=torch.float64)
        with torch.no_grad():
            got = obs.spread(out, len(shape))
            want = _reference_stddev(obs.forward(out, len(shape)))
        assert got.shape == (3,) + shape
        assert torch.allclose(got, want.expand_as(got), rtol=1e-6, atol=1e-9, equal_nan=True)
        assert bool((got[~got.isnan()] >= 0).all())


def test_the_spread_of_a_student_t_is_not_its_scale_and_infinite_at_low_df():
    obs = lv.StudentTObservation(init_scale=0.5, init_df=4.0)
    out = torch.zeros(2, 4)
    assert torch.allclose(obs.spread(out, 1), torch.full((2, 2), 0.5 * math.sqrt(2)))
    heavy = lv.StudentTObservation(init_scale=0.5, init_df=1.5, min_df=1.0)
    assert bool(torch.isinf(heavy.spread(out, 1)).all())


def test_the_spread_of_a_mixed_table_by_column():
    obs = lv.MixedObservation([["continuous"], ["binary"], ["categorical", 3]], "fixed",
                              sigma=0.4)
    out = torch.zeros(1, obs.output_shape((3,))[0])  # binary logit 0: p = 1/2
    got = obs.spread(out, 1)
    assert got[0, :2].tolist() == pytest.approx([0.4, 0.5])
    assert math.isnan(float(got[0, 2]))


@pytest.mark.parametrize("obs, factor", [
    (lv.FixedScale(0.3), None), (lv.LearnedScalarScale(), None), (lv.LearnedVectorScale(), None),
    (lv.CalibratedScale(init_scale=0.6), None), (lv.StudentTObservation(), "t"),
    (lv.LowRankNormal(rank=1), "low-rank"), (lv.BernoulliObservation(), "bernoulli"),
])
def test_vae_spread_for_every_family(obs, factor):
    x = (data() > 0).float() if factor == "bernoulli" else data()
    vae = tiny(obs)
    vae.initialize(x)
    spread = vae.spread(x)
    assert spread.shape == x.shape
    if factor is None:  # a Normal: its sigma
        assert torch.allclose(spread, vae.sigma(x))
    elif factor == "t":
        df = float(obs.df.detach())
        assert torch.allclose(spread, vae.sigma(x) * math.sqrt(df / (df - 2)))
    else:  # no sigma: spread only
        with pytest.raises(ConfigError, match=r"vae\.spread\(x\)"):
            vae.sigma(x)
    if obs.shared_scale is not None:
        assert torch.allclose(vae.spread(), vae.sigma())
    else:
        with pytest.raises(ConfigError, match=r"vae\.spread\(x\)"):
            vae.spread()


# ---- 6. Lightning starts a model/guide pair of one's own ------------------------------------
class PairModel(PyroModule):
    def __init__(self):
        super().__init__("pair_model")
        self.net = nn.Linear(1, 2)
        self.observation = lv.LearnedScalarScale()  # its start comes from the data

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(1), x.new_ones(1)).to_event(1))
            return pyro.sample("x", self.observation(self.net(z), event_dim=1), obs=x)


class PairGuide(PyroModule):
    def __init__(self):
        super().__init__("pair_guide")
        self.net = nn.Sequential(Standardize(2), nn.Linear(2, 2))

    def forward(self, x):
        out = self.net(x)
        with pyro.plate("data", x.shape[0]):
            scale = F.softplus(out[:, 1:]) + 1e-3
            return pyro.sample("z", dist.Normal(out[:, :1], scale).to_event(1))


def test_lightning_starts_a_model_guide_pair_of_ones_own(tmp_path):
    x = data(200, scale=0.2)
    model, guide = PairModel(), PairGuide()
    module = PyroLVAEModule(model, guide, lr=1e-2)
    loader = torch.utils.data.DataLoader(x, batch_size=50, shuffle=False)
    pl.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=False,
               enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, default_root_dir=tmp_path).fit(module, loader)
    first = x[:50]
    assert model.observation.init_scale == pytest.approx(lv.initial_scale(first))
    standardize = guide.net[0]
    assert standardize.started
    assert torch.allclose(standardize.mean, first.mean(0))


def test_initialize_modules_calls_the_highest_initialize():
    calls = []

    class Measured(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Standardize(2)

        def initialize(self, x):  # answers for the layer inside it
            calls.append(x.shape)

    holder = nn.Sequential(nn.Linear(2, 2), Measured(), Standardize(2))
    assert initialize_modules(holder, torch.randn(5, 2)) == ["1", "2"]
    assert calls == [(5, 2)] and not holder[1].inner.started and holder[2].started
