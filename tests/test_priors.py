"""The contract every prior p(z) follows, on a tiny VAE: a density that integrates to one and
agrees with its own sampler, a gradient on every parameter, every Pyro path (Trace_ELBO,
JitTrace_ELBO, TraceMeanField_ELBO, Predictive, annealing), fit's verified direct loss, files."""

import copy
import json
import math

import pyro
import pytest
import torch
from helpers import leave_process_group
from pyro.infer import (
    SVI,
    JitTrace_ELBO,
    Predictive,
    Trace_ELBO,
    TraceMeanField_ELBO,
)

import pyro_lvae as lv
from pyro_lvae.direct_elbo import direct_elbo_terms
from pyro_lvae.objective import elbo_terms
from pyro_lvae.training import Checks
from pyro_lvae.training.step import DIRECT

#: one or more tiny instances of every registered prior (a new kind must be added here)
CASES = {
    "normal": lambda: lv.StandardNormal(),
    "mixture": lambda: lv.MixturePrior(components=3),
    "vamp": lambda: lv.VampPrior(components=3),
    "flow": lambda: lv.FlowPrior(layers=2, hidden=8),
    "flow-coupling": lambda: lv.FlowPrior("spline-coupling", layers=2, hidden=8),
    "flow-spline": lambda: lv.FlowPrior("spline", layers=1),
}


def tiny(prior, obs=None):
    return lv.mlp_vae(2, 2, obs or lv.LearnedScalarScale(init_scale=0.5), hidden=8, blocks=1,
                      prior=prior)


def data(n=32, seed=0):
    return lv.datasets.manifold2d(n, torch.Generator().manual_seed(seed))


def prior_params(vae):
    return dict(vae.prior.named_parameters())


@pytest.fixture(params=list(CASES))
def case(request):
    return request.param


def _vae(case):
    vae = tiny(CASES[case]())
    vae.initialize(data())  # what the first batch measures (a VampPrior's start too)
    return vae


def test_every_registered_prior_is_in_the_contract():
    assert {name.split("-")[0] for name in CASES} == set(lv.priors.PRIORS)


def test_density_integrates_to_one_and_matches_its_sampler(case):
    vae = _vae(case)
    with torch.no_grad():
        p = vae.prior()
        assert p.event_shape == (2,) and p.batch_shape == ()
        step = 0.01  # a flow's random start has sharp bins: a coarser grid misses mass
        axis = torch.arange(-6, 6, step) + step / 2
        grid = torch.cartesian_prod(axis, axis)
        density = p.log_prob(grid).exp()
        assert torch.isfinite(density).all()
        assert float(density.sum() * step**2) == pytest.approx(1.0, abs=0.01)
        mean = (density[:, None] * grid).sum(0) * step**2
        draws = p.sample((20000,))
        assert draws.shape == (20000, 2)
        assert torch.allclose(draws.mean(0), mean, atol=0.05)


def test_every_prior_parameter_gets_a_gradient_from_trace_elbo(case):
    vae = _vae(case)
    loss = Trace_ELBO().differentiable_loss(vae.model, vae.guide, data())
    loss.backward()
    params = prior_params(vae)
    assert (len(params) == 0) == (case == "normal")
    for name, p in params.items():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_svi_with_a_pyro_optimiser_trains_every_prior_parameter(case):
    vae = _vae(case)
    before = {k: v.detach().clone() for k, v in prior_params(vae).items()}
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(data()) for _ in range(3)]
    assert all(math.isfinite(v) for v in losses)
    for name, p in prior_params(vae).items():
        assert not torch.equal(p, before[name]), name
    # one param-store entry per tensor, all of them the VAE's own
    store = dict(pyro.get_param_store().named_parameters())
    assert len({id(v) for v in store.values()}) == len(store) == len(list(vae.parameters()))


def test_vamp_prior_trains_the_encoder_exactly_once_per_svi_step():
    vae = _vae("vamp")
    x = data()
    encoder = dict(vae.guide.encoder.named_parameters())
    before = {k: v.detach().clone() for k, v in encoder.items()}
    pyro.set_rng_seed(1)
    loss = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
    grads = torch.autograd.grad(loss, list(encoder.values()) + [vae.prior.pseudo_inputs])
    lr = 0.1  # a second update of the same tensor would double the change
    pseudo = vae.prior.pseudo_inputs.detach().clone()
    pyro.set_rng_seed(1)
    SVI(vae.model, vae.guide, pyro.optim.SGD({"lr": lr}), Trace_ELBO()).step(x)
    for (name, p), g in zip(encoder.items(), grads, strict=False):
        assert torch.allclose(p.detach() - before[name], -lr * g, atol=1e-6), name
    assert torch.allclose(vae.prior.pseudo_inputs.detach() - pseudo, -lr * grads[-1],
                          atol=1e-6)
    names = [k for k in pyro.get_param_store().keys() if "encoder" in k]
    assert names and all(k.startswith(f"{vae.name}.guide.encoder") for k in names)


def test_jit_elbo_trains_every_prior_parameter_with_an_annealed_beta(case):
    vae = _vae(case)
    x = data()
    Trace_ELBO().loss(vae.model, vae.guide, x)  # data starts happen eagerly
    before = {k: v.detach().clone() for k, v in prior_params(vae).items()}
    svi = SVI(lv.annealed(vae.model), lv.annealed(vae.guide), pyro.optim.Adam({"lr": 1e-2}),
              JitTrace_ELBO())
    losses = [svi.step(torch.tensor(beta), x) for beta in (0.5, 0.7, 1.0)]
    assert all(math.isfinite(v) for v in losses)
    for name, p in prior_params(vae).items():  # not baked into the compiled trace
        assert not torch.equal(p, before[name]), name


def test_annealed_trace_elbo_is_reconstruction_plus_beta_kl(case):
    vae = _vae(case)
    x = data()
    pyro.set_rng_seed(2)
    loss = Trace_ELBO().loss(lv.annealed(vae.model), lv.annealed(vae.guide), 0.3, x)
    pyro.set_rng_seed(2)
    terms = elbo_terms(vae.model, vae.guide, x, beta=0.3)
    assert loss == pytest.approx(float(terms.loss.detach()), rel=1e-5)
    with lv.weight_latents(0.3):
        pyro.set_rng_seed(2)
        assert Trace_ELBO().loss(vae.model, vae.guide, x) == pytest.approx(loss, rel=1e-5)


def test_trace_mean_field_elbo_is_analytic_for_the_normal_prior_and_trace_elbo_otherwise(case):
    vae = _vae(case)
    x = data()
    pyro.set_rng_seed(3)
    mean_field = TraceMeanField_ELBO().loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(3)
    trace = Trace_ELBO().loss(vae.model, vae.guide, x)
    if vae.prior.analytic_kl:
        pyro.set_rng_seed(3)
        rec = elbo_terms(vae.model, vae.guide, x).reconstruction
        kl = vae.kl_per_point(x) * x.shape[0]
        assert mean_field == pytest.approx(float(rec.detach()) + kl, rel=1e-4)
        assert mean_field != pytest.approx(trace, rel=1e-6)
    else:  # no closed form: Pyro falls back to the same one-draw estimate
        assert mean_field == pytest.approx(trace, rel=1e-6)


def test_predictive_draws_from_the_prior_and_the_posterior(case):
    vae = _vae(case)
    prior = Predictive(vae.model, num_samples=3, return_sites=["x", "z"])(None, batch_size=4)
    assert prior["z"].shape == (3, 4, 2) and prior["x"].shape == (3, 4, 2)
    vectorized = Predictive(vae.model, num_samples=3, parallel=True,
                            return_sites=["z"])(None, batch_size=4)
    assert vectorized["z"].shape == (3, 4, 2)
    post = Predictive(vae.model, guide=vae.guide, num_samples=2)(data(5))
    assert post["z"].shape == (2, 5, 2)
    assert torch.isfinite(vae.sample(6)).all()


def test_fit_computes_trace_elbo_exactly_for_every_prior(case):
    vae = _vae(case)
    x = data()
    vae.initialize(x)
    assert lv.DirectELBO.why_not(vae.model, vae.guide, x) is None
    pyro.set_rng_seed(4)
    reference = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(4)
    direct = direct_elbo_terms(vae, x).loss
    assert float(direct.detach()) == pytest.approx(float(reference.detach()), rel=1e-5)


@pytest.mark.parametrize("obs", ["learned-scalar", "learned-vector"])
def test_fit_trains_every_prior_with_each_learned_sigma(case, obs):
    vae = tiny(CASES[case](), lv.observations.build(obs, init_scale=0.5))
    before = {k: v.detach().clone() for k, v in prior_params(vae).items()}
    h = lv.fit(vae, data(64), steps=4, batch_size=32, seed=0, tools=[Checks(every=2)])
    assert h.objective == DIRECT and torch.isfinite(torch.as_tensor(h["loss"])).all()
    for name, p in prior_params(vae).items():
        assert not torch.equal(p, before[name]), name


def test_save_and_load_keep_the_prior_and_its_density(case, tmp_path):
    vae = _vae(case)
    z = torch.randn(5, 2)
    with torch.no_grad():
        expected = vae.prior().log_prob(z)
    vae.save(tmp_path / "m.pt")
    loaded = lv.load(tmp_path / "m.pt")
    assert type(loaded.prior) is type(vae.prior)
    assert loaded.prior.config() == vae.prior.config()
    with torch.no_grad():
        assert torch.allclose(loaded.prior().log_prob(z), expected)
    assert loaded.sample(3).shape == (3, 2)
    clone = copy.deepcopy(vae)
    with torch.no_grad():
        assert torch.allclose(clone.prior().log_prob(z), expected)


def test_a_loaded_vamp_prior_keeps_its_pseudo_inputs(tmp_path):
    vae = _vae("vamp")
    assert vae.prior.started
    vae.save(tmp_path / "m.pt")
    loaded = lv.load(tmp_path / "m.pt")
    assert loaded.prior.started
    loaded.model.prior.initialize(data(seed=9))  # no second start from other data
    assert torch.equal(loaded.prior.pseudo_inputs, vae.prior.pseudo_inputs)


def test_vamp_pseudo_inputs_start_at_the_first_batch():
    vae = tiny(lv.VampPrior(components=4))
    x = data(10)
    Trace_ELBO().loss(vae.model, vae.guide, x)
    assert torch.equal(vae.prior.pseudo_inputs.detach(), x[:4])


def test_a_copied_vamp_prior_uses_the_copys_encoder():
    vae = _vae("vamp")
    clone = copy.deepcopy(vae)
    assert clone.prior._guide[0] is clone.guide
    with torch.no_grad():
        for p in clone.guide.encoder.parameters():
            p.add_(1.0)
        assert not torch.allclose(clone.prior().log_prob(torch.zeros(1, 2)),
                                  vae.prior().log_prob(torch.zeros(1, 2)))


def _old_file(vae, path):
    """What :meth:`VAE.save` wrote before priors were modules: the standard Normal's buffers
    as the model's prior_loc / prior_scale, and no prior in the configuration."""
    blob = vae.to_file_dict()
    state = {k.replace("model.prior.loc", "model.prior_loc")
              .replace("model.prior.scale", "model.prior_scale"): v
             for k, v in blob["state_dict"].items()}
    config = json.loads(blob["config"])
    del config["prior"]
    blob.update(state_dict=state, config=json.dumps(config))
    torch.save(blob, path)
    return state


def test_files_saved_before_priors_were_modules_still_load(tmp_path):
    vae = tiny(None)
    vae.initialize(data(8))
    state = _old_file(vae, tmp_path / "old.pt")
    assert "model.prior_loc" in state
    loaded = lv.load(tmp_path / "old.pt")
    assert isinstance(loaded.prior, lv.StandardNormal)
    x = data(8)
    assert torch.allclose(loaded.reconstruct(x), vae.reconstruct(x))
    fresh = tiny(None)
    fresh.load_state(tmp_path / "old.pt")
    fresh.load_state_dict(state)  # plain torch loading too
    assert torch.equal(fresh.prior.loc, torch.zeros(2))


def test_checkpoints_saved_before_priors_were_modules_resume(tmp_path):
    lv.fit(tiny(None), data(64), steps=4, batch_size=32, seed=0, out=tmp_path,
           tools=[Checks(every=2)])
    blob = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    blob["model"]["state_dict"] = {k.replace("model.prior.", "model.prior_"): v
                                   for k, v in blob["model"]["state_dict"].items()}
    torch.save(blob, tmp_path / "checkpoint.pt")
    vae = lv.load(tmp_path / "checkpoint.pt")
    h = lv.fit(vae, data(64), steps=6, batch_size=32, seed=0, out=tmp_path, resume=True,
               tools=[Checks(every=2)])
    assert len(h) == 6


def test_a_prior_belongs_to_one_vae():
    prior = lv.MixturePrior(2)
    tiny(prior)
    with pytest.raises(lv.ConfigError, match="another model"):
        tiny(prior)


def test_priors_refuse_what_they_cannot_do():
    with pytest.raises(lv.ConfigError, match="data_shape"):
        lv.VAE(torch.nn.Linear(2, 2), torch.nn.Linear(1, 2), 1, lv.FixedScale(1.0),
               prior=lv.VampPrior(2))
    with pytest.raises(lv.ConfigError, match="spline"):
        lv.mlp_vae(2, 1, lv.FixedScale(1.0), hidden=8, blocks=1,
                   prior=lv.FlowPrior("spline-coupling"))
    with pytest.raises(lv.ConfigError, match="unknown prior"):
        lv.priors.build("gauss")
    with pytest.raises(lv.ConfigError, match="takes components"):
        lv.priors.build("mixture", layers=2)
    with pytest.raises(lv.ConfigError, match="setup"):
        lv.MixturePrior(2)()


def test_kl_per_point_is_a_monte_carlo_kl_without_a_closed_form():
    vae = _vae("mixture")
    x = data(16)
    with torch.no_grad():
        loc, scale = vae.guide.posterior(x)
        q = torch.distributions.Independent(torch.distributions.Normal(loc, scale), 1)
        z = q.sample((4000,))
        expected = float((q.log_prob(z) - vae.prior().log_prob(z)).mean())
    assert vae.kl_per_point(x, num_samples=4000) == pytest.approx(expected, abs=0.05)
    state = torch.get_rng_state()
    vae.kl_per_point(x)
    assert torch.equal(torch.get_rng_state(), state)  # its own generator


def test_train_with_a_prior_writes_it_and_its_diagnostics_and_resumes(tmp_path):
    from pyro_lvae.cli import main
    from pyro_lvae.training import History

    run = tmp_path / "mix"
    assert main(["train", "--prior", "mixture", "--prior-components", "3", "--steps", "4",
                 "--checkpoint-every", "2", "--hidden", "8", "--blocks", "1", "--quiet",
                 "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["prior"] == {"kind": "mixture", "components": 3, "min_scale": 0.001}
    summary = json.loads((run / "summary.json").read_text())
    for key in ("mutual_information", "marginal_kl", "hole_mass", "active_units", "mi_bound"):
        assert math.isfinite(summary[key]), key
    assert summary["mutual_information"] <= summary["mi_bound"] + 1e-9
    assert isinstance(lv.load(run / "checkpoint.pt").prior, lv.MixturePrior)
    assert main(["train", "--resume", str(run), "--steps", "6", "--quiet"]) == 0
    assert len(History.from_csv(run / "history.csv")) == 6


def test_train_refuses_a_size_flag_the_prior_does_not_take(tmp_path, capsys):
    from pyro_lvae.cli import main

    assert main(["train", "--prior", "mixture", "--prior-layers", "2", "--steps", "1",
                 "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "--prior-layers does not apply to --prior mixture" in capsys.readouterr().err


def test_the_priors_page_runs_as_written():
    import re
    from pathlib import Path

    page = Path(__file__).resolve().parents[1] / "docs" / "priors.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    assert len(blocks) == 1
    namespace: dict = {}
    exec(compile(blocks[0].replace("range(2000)", "range(5)"), str(page), "exec"), namespace)
    assert isinstance(namespace["vae"].prior, lv.VampPrior)
    assert namespace["samples"].shape == (500, 2)


def test_renyi_elbo_runs_with_every_prior(case):
    from pyro.infer import RenyiELBO

    vae = _vae(case)
    assert math.isfinite(RenyiELBO(alpha=0.5, num_particles=2).loss(vae.model, vae.guide,
                                                                     data()))


def test_sample_draws_z_from_the_prior_in_use():
    decoder = torch.nn.Linear(2, 2)
    with torch.no_grad():  # the decoder mean is z itself
        decoder.weight.copy_(torch.eye(2))
        decoder.bias.zero_()
    prior = lv.MixturePrior(components=2)
    vae = lv.VAE(lv.GaussianEncoder(torch.nn.Linear(2, 4), 2), decoder, 2, lv.FixedScale(1.0),
                 data_shape=2, prior=prior)
    with torch.no_grad():
        prior.locs.copy_(torch.tensor([[10.0, 10.0], [10.0, 10.0]]))
    means = vae.sample(2000)
    assert torch.allclose(means.mean(0), torch.tensor([10.0, 10.0]), atol=0.1)


def test_a_prior_on_its_own_in_a_plain_pyro_program_trains():
    prior = lv.MixturePrior(components=2).setup(2)
    x = torch.randn(64, 2) + 3.0

    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", prior(), obs=x)

    before = prior.locs.detach().clone()
    svi = SVI(model, lambda x: None, pyro.optim.Adam({"lr": 0.1}), Trace_ELBO())
    for _ in range(20):
        svi.step(x)
    # the components move towards the data
    assert float((prior.locs.detach() - before).mean()) > 1.0
    assert all(k.startswith(prior._pyro_name) for k in pyro.get_param_store().keys())


def _ddp_worker(rank, port, folder):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        pyro.set_rng_seed(rank)  # different initial weights: DDP makes them rank 0's
        vae = tiny(CASES["vamp"]())
        # each rank's own data: the pseudo-inputs start from different first batches
        h = lv.fit(vae, data(64, seed=rank), steps=6, batch_size=8, lr=1e-2, seed=3,
                   tools=[Checks(every=3)])
        torch.save({"state": vae.state_dict(), "objective": h.objective},
                   folder / f"prior{rank}.pt")
    except BaseException:
        dist.destroy_process_group()
        raise
    leave_process_group()


def test_a_vamp_prior_stays_identical_on_two_processes(tmp_path):
    """Under DDP a VampPrior's pseudo-inputs, started from each rank's own first batch, are
    rank 0's and stay in step (the other priors' parameters are plain module parameters)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_ddp_worker, args=(port, tmp_path), nprocs=2, start_method="spawn")
    ranks = [torch.load(tmp_path / f"prior{r}.pt", weights_only=False) for r in range(2)]
    assert ranks[0]["objective"] == ranks[1]["objective"] == DIRECT
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key


@pytest.mark.parametrize("prior", ["vamp", "flow", "mixture"])
def test_priors_on_a_convolutional_vae_for_images(prior):
    x = torch.rand(16, 1, 8, 8)
    vae = lv.conv_vae((1, 8, 8), 3, lv.LearnedScalarScale(init_scale=0.3), width=4, convs=2,
                      blocks=1, prior=lv.priors.build(prior, components=4) if prior != "flow"
                      else lv.FlowPrior(layers=1, hidden=8))
    h = lv.fit(vae, x, steps=3, batch_size=8, tools=[Checks(every=3)])
    assert h.objective == DIRECT
    if prior == "vamp":
        assert vae.prior.pseudo_inputs.shape == (4, 1, 8, 8)
    assert vae.sample(5).shape == (5, 1, 8, 8)
    d = lv.evaluate.latent_diagnostics(vae, x)
    assert 0 <= d["hole_mass"] <= 1 and math.isfinite(d["mutual_information"])
