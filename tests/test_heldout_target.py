"""The held-out best of a GECO run (or of a run with a reconstruction target) is chosen among
the evaluations that meet the target: GECO minimises the KL subject to it, and its highest
held-out ELBO often lies at a collapsed start that does not meet it."""

import json
import math

import numpy as np
import pyro
import pytest
import torch
from helpers import folder_digest

import pyro_lvae as lv
from pyro_lvae.errors import ConfigError
from pyro_lvae.experiments.selection import SelectedWeights
from pyro_lvae.training import Checks, HeldOutEvaluation
from pyro_lvae.training.checkpoint import BEST_NAME
from pyro_lvae.training.heldout import HeldOut

TARGET = 0.0  # nats per point: F-VAE (sigma 0.3) on manifold2d meets it after about 70 steps


def data(n=200, seed=0):
    return lv.datasets.manifold2d(n, torch.Generator().manual_seed(seed))


class Spy(HeldOutEvaluation):
    """Records every evaluation's parts."""

    def setup(self, run):
        super().setup(run)
        self.seen = []
        measure = self.evaluator.evaluate_parts

        def recorded(vae):
            parts = measure(vae)
            self.seen.append(parts)
            return parts

        self.evaluator.evaluate_parts = recorded


def geco_run(tools, out=None, steps=150, target=TARGET, **kwargs):
    pyro.set_rng_seed(0)
    vae = lv.mlp_vae(2, 2, lv.FixedScale(0.3), hidden=8, blocks=1)
    h = lv.fit(vae, data(), steps=steps, batch_size=50, seed=0, lr=3e-2, out=out,
               beta=lv.GECO(target, rate=0.05), tools=[Checks(every=5), *tools], **kwargs)
    return vae, h


def test_the_order_of_evaluations_under_a_target():
    ev = HeldOut(torch.zeros(3, 2), every=1, reconstruction_target=1.0)
    assert ev.improved(-5.0, 0, reconstruction=3.0)       # the first is the best so far
    assert not ev.improved(-4.0, 1, reconstruction=3.5)   # higher ELBO, further from the target
    assert ev.improved(-9.0, 2, reconstruction=2.0)       # nearer, still not met
    assert ev.improved(-20.0, 3, reconstruction=1.0)      # meets it: beats every unmet one
    assert not ev.improved(-3.0, 4, reconstruction=1.5)   # unmet: never beats a met one
    assert ev.improved(-10.0, 5, reconstruction=0.5)      # met, higher ELBO
    assert not ev.improved(-11.0, 6, reconstruction=0.0)  # met, lower ELBO
    assert ev.best() == {"step": 5, "elbo": -10.0, "reconstruction": 0.5, "target": 1.0,
                         "met": True}
    plain = HeldOut(torch.zeros(3, 2), every=1)
    assert plain.improved(-5.0, 0, 3.0) and plain.improved(-4.0, 1, 3.5)
    assert plain.best() == {"step": 1, "elbo": -4.0}


def test_a_geco_run_keeps_the_best_that_meets_its_target(tmp_path):
    spy = Spy(data(100, seed=9), every=10)
    vae, h = geco_run([spy], out=tmp_path)
    elbo = np.array([p["elbo"] for p in spy.seen])
    rec = np.array([p["reconstruction"] for p in spy.seen])
    steps = h.heldout()["step"]
    assert np.array_equal(elbo, h.heldout()["heldout_elbo"])
    met = rec <= TARGET
    assert met.any() and not met.all()
    chosen = int(np.flatnonzero(met)[np.argmax(elbo[met])])
    assert h.best == {"step": steps[chosen], "elbo": elbo[chosen], "reconstruction": rec[chosen],
                      "target": TARGET, "met": True}
    # the ELBO alone would keep an early model that misses the target
    assert int(np.argmax(elbo)) != chosen and not met[int(np.argmax(elbo))]
    best = lv.load(tmp_path / BEST_NAME)
    again = HeldOut(data(100, seed=9), 10).evaluate_parts(best)
    assert again["reconstruction"] == pytest.approx(rec[chosen], rel=1e-5)
    assert torch.load(tmp_path / BEST_NAME, weights_only=True)["step"] == steps[chosen] + 1


def test_an_infinite_target_chooses_on_the_elbo_alone():
    spy = Spy(data(100, seed=9), every=10, reconstruction_target=math.inf)
    _, h = geco_run([spy])
    elbo = np.array([p["elbo"] for p in spy.seen])
    assert h.best["step"] == h.heldout()["step"][int(np.argmax(elbo))]
    assert h.best["met"] is True and h.best["target"] == math.inf


def test_an_explicit_target_applies_to_any_run():
    pyro.set_rng_seed(0)
    vae = lv.mlp_vae(2, 2, lv.FixedScale(0.3), hidden=8, blocks=1)
    spy = Spy(data(100, seed=9), every=10, reconstruction_target=-100.0)  # never met
    h = lv.fit(vae, data(), steps=40, batch_size=50, seed=0, lr=3e-2,
               tools=[Checks(every=5), spy])
    rec = np.array([p["reconstruction"] for p in spy.seen])
    assert h.best["met"] is False  # none meets it: the nearest is kept
    assert h.best["step"] == h.heldout()["step"][int(np.argmin(rec))]


def test_a_target_run_resumes_to_the_same_best(tmp_path):
    _, whole = geco_run([HeldOutEvaluation(data(100, seed=9), every=10)], out=tmp_path / "a")
    geco_run([HeldOutEvaluation(data(100, seed=9), every=10)], out=tmp_path / "b", steps=60)
    _, resumed = geco_run([HeldOutEvaluation(data(100, seed=9), every=10)], out=tmp_path / "b",
                          resume=True)
    assert resumed.best == whole.best


def test_a_resume_under_another_target_is_refused(tmp_path):
    geco_run([HeldOutEvaluation(data(100, seed=9), every=10)], out=tmp_path, steps=20)
    before = folder_digest(tmp_path)
    with pytest.raises(ConfigError, match="target of 0, .* now chooses by the highest ELBO"):
        geco_run([HeldOutEvaluation(data(100, seed=9), every=10,
                                    reconstruction_target=math.inf)], out=tmp_path,
                 resume=True, steps=40)
    assert folder_digest(tmp_path) == before


def test_a_state_of_an_earlier_version_is_taken_with_a_warning(caplog):
    ev = HeldOut(torch.zeros(3, 2), every=1, reconstruction_target=1.0)
    with caplog.at_level("WARNING"):
        ev.load_state_dict({"best_elbo": -3.0, "best_step": 7, "row": True})
    assert "chosen on the ELBO alone" in caplog.text
    assert ev.improved(-50.0, 8, reconstruction=5.0)  # any evaluation starts the constrained choice


@pytest.mark.parametrize("bad", [math.nan, "high", [1.0]])
def test_a_bad_target_is_refused(bad):
    with pytest.raises(ConfigError, match="reconstruction_target"):
        HeldOutEvaluation(data(10), every=2, reconstruction_target=bad)


def test_selected_weights_follow_the_target():
    val = data(100, seed=9)
    spy = Spy(val, every=10)
    geco_run([spy])
    selection = SelectedWeights(val, 10)
    vae, h = geco_run([selection])
    assert selection.selected_step() == h.best["step"] + 1 and h.best["met"]
    selection.load(vae)
    again = HeldOut(val, 10).evaluate_parts(vae)
    assert again["reconstruction"] <= TARGET
    assert again["elbo"] == pytest.approx(h.best["elbo"], rel=1e-5)


def test_the_command_line_s_geco_runs_keep_the_best_that_meets_the_target(tmp_path):
    from pyro_lvae.cli import main

    run = tmp_path / "run"
    assert main(["train", "--steps", "40", "--hidden", "8", "--blocks", "1", "--quiet",
                 "--geco", "-1.0", "--eval-every", "10", "--out", str(run)]) == 0
    best = json.loads((run / "summary.json").read_text())["best"]
    assert best["reconstruction_target"] == -1.0 and isinstance(best["target_met"], bool)
    assert (best["validation_reconstruction"] <= -1.0) == best["target_met"]
    assert main(["train", "--resume", str(run), "--steps", "60", "--quiet"]) == 0
    again = json.loads((run / "summary.json").read_text())["best"]
    assert again["reconstruction_target"] == -1.0
