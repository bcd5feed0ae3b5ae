"""Contract test over every observation model, plus their individual behaviour."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

import pyro_lvae as lv
from pyro_lvae.observations import observation_from_config

D, K, N = 3, 2, 16


FACTORIES = {
    "fixed": lambda: lv.FixedScale(0.5),
    "learned-scalar": lambda: lv.LearnedScalarScale(init_scale=1.0, min_scale=1e-3),
    "learned-channel": lambda: lv.LearnedChannelScale(D),
    "learned-vector": lambda: lv.LearnedVectorScale(min_scale=1e-3),
    "scheduled": lambda: lv.ScheduledScale([1.0, 0.5, 0.25]),
    "bernoulli": lambda: lv.BernoulliObservation(),
    "continuous-bernoulli": lambda: lv.ContinuousBernoulliObservation(),
    "mixed": lambda: lv.MixedObservation([["continuous"], ["binary"], ["categorical", 3]],
                                         "learned-channel"),
}
VARIANTS = list(FACTORIES)
NORMAL = {"fixed", "learned-scalar", "learned-channel", "learned-vector", "scheduled"}


def make(kind):
    return FACTORIES[kind]()


def data_for(kind, device="cpu"):
    g = torch.Generator().manual_seed(5)
    if kind == "bernoulli":
        return (torch.rand(N, D, generator=g) > 0.5).float().to(device)
    if kind == "continuous-bernoulli":
        return torch.rand(N, D, generator=g).to(device)
    if kind == "mixed":
        return torch.stack([torch.randn(N, generator=g), (torch.rand(N, generator=g) > 0.5)
                            .float(), torch.randint(0, 3, (N,), generator=g).float()],
                           -1).to(device)
    return torch.randn(N, D, generator=g).to(device)


def test_the_paper_variants_are_registered():
    """These tests pin the paper's variants; tests/test_observation_contract.py holds the
    contract of every registered model, read from the registry."""
    from pyro_lvae.observations import OBSERVATIONS

    assert set(VARIANTS) <= set(OBSERVATIONS)


def tiny_vae(kind, device="cpu"):
    return lv.mlp_vae(D, K, make(kind), hidden=8, blocks=1).to(device)


@pytest.mark.parametrize("kind", VARIANTS)
def test_contract_trace_shapes_and_full_log_density(kind, device):
    vae = tiny_vae(kind, device)
    x = data_for(kind, device)
    guide_tr = pyro.poutine.trace(vae.guide).get_trace(x)
    tr = pyro.poutine.trace(pyro.poutine.replay(vae.model, trace=guide_tr)).get_trace(x)
    z_site, x_site = tr.nodes["z"], tr.nodes["x"]
    assert z_site["value"].shape == (N, K) and not z_site["is_observed"]
    assert x_site["is_observed"] and x_site["fn"].batch_shape == (N,)
    assert x_site["fn"].event_shape == (D,)
    if kind not in NORMAL:
        assert torch.isfinite(x_site["fn"].log_prob(x)).all()
        return
    # the log-density is the full Normal one: constants and log sigma included
    loc = x_site["fn"].base_dist.loc
    scale = x_site["fn"].base_dist.scale
    manual = (-0.5 * ((x - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    assert torch.allclose(x_site["fn"].log_prob(x), manual, atol=1e-5)


def _grads_and_change(vae, x, use_svi):
    before = {n: p.detach().clone() for n, p in vae.named_parameters()}
    if use_svi:
        svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
        for _ in range(3):
            svi.step(x)
        # SVI trained exactly the module's parameters (sigma included), no copies
        store = {id(v) for v in pyro.get_param_store()._params.values()}
        assert store == {id(p) for p in vae.parameters()}
    else:
        loss_fn = Trace_ELBO()(vae.model, vae.guide)
        params = list(loss_fn.parameters())
        assert {id(p) for p in params} == {id(p) for p in vae.parameters()}
        opt = torch.optim.Adam(params, lr=1e-2)
        for i in range(3):
            opt.zero_grad()
            loss = loss_fn(x)
            loss.backward()
            if i == 0:
                for n, p in vae.named_parameters():
                    assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient: {n}"
            opt.step()
    for n, p in vae.named_parameters():
        assert not torch.equal(before[n], p.detach()), f"parameter did not change: {n}"


@pytest.mark.parametrize("use_svi", [True, False], ids=["svi", "torch-optim"])
@pytest.mark.parametrize("kind", VARIANTS)
def test_contract_every_parameter_trains(kind, use_svi, device):
    vae = tiny_vae(kind, device)
    x = data_for(kind, device)
    _grads_and_change(vae, x, use_svi)
    names = {n for n, _ in vae.named_parameters()}
    if kind in ("learned-scalar", "learned-channel"):
        assert "model.observation.scale_unconstrained" in names
    if kind == "mixed":  # the table's Normal columns are an observation model of their own
        assert "model.observation.continuous.scale_unconstrained" in names


@pytest.mark.parametrize("kind", VARIANTS)
def test_contract_config_round_trip(kind):
    obs = make(kind)
    again = observation_from_config(obs.config())
    assert type(again) is type(obs) and again.config() == obs.config()


def test_learned_scalar_sigma_reaches_below_one_and_respects_floor():
    obs = lv.LearnedScalarScale(init_scale=1.0, min_scale=0.05)
    opt = torch.optim.Adam(obs.parameters(), lr=0.2)
    x = 0.01 * torch.randn(64, 4)  # data much sharper than the floor
    for _ in range(300):
        opt.zero_grad()
        (-obs(torch.zeros(64, 4), 1).log_prob(x).sum()).backward()
        opt.step()
    sigma = float(obs.scale.detach())
    assert 0.05 < sigma < 0.06  # went far below 1, stopped at the floor


def test_learned_vector_scale_split_floor_and_init():
    obs = lv.LearnedVectorScale(min_scale=0.01, init_scale=1.0)
    out = torch.zeros(5, 6)  # 3 locations, 3 raw scales
    p = obs(out, event_dim=1)
    assert p.event_shape == (3,)
    assert torch.allclose(p.base_dist.scale, torch.full((5, 3), 1.0), atol=1e-6)
    very_negative = torch.cat([torch.zeros(5, 3), torch.full((5, 3), -1e4)], dim=-1)
    assert torch.allclose(obs(very_negative, 1).base_dist.scale, torch.full((5, 3), 0.01))
    huge = torch.cat([torch.zeros(5, 3), torch.full((5, 3), 1e4)], dim=-1)
    assert torch.isfinite(obs(huge, 1).base_dist.scale).all()


def test_learned_vector_scale_splits_channels_of_images():
    obs = lv.LearnedVectorScale(init_scale=1.0)
    out = torch.randn(4, 2 * 3, 5, 5)
    p = obs(out, event_dim=3)
    assert p.event_shape == (3, 5, 5) and p.batch_shape == (4,)
    assert torch.equal(p.base_dist.loc, out[:, :3])


def test_scheduled_scale_follows_steps_and_holds_last():
    obs = lv.ScheduledScale([0.9, 0.5, 0.1])
    got = []
    for step in (0, 1, 2, 10):
        obs.set_step(step)
        got.append(float(obs(torch.zeros(1, 2), 1).base_dist.scale[0, 0]))
    assert got == pytest.approx([0.9, 0.5, 0.1, 0.1])


def test_scheduled_scale_from_history_replays_sigma():
    history = {"sigma": [1.0, 0.8, 0.3]}
    obs = lv.ScheduledScale.from_history(history)
    assert obs.schedule.tolist() == pytest.approx([1.0, 0.8, 0.3])


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "a"])
def test_non_positive_scales_are_refused_with_the_argument_named(bad):
    with pytest.raises(lv.ConfigError, match="scale"):
        lv.FixedScale(bad)
    with pytest.raises(lv.ConfigError, match="min_scale"):
        lv.LearnedScalarScale(min_scale=bad)
    with pytest.raises(lv.ConfigError, match="min_scale"):
        lv.LearnedVectorScale(min_scale=bad)


def test_initial_scale_is_a_share_of_the_root_mean_square_spread():
    x = torch.randn(500, 1, 2, 3, generator=torch.Generator().manual_seed(0))
    x = x * torch.arange(1.0, 7.0).reshape(1, 1, 2, 3) + 5.0
    rms = float(np.sqrt(np.var(x.reshape(500, -1).numpy().astype(np.float64), axis=0,
                               ddof=1).mean()))
    assert lv.initial_scale(x) == pytest.approx(0.5 * rms, rel=1e-5)
    assert lv.initial_scale(x, fraction=1.0) == pytest.approx(rms, rel=1e-5)
    assert lv.initial_scale(torch.tensor([[0, 2], [2, 0]], dtype=torch.uint8)) == \
        pytest.approx(0.5 * np.sqrt(2.0))
    assert 0.5 * rms == pytest.approx(0.5 * np.sqrt(np.mean(np.arange(1, 7) ** 2)), rel=0.1)


@pytest.mark.parametrize("bad, match", [
    (torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), "NaN"),
    (torch.ones(5, 3), "spread 0"),
    (torch.randn(1, 3), "at least two"),
    (torch.randn(7), "at least two"),
    ([[0.0, 1.0], [1.0, 0.0]], "torch.Tensor"),
])
def test_initial_scale_refuses_data_it_cannot_measure(bad, match):
    with pytest.raises(lv.DataError, match=match):
        lv.initial_scale(bad)


def test_floor_above_initial_scale_is_refused():
    with pytest.raises(lv.ConfigError, match="init_scale > min_scale"):
        lv.LearnedScalarScale(init_scale=0.1, min_scale=0.5)


def test_bad_schedules_are_refused():
    with pytest.raises(lv.ConfigError, match="positive"):
        lv.ScheduledScale([1.0, 0.0])
    with pytest.raises(lv.ConfigError, match="non-empty"):
        lv.ScheduledScale([])


def test_fixed_scale_matches_torch_normal():
    obs = lv.FixedScale(0.3)
    loc = torch.randn(7, 2)
    x = torch.randn(7, 2)
    expected = dist.Normal(loc, 0.3).log_prob(x).sum(-1)
    assert torch.allclose(obs(loc, 1).log_prob(x), expected)
