"""GECO: the multiplier follows the reconstruction constraint, in fit, on resume and from the
command line."""

import json
import math

import numpy as np
import pytest
import torch

import pyro_lvae as lv
from pyro_lvae.training import Checks


def data(n=128, seed=0):
    return lv.datasets.manifold2d(n, torch.Generator().manual_seed(seed))


def tiny():
    return lv.mlp_vae(2, 2, lv.FixedScale(0.1), hidden=8, blocks=1)


def test_multiplier_rises_when_the_constraint_is_violated_and_falls_when_it_holds():
    geco = lv.GECO(target=0.0, rate=0.1, smoothing=0.5)
    geco.observe({"reconstruction": [2.0, 2.0, 2.0]})
    risen = geco.multiplier
    assert risen > 1 and geco(0) == pytest.approx(1 / risen)
    # C_ma: 2, 2, 2 -> log lambda = 0.1 * 6
    assert math.log(risen) == pytest.approx(0.6)
    geco.observe({"reconstruction": [-4.0] * 10})
    assert geco.multiplier < risen
    geco.observe({"reconstruction": [-4.0] * 200})
    assert geco.multiplier < 1 and geco(0) <= geco.max_beta


def test_beta_stays_within_its_bounds():
    geco = lv.GECO(target=0.0, rate=1.0, smoothing=0.0, min_beta=0.01, max_beta=10)
    geco.observe({"reconstruction": [1e6] * 3})
    assert geco(0) == pytest.approx(0.01)
    geco.observe({"reconstruction": [-1e6]})
    assert geco(0) == pytest.approx(10)  # no wind-up: one step back to the other bound


def test_fit_with_geco_lowers_beta_while_reconstruction_is_above_target():
    h = lv.fit(tiny(), data(), steps=40, batch_size=64, beta=lv.GECO(target=-50.0, rate=1e-3),
               seed=0, tools=[Checks(every=10)])
    beta = h["beta"]
    assert beta[0] == 1.0 and np.all(np.diff(beta) <= 0) and beta[-1] < beta[0]
    assert np.all(h["reconstruction"] > -50)
    assert np.allclose(h["loss"], h["reconstruction"] + beta * h["kl"], rtol=1e-5)


def test_geco_resumes_exactly(tmp_path):
    def run(steps, resume, out):
        torch.manual_seed(0)
        vae = tiny() if not resume else lv.load(out / "checkpoint.pt")
        return lv.fit(vae, data(), steps=steps, batch_size=64, out=out, resume=resume,
                      beta=lv.GECO(target=-50.0, rate=1e-3), seed=0, tools=[Checks(every=5)])

    whole = run(20, False, tmp_path / "a")
    run(10, False, tmp_path / "b")
    resumed = run(20, True, tmp_path / "b")
    assert np.array_equal(resumed["beta"], whole["beta"])
    assert np.allclose(resumed["loss"], whole["loss"])


def test_geco_refuses_a_run_without_reconstruction_parts():
    from pyro.infer import JitTrace_ELBO

    with pytest.raises(lv.ConfigError, match="reconstruction"):
        lv.fit(tiny(), data(), steps=2, batch_size=32, elbo=JitTrace_ELBO(),
               beta=lv.GECO(target=0.0), tools=[Checks(every=1)])


def test_train_with_geco_records_it_and_resumes(tmp_path):
    from pyro_lvae.cli import main
    from pyro_lvae.training import History

    run = tmp_path / "g"
    assert main(["train", "--obs", "fixed", "--sigma", "0.1", "--geco", "-40", "--steps", "4",
                 "--checkpoint-every", "2", "--hidden", "8", "--blocks", "1", "--quiet",
                 "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["geco"] == "geco:-40:0.01:0.99:0.001:1000:1000"
    assert config["beta_schedule"] is None
    assert main(["train", "--resume", str(run), "--steps", "6", "--quiet"]) == 0
    assert len(History.from_csv(run / "history.csv")) == 6


def test_train_refuses_geco_with_a_beta_schedule(tmp_path, capsys):
    from pyro_lvae.cli import main

    assert main(["train", "--geco", "0", "--beta-schedule", "1", "--steps", "1", "--quiet",
                 "--out", str(tmp_path / "x")]) == 2
    assert "not both" in capsys.readouterr().err
