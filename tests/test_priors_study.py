"""The priors study: every configuration runs and is measured, outputs are written, a second
call resumes from the cache, and the claims' verdicts follow the paired numbers."""

import math

import numpy as np
import pytest

from pyro_lvae.cli import main
from pyro_lvae.experiments.studies import priors as study_mod
from pyro_lvae.experiments.studies.priors import (
    METHODS,
    PriorsStudy,
    claims,
    paired,
    run_study,
    verdict,
    write_outputs,
)

TINY = {"seeds": 2, "steps": 20, "hidden": 8, "blocks": 1, "eval_points": 300,
        "iwae_points": 50, "iwae_samples": 20, "device": "cpu"}


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    out = tmp_path_factory.mktemp("priors")
    study = PriorsStudy(**TINY)
    lines = []
    results = run_study(study, workers=1, cache=out / "jobs", report=lines.append)
    return study, results, out, lines


def test_every_configuration_runs_and_is_measured(ran):
    study, results, _, _ = ran
    assert len(results) == 2 * 2 * 2 * len(METHODS)
    seen = {(r["curve"], r["variant"], r["method"], r["seed"]) for r in results}
    assert len(seen) == len(results)
    for r in results:
        for key in study_mod.METRICS:
            assert math.isfinite(r[key]), (r["curve"], r["variant"], r["method"], key)
        assert r["iwae"] >= r["elbo"] - 0.5  # a tighter bound, up to Monte-Carlo error
        assert 0 <= r["hole_mass"] <= 1 and r["energy_samples"] > -0.05
        if r["method"] != "geco":
            assert r["final_beta"] == 1.0
    assert sum("figure" in r for r in results) == len(results) // 2  # seed 0 only


def test_geco_runs_lower_beta_while_the_reconstruction_misses_its_target():
    job = {**PriorsStudy(**TINY).jobs()[0], "method": "geco", "steps": 201}
    r = study_mod.run_job(job)
    # the first steps' reconstruction is far above -3 nats: the multiplier rises, beta falls
    assert r["final_beta"] < 0.5
    assert r["method"] == "geco" and math.isfinite(r["energy_samples"])


def test_writes_table_figures_and_resumes_from_the_cache(ran, capsys, monkeypatch):
    study, results, out, lines = ran
    assert sum(line.startswith("[") for line in lines) == len(results)
    written = {p.name for p in write_outputs(study, results, out)}
    assert written == {"priors.md", "summary.csv", "runs.csv", "priors-manifold2d.png",
                       "priors-spiral2d.png"}
    text = (out / "priors.md").read_text()
    assert text.count("| manifold2d |") == 2 * len(METHODS)
    assert "the vamp prior reduces LV-VAE's hole mass" in text
    # the command with the same settings (--quick made tiny) reads every run back, trains none
    monkeypatch.setattr(PriorsStudy, "QUICK", {k: v for k, v in TINY.items() if k != "device"})
    argv = ["reproduce", "priors", "--quick", "--workers", "1", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{len(results)} of {len(results)} run(s) read back" in printed
    assert "[1/" not in printed
    assert (out / "priors.md").read_text() == text


def _runs(method, key, values):
    return [{"curve": "c", "variant": "learned-vector", "method": method, "seed": s,
             "energy_samples": 0.0, "hole_mass": 0.0, key: v} for s, v in enumerate(values)]


def test_paired_difference_and_its_standard_error():
    a = _runs("vamp", "hole_mass", [0.1, 0.2, 0.6])
    b = _runs("normal", "hole_mass", [0.3, 0.3, 0.3])
    mean, se, n = paired(a, b, "hole_mass")
    d = np.array([-0.2, -0.1, 0.3])
    assert n == 3 and mean == pytest.approx(d.mean())
    assert se == pytest.approx(d.std(ddof=1) / math.sqrt(3))


@pytest.mark.parametrize("prior,expected", [
    ([0.10, 0.11, 0.09, 0.10], True),            # lower on every seed: holds
    ([0.50, 0.52, 0.49, 0.51], False),           # higher on every seed: does not hold
    ([0.10, 0.55, 0.12, 0.50], None),            # within two standard errors: undecided
])
def test_claims_verdict_from_the_paired_numbers(prior, expected):
    normal = [0.30, 0.31, 0.29, 0.30]
    results = _runs("normal", "hole_mass", normal) + _runs("vamp", "hole_mass", prior)
    found = {c: h for c, h, _ in claims(results)}
    assert found["c: the vamp prior reduces LV-VAE's hole mass against N(0, I)"] is expected
    # energy distances equal on every seed: no difference, undecided
    assert found["c: the vamp prior improves LV-VAE's generations (energy distance) "
                 "against N(0, I)"] is None


def test_verdict_needs_two_seeds_and_two_standard_errors():
    assert verdict(-1.0, float("nan"), 1) is None
    assert verdict(-1.0, 0.4, 3) is True
    assert verdict(-1.0, 0.5, 3) is None
    assert verdict(1.0, 0.4, 3) is False
