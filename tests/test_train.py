"""fit(): history, learning behaviour, checkpoints, exact resume, divergence, bad input."""

import math

import numpy as np
import pyro
import pytest
import torch
from helpers import PoisonOnce
from pyro.infer import TraceMeanField_ELBO

import pyro_lvae as lv
from pyro_lvae.experiments.points import held_out, summarize
from pyro_lvae.training import Checkpoints, Checks
from pyro_lvae.training.fit import CHECKPOINT_NAME


def tiny(obs=None, hidden=8):
    return lv.mlp_vae(2, 2, obs or lv.LearnedScalarScale(), hidden=hidden, blocks=1)


def data(n=200, seed=0):
    return lv.datasets.manifold2d(n, torch.Generator().manual_seed(seed))


def test_history_parts_add_up_per_point():
    beta = lv.LinearWarmup(10, 0.2, 1.0)
    h = lv.fit(tiny(), data(), steps=25, batch_size=50, beta=beta, seed=0,
               tools=[Checks(every=10)])
    assert len(h) == 25 and h["step"].tolist() == list(range(25))
    assert np.allclose(h["loss"], h["reconstruction"] + h["beta"] * h["kl"], rtol=1e-5)
    assert h["beta"][0] == pytest.approx(0.2) and h["beta"][-1] == 1.0
    assert np.all(np.isfinite(h["sigma"]))


def test_seed_reproduces_a_run_exactly():
    runs = []
    for _ in range(2):
        pyro.set_rng_seed(3)  # the initial weights
        runs.append(lv.fit(tiny(), lv.datasets.manifold2d, steps=15, batch_size=20, seed=3))
    assert np.array_equal(runs[0]["loss"], runs[1]["loss"])


def test_data_stream_is_independent_of_the_models_noise_stream():
    """Seeding both generators alike made the noise of z equal the data's own Gaussians, so a
    VAE could decode a sphere point from its noise and look perfect in training only."""
    batches = []

    def sampler(n, generator=None):
        batches.append(torch.randn(n, 2, generator=generator))
        return batches[-1]

    lv.fit(tiny(), sampler, steps=1, batch_size=16, seed=0)
    pyro.set_rng_seed(0)
    assert not torch.allclose(batches[0], torch.randn(16, 2))


def test_training_loss_on_fresh_sphere_data_matches_held_out_loss():
    pyro.set_rng_seed(0)
    vae = lv.mlp_vae(2, 2, lv.FixedScale(0.2), hidden=32, blocks=1)
    sampler = lambda n, generator=None: lv.datasets.sphere(n, 2, generator=generator)  # noqa: E731
    h = lv.fit(vae, sampler, steps=400, batch_size=256, lr=3e-3, seed=0)
    held_out = lv.evaluate.elbo_parts(vae, lv.datasets.sphere(4000, 2), num_particles=4)
    assert -held_out["elbo"] == pytest.approx(h["loss"][-100:].mean(), abs=0.3)


def test_ls_sigma_falls_well_below_one_and_lv_sigma_follows_the_noise():
    beta = lv.LinearWarmup(300, 0.5, 1.0)
    x, region = held_out(2000)
    ls = tiny(lv.LearnedScalarScale(init_scale=1.0), hidden=32)  # the paper's start
    h = lv.fit(ls, lv.datasets.manifold2d, steps=1500, lr=3e-3, beta=beta, seed=0)
    assert h["sigma"][0] == pytest.approx(1.0, abs=0.01)
    assert h["sigma"][-1] < 0.3
    lv_vae = tiny(lv.LearnedVectorScale(init_scale=1.0), hidden=32)
    lv.fit(lv_vae, lv.datasets.manifold2d, steps=1500, lr=3e-3, beta=beta, seed=0)
    s = summarize(lv_vae, x, region, num_particles=1)
    assert s["sigma_large"] > s["sigma_moderate"]  # noise 0.20 versus 0.05


def test_scheduled_scale_is_stepped_by_fit():
    schedule = [1.0] * 5 + [0.5] * 5 + [0.25]
    h = lv.fit(tiny(lv.ScheduledScale(schedule)), data(), steps=14, batch_size=20, seed=0)
    assert h["sigma"].tolist() == pytest.approx(schedule + [0.25] * 3)


def test_svi_path_and_custom_elbo_path_train_sigma():
    for kwargs in ({"optimizer": pyro.optim.Adam({"lr": 0.02})},
                   {"elbo": TraceMeanField_ELBO(), "lr": 0.02}):
        pyro.clear_param_store()
        vae = tiny(lv.LearnedScalarScale(init_scale=1.0))
        h = lv.fit(vae, data(), steps=30, batch_size=50, seed=0, **kwargs)
        assert h["sigma"][-1] < h["sigma"][0]
        assert np.all(np.isfinite(h["reconstruction"])) and np.all(np.isfinite(h["kl"]))


def test_fit_takes_numpy_float64_and_dataloaders():
    h = lv.fit(tiny(), data().double().numpy(), steps=5, batch_size=50, seed=0)
    assert len(h) == 5
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data()), batch_size=64)
    h = lv.fit(tiny(), loader, steps=7, seed=0)  # restarts the loader when exhausted
    assert len(h) == 7


def test_checkpoint_loads_weights_only_with_map_location(tmp_path):
    vae = tiny(lv.LearnedVectorScale())
    lv.fit(vae, data(), steps=10, batch_size=50, seed=0, out=tmp_path)
    blob = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True, map_location="cpu")
    assert blob["step"] == 10
    again = lv.load(tmp_path / CHECKPOINT_NAME, map_location="cpu")
    x = data(5)
    assert torch.equal(again.reconstruct(x), vae.reconstruct(x))


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    def run(steps, out, resume=False, vae=None):
        if vae is None:
            pyro.set_rng_seed(5)
            vae = tiny()
        return lv.fit(vae, lv.datasets.manifold2d, steps=steps, batch_size=32,
                      seed=5, out=out, tools=[Checks(every=10), Checkpoints(10)],
                      resume=resume, beta=lv.LinearWarmup(20, 0.5, 1.0))

    whole = run(50, tmp_path / "whole")
    run(30, tmp_path / "part")
    pyro.clear_param_store()
    torch.manual_seed(123)  # resuming restores every random state itself
    resumed_vae = lv.load(tmp_path / "part" / CHECKPOINT_NAME)
    resumed = run(50, tmp_path / "part", resume=True, vae=resumed_vae)
    assert len(resumed) == 50
    assert np.array_equal(resumed["loss"], whole["loss"])


def test_resume_of_tensor_data_continues_the_epoch(tmp_path):
    x = data(100)
    pyro.set_rng_seed(1)
    whole = lv.fit(tiny(), x, steps=12, batch_size=30, seed=1, tools=[Checks(every=4)])
    pyro.set_rng_seed(1)
    lv.fit(tiny(), x, steps=8, batch_size=30, seed=1, tools=[Checks(every=4)], out=tmp_path)
    vae = lv.load(tmp_path / CHECKPOINT_NAME)
    resumed = lv.fit(vae, x, steps=12, batch_size=30, seed=1, tools=[Checks(every=4)],
                     out=tmp_path, resume=True)
    assert np.array_equal(resumed["loss"], whole["loss"])


def test_divergence_stops_with_a_diagnosis_and_keeps_the_last_good_state(tmp_path):
    vae = tiny()
    lv.fit(vae, data(), steps=10, batch_size=50, seed=0, out=tmp_path, tools=[Checks(every=5)])
    good = (tmp_path / CHECKPOINT_NAME).read_bytes()
    bad = data()
    with pytest.raises(lv.TrainingDiverged, match=r"diverged at step \d+.*sigma.*data range"):
        lv.fit(vae, bad * 1e30, steps=40, batch_size=50, lr=1e3, seed=0,
               tools=[Checks(every=5)], out=tmp_path, resume=True)
    assert all(torch.isfinite(v).all() for v in vae.state_dict().values())
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == good  # the last good checkpoint
    assert lv.load(tmp_path / CHECKPOINT_NAME) is not None


def test_nan_parameters_after_the_last_step_of_a_check_are_caught(tmp_path):
    vae = tiny()
    # every recorded loss is finite: the poisoned update is the last one before the check
    with pytest.raises(lv.TrainingDiverged, match="diverged at step 5"):
        lv.fit(vae, data(), steps=10, batch_size=50, tools=[Checks(every=5), Checkpoints(5)],
               out=tmp_path, optimizer=lambda params: PoisonOnce(params, at=5))
    assert all(torch.isfinite(v).all() for v in vae.state_dict().values())
    assert not (tmp_path / CHECKPOINT_NAME).exists()  # nothing poisoned was written


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(lv.ConfigError, match="CUDA is not available"):
        lv.fit(tiny(), data(), steps=2, device="cuda")


def test_output_path_that_is_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(lv.CheckpointError, match="cannot create output folder"):
        lv.fit(tiny(), data(), steps=2, out=blocker / "run")


@pytest.mark.cuda
def test_fit_on_cuda(tmp_path):
    vae = tiny()
    h = lv.fit(vae, lv.datasets.manifold2d, steps=20, device="cuda", seed=0, out=tmp_path)
    assert vae.device.type == "cuda" and np.isfinite(h["loss"]).all()
    assert lv.load(tmp_path / CHECKPOINT_NAME, map_location="cpu").device.type == "cpu"


class _DataStarted(lv.LearnedScalarScale):
    """The default learned sigma, recording the first batch it is started from."""

    def __init__(self):
        super().__init__()
        self.seen = None

    def initialize(self, x):
        if self.seen is None:
            self.seen = x.clone()
        super().initialize(x)


def test_fit_gives_the_observation_its_data_start_from_the_first_batch_it_trains_on():
    obs = _DataStarted()
    h = lv.fit(tiny(obs), data(), steps=3, batch_size=50, seed=0, lr=1e-9,
               transform=lambda x, generator: 10 * x)
    assert obs.seen is not None and obs.seen.shape == (50, 2)
    assert float(obs.seen.abs().max()) > 5  # as the model sees it: transformed
    assert h["sigma"][0] == pytest.approx(lv.initial_scale(obs.seen), rel=1e-4)
    assert h.objective == "DirectELBO"


def test_a_collapsed_model_ends_with_a_warning_naming_the_remedies(caplog):
    vae = tiny(lv.FixedScale(1.0))
    out = vae.guide.encoder.net[-1].out
    with torch.no_grad():  # q(z|x) = N(0, 1) = p(z) for every x
        out.weight.zero_()
        out.bias.zero_()
        out.bias[2:] = math.log(math.expm1(1 - vae.guide.encoder.min_scale))
    lv.fit(vae, data(), steps=2, batch_size=50, seed=0, lr=1e-9)
    assert "collapsed" in caplog.text and "initial_scale" in caplog.text
    assert "LinearWarmup" in caplog.text
    caplog.clear()
    lv.fit(tiny(), data(), steps=2, batch_size=50, seed=0)
    assert "collapsed" not in caplog.text
