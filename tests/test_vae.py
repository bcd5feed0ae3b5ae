"""The VAE container: Pyro compatibility, queries, files."""

import pyro
import pytest
import torch
from pyro.infer import SVI, Predictive, RenyiELBO, Trace_ELBO, TraceMeanField_ELBO

import pyro_lvae as lv


def tiny(obs=None, **kw):
    return lv.mlp_vae(2, 2, obs or lv.LearnedScalarScale(), hidden=8, blocks=1, **kw)


def test_model_and_guide_have_distinct_param_store_names():
    vae = tiny()
    x = torch.randn(4, 2)
    Trace_ELBO().loss(vae.model, vae.guide, x)
    names = list(pyro.get_param_store().keys())
    assert any(n.startswith(f"{vae.name}.model.decoder") for n in names)
    assert any(n.startswith(f"{vae.name}.guide.encoder") for n in names)
    assert len(names) == len(set(names)) == len(list(vae.parameters()))


def test_two_vaes_never_share_parameters_in_the_param_store():
    a, b = tiny(), tiny()
    x = torch.randn(4, 2)
    svi = SVI(a.model, a.guide, pyro.optim.Adam({"lr": 0.1}), Trace_ELBO())
    svi.step(x)
    b.initialize(x)  # b's start from the data, before the snapshot
    b_before = {k: v.clone() for k, v in b.state_dict().items()}
    Trace_ELBO().loss(b.model, b.guide, x)  # b's first run must not pick up a's weights
    for k, v in b.state_dict().items():
        assert torch.equal(v, b_before[k])
    assert not torch.equal(a.state_dict()["model.decoder.0.out.weight"],
                           b.state_dict()["model.decoder.0.out.weight"])


@pytest.mark.parametrize("elbo", [Trace_ELBO(), TraceMeanField_ELBO(),
                                  RenyiELBO(alpha=0.5, num_particles=2)],
                         ids=["trace", "meanfield", "renyi"])
def test_svi_with_any_elbo_lowers_the_loss(elbo):
    vae = tiny()
    x = lv.datasets.manifold2d(64, torch.Generator().manual_seed(0))
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), elbo)
    first = sum(svi.evaluate_loss(x) for _ in range(20)) / 20
    for _ in range(150):
        svi.step(x)
    last = sum(svi.evaluate_loss(x) for _ in range(20)) / 20
    assert last < first - 10


def test_predictive_draws_latents_and_generates():
    vae = tiny()
    x = torch.randn(5, 2)
    post = Predictive(vae.model, guide=vae.guide, num_samples=7)(x)
    assert post["z"].shape == (7, 5, 2)
    prior = Predictive(vae.model, num_samples=3, return_sites=["x", "z"])(None, batch_size=6)
    assert prior["x"].shape == (3, 6, 2) and prior["z"].shape == (3, 6, 2)


def test_encode_reconstruct_sample_modes():
    torch.manual_seed(0)
    vae = tiny(lv.FixedScale(0.5))
    x = torch.randn(10, 2)
    vae.initialize(x)  # the standardising layers
    z_mean = vae.encode(x)
    assert torch.equal(z_mean, vae.encode(x))  # posterior mean: deterministic
    assert not torch.equal(vae.encode(x, mode="sample"), z_mean)
    rec = vae.reconstruct(x)
    assert torch.allclose(rec, vae.likelihood(z_mean).mean)
    noisy = vae.reconstruct(x, mode="sample")
    assert noisy.shape == rec.shape and not torch.allclose(noisy, rec)
    means = vae.sample(2000, mode="mean")
    draws = vae.sample(2000, mode="sample")
    # draws of p(x|z) carry the fixed sigma of 0.5 around the means
    assert draws.std() > means.std()
    with pytest.raises(lv.ConfigError, match="mode"):
        vae.reconstruct(x, mode="median")


def test_save_load_round_trip_weights_only(tmp_path):
    vae = tiny(lv.LearnedVectorScale(min_scale=0.01))
    x = torch.randn(6, 2)
    vae.initialize(x)
    with torch.no_grad():
        vae.model.decoder[0].out.bias.add_(0.3)
    path = tmp_path / "m.pt"
    vae.save(path)
    raw = torch.load(path, weights_only=True)  # no pickle needed
    assert raw["format"] == "pyro-lvae-model"
    again = lv.load(path, map_location="cpu")
    assert isinstance(again.observation, lv.LearnedVectorScale)
    assert again.observation.min_scale == 0.01
    assert torch.equal(again.reconstruct(x), vae.reconstruct(x))
    assert again.name != vae.name  # its own param-store names


def test_scheduled_scale_saves_its_schedule(tmp_path):
    vae = tiny(lv.ScheduledScale([0.9, 0.4, 0.2]))
    vae.save(tmp_path / "s.pt")
    again = lv.load(tmp_path / "s.pt")
    assert again.observation.schedule.tolist() == pytest.approx([0.9, 0.4, 0.2])


def test_hand_assembled_vae_saves_and_loads_state(tmp_path):
    enc = lv.GaussianEncoder(torch.nn.Linear(3, 4), 2)
    dec = torch.nn.Linear(2, 3)
    vae = lv.VAE(enc, dec, 2, lv.FixedScale(1.0), data_shape=3)
    vae.save(tmp_path / "c.pt")
    with pytest.raises(lv.CheckpointError, match="load_state"):
        lv.load(tmp_path / "c.pt")
    other = lv.VAE(lv.GaussianEncoder(torch.nn.Linear(3, 4), 2), torch.nn.Linear(2, 3), 2,
                   lv.FixedScale(1.0), data_shape=3)
    other.load_state(tmp_path / "c.pt")
    assert torch.equal(other.model.decoder.weight, dec.weight)


def test_to_moves_everything_and_keeps_param_store_in_sync():
    vae = tiny()
    x = torch.randn(4, 2)
    Trace_ELBO().loss(vae.model, vae.guide, x)
    vae.double()
    assert vae.model.prior.loc.dtype == vae.dtype == torch.float64
    loss = Trace_ELBO().loss(vae.model, vae.guide, x.double())
    assert isinstance(loss, float)
    store = {id(v) for v in pyro.get_param_store()._params.values()}
    assert store == {id(p) for p in vae.parameters()}


def test_fixed_star_builds_a_fresh_fixed_model_at_the_learned_sigma():
    ls = tiny(lv.LearnedScalarScale())
    with torch.no_grad():
        ls.model.observation.scale_unconstrained.fill_(-2.0)
    star = lv.fixed_star(ls)
    assert isinstance(star.observation, lv.FixedScale)
    assert float(star.observation.scale) == pytest.approx(float(ls.observation.scale.detach()))
    assert star.config["args"] == ls.config["args"]
    with pytest.raises(lv.ConfigError, match="LS-VAE"):
        lv.fixed_star(tiny(lv.FixedScale(1.0)))


def test_decoder_of_the_wrong_width_is_named():
    enc = lv.GaussianEncoder(torch.nn.Linear(2, 4), 2)
    vae = lv.VAE(enc, torch.nn.Linear(2, 2), 2, lv.LearnedVectorScale(), data_shape=2)
    vae.initialize(torch.randn(4, 2))
    with pytest.raises(lv.ConfigError, match="2 output"):
        vae.sample(3)


@pytest.mark.cuda
def test_vae_runs_on_cuda():
    vae = tiny().to("cuda")
    x = torch.randn(8, 2, device="cuda")
    loss = Trace_ELBO().loss(vae.model, vae.guide, x)
    assert torch.isfinite(torch.tensor(loss))
    assert vae.sample(4).device.type == "cuda"
