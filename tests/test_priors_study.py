"""The priors study: every configuration runs and is measured, outputs are written, a second
call resumes from the cache, and the claims' verdicts follow the paired numbers."""

import math

import numpy as np
import pytest
import torch

from pyro_lvae import observations
from pyro_lvae.cli import main
from pyro_lvae.experiments.studies import features
from pyro_lvae.experiments.studies import priors as study_mod
from pyro_lvae.experiments.studies.imagesets import load_split
from pyro_lvae.experiments.studies.priors import (
    CURVE_NOISE_VARIANCE,
    GECO_ONLY,
    METHODS,
    PriorsStudy,
    claims,
    gaussian_target,
    paired,
    pca_residual_variance,
    run_study,
    verdict,
    write_outputs,
)

TINY = {"seeds": 2, "steps": 20, "hidden": 8, "blocks": 1, "eval_points": 300,
        "iwae_points": 50, "iwae_samples": 20, "device": "cpu"}
#: runs per data set and seed: two learned sigmas x every method, F-VAE with GECO only
PER_SEED = 2 * len(METHODS) + 1
#: the image part, tiny: digits, one seed
TINY_IMAGES = {"curves": (), "images": ("digits",), "seeds": 1, "image_steps": 30,
               "image_hidden": 16, "image_blocks": 1, "image_eval_points": 300,
               "image_iwae_points": 30, "image_iwae_samples": 10, "device": "cpu",
               "image_eval_every": 10}


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    out = tmp_path_factory.mktemp("priors")
    study = PriorsStudy(**TINY)
    lines = []
    results = run_study(study, workers=1, cache=out / "jobs", report=lines.append)
    return study, results, out, lines


def test_every_configuration_runs_and_is_measured(ran):
    study, results, _, _ = ran
    assert len(results) == 2 * 2 * PER_SEED
    seen = {(r["curve"], r["variant"], r["method"], r["seed"]) for r in results}
    assert len(seen) == len(results)
    for r in results:
        for key in study_mod.METRICS:
            assert math.isfinite(r[key]), (r["curve"], r["variant"], r["method"], key)
        assert r["iwae"] >= r["elbo"] - 0.5  # a tighter bound, up to Monte-Carlo error
        assert 0 <= r["hole_mass"] <= 1 and r["energy_samples"] > -0.05
        if r["method"] != "geco":
            assert r["final_beta"] == 1.0
        if r["variant"] in GECO_ONLY:
            assert r["method"] == "geco" and r["final_sigma"] == 1.0
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
    assert text.count("| manifold2d |") == PER_SEED
    assert "GECO on F-VAE (sigma = 1) generates better than LS-VAE" in text
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


def test_geco_targets_follow_the_gaussian_negative_log_likelihood():
    v = CURVE_NOISE_VARIANCE["manifold2d"]
    assert v == pytest.approx((0.05**2 + 0.01**2 + 0.2**2) / 3)
    # sigma fixed at 1: sum v / 2 + log(2 pi) / 2 per value
    assert gaussian_target("fixed", [v, v]) == pytest.approx(v + math.log(2 * math.pi))
    # one learned sigma: s^2 = mean v; one per value: s_j^2 = v_j; both floored
    v = np.array([0.04, 0.01, 1e-6])
    assert gaussian_target("learned-scalar", v) == pytest.approx(
        1.5 * (1 + math.log(2 * math.pi * v.mean())))
    assert gaussian_target("learned-vector", v, min_scale=0.01) == pytest.approx(
        (1 + math.log(2 * math.pi * 0.04)) / 2 + (1 + math.log(2 * math.pi * 0.01)) / 2
        + 1e-6 / 2e-4 + math.log(2 * math.pi * 1e-4) / 2)


def test_pca_residual_variance_is_what_the_leading_components_leave():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100_000, 4, generator=g) * torch.tensor([0.5, 2.0, 1.0, 3.0]).sqrt()
    # axis-aligned variances: the two largest (3, 2) are kept, the others remain as they are
    assert pca_residual_variance(x, 2) == pytest.approx([0.5, 0, 1.0, 0], abs=0.02)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g))  # rotated: the total is the same
    assert pca_residual_variance(x @ q.T, 2).sum() == pytest.approx(1.5, rel=0.02)


@pytest.fixture(scope="module")
def images_ran(tmp_path_factory):
    out = tmp_path_factory.mktemp("priors-images")
    study = PriorsStudy(**TINY_IMAGES)
    study_mod._IMAGE_CACHE.clear()
    results = run_study(study, workers=1, cache=out / "jobs")
    return study, results, out


def test_image_runs_are_measured_in_the_classifiers_features(images_ran):
    study, results, _ = images_ran
    assert len(results) == PER_SEED
    assert {(r["variant"], r["method"]) for r in results} == {
        (v, m) for v in study.variants for m in METHODS if v not in GECO_ONLY or m == "geco"}
    for r in results:
        for key in study_mod.IMAGE_METRICS:
            assert math.isfinite(r[key]), (r["variant"], r["method"], key)
        assert r["frechet_means"] > 0 and r["frechet_samples"] > 0
        assert r["latent_dim"] == 8 and 0 <= r["hole_mass"] <= 1
        # the classifier separates the digits far above chance (0.1)
        assert r["classifier_accuracy"] > 0.85
        # two sets of real digits are closer than any 30-step model's generations
        assert r["frechet_training"] < r["frechet_means"]
        f = r["figure"]
        assert f["means"].shape == (16, 64) and f["shape"] == (1, 8, 8)
        assert f["codes"].shape == (300, 2) and f["prior"].shape == (300, 2)
        assert math.isfinite(r["geco_target"]) == (r["method"] == "geco")
        # weights selected on the validation split: the best of its evaluations
        curve = dict(r["validation_curve"])
        assert sorted(curve) == [10, 20, 30]
        assert r["selected_step"] == max(curve, key=curve.get)
        assert r["validation_elbo"] == curve[r["selected_step"]]
        assert math.isfinite(r["elbo_last"])


def test_image_runs_report_the_test_numbers_of_the_selected_weights(images_ran, monkeypatch):
    from pyro_lvae.experiments import selection

    study, _, _ = images_ran
    tools, seen = [], []

    class Spy(selection.SelectedWeights):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            tools.append(self)

    real = study_mod._measure_images

    def measure(vae, job, split, classifier):
        # the weights measured score, on the validation split, what the selected step scored
        seen.append(tools[-1].evaluator.evaluate(vae))
        return real(vae, job, split, classifier)

    monkeypatch.setattr(study_mod, "SelectedWeights", Spy)
    monkeypatch.setattr(study_mod, "_measure_images", measure)
    job = next(j for j in study.jobs() if j["variant"] == "learned-vector"
               and j["method"] == "normal")
    r = study_mod.run_image_job(job)
    assert seen == [pytest.approx(r["validation_elbo"], abs=1e-4)]
    assert r["selected_step"] == max(dict(r["validation_curve"]),
                                     key=dict(r["validation_curve"]).get)


def test_image_report_has_its_table_and_the_classifier_is_read_back(images_ran, monkeypatch):
    study, results, out = images_ran
    written = {p.name for p in write_outputs(study, results, out)}
    assert {"images.csv", "image-runs.csv", "priors-digits.png"} <= written
    assert "runs.csv" not in written  # no curve runs
    text = (out / "priors.md").read_text()
    assert text.count("| digits |") == PER_SEED
    assert f"feature classifier's held-out accuracy {results[0]['classifier_accuracy']:.3f}" \
        in text
    assert "the flow prior improves LV-VAE's generations (Fréchet distance" in text
    assert "LV-VAE with its best learned prior" in text
    met = {observations.describe(v).label: sum(r["target_met"] for r in results
                                                if r["variant"] == v and r["method"] == "geco")
           for v in study.variants}
    assert "GECO runs whose selected weights meet the target: " + ", ".join(
        f"{label} {k} of 1" for label, k in met.items()) in text
    saved = list((out / "jobs").glob("classifier-digits-*.pt"))
    assert len(saved) == 1
    # a resumed study reads the classifier and every run back: nothing is trained again

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(features, "train_classifier", no_training)
    monkeypatch.setattr(study_mod, "fit", no_training)
    study_mod._IMAGE_CACHE.clear()
    again = run_study(study, workers=1, cache=out / "jobs")
    assert [r["frechet_means"] for r in again] == [r["frechet_means"] for r in results]


def test_feature_classifier_is_deterministic_and_reads_back(tmp_path):
    split = load_split("digits")
    settings = features.ClassifierSettings(hidden=32, features=16, epochs=10)
    a = features.classifier_for("digits", split, tmp_path, settings)
    b = features.train_classifier(split, settings)
    c = features.classifier_for("digits", split, tmp_path, settings)  # from the file
    x = split.test[:50]
    assert torch.equal(a.features(x), b.features(x)) and torch.equal(a.features(x),
                                                                       c.features(x))
    assert a.features(x).shape == (50, 16) and c.accuracy == a.accuracy > 0.5


def test_report_of_a_partial_study_draws_only_what_ran(tmp_path):
    """A report written from the runs finished so far (one image set, no curve) skips the
    figures of the sets without runs."""
    from pyro_lvae.experiments.studies import priors as study

    settings = study.PriorsStudy(seeds=1, images=("digits",))
    rows = [{"images": "digits", "variant": "learned-vector", "method": "normal", "seed": 0,
             **dict.fromkeys(study.IMAGE_METRICS, 1.0), "classifier_accuracy": 0.9,
             "frechet_training": 0.5, "geco_target": float("nan"), "latent_dim": 8}]
    written = study.write_outputs(settings, rows, tmp_path)
    assert (tmp_path / "priors.md").is_file()
    assert not any(p.name.startswith("priors-") and p.suffix == ".png" for p in written)


def test_a_geco_image_run_selects_among_the_evaluations_that_meet_its_target(images_ran,
                                                                              monkeypatch):
    from pyro_lvae.experiments import selection

    study, _, _ = images_ran
    seen = []

    class Spy(selection.SelectedWeights):
        def setup(self, run):
            super().setup(run)
            measure = self.evaluator.evaluate_parts

            def recorded(vae):
                seen.append(measure(vae))
                return seen[-1]

            self.evaluator.evaluate_parts = recorded

    monkeypatch.setattr(study_mod, "SelectedWeights", Spy)
    jobs = study.jobs()
    assert {j["method"] for j in jobs if j.get("selection") == "meets-target"} == {"geco"}
    job = next(j for j in jobs if j["variant"] == "fixed" and "images" in j)
    r = study_mod.run_image_job(job)
    steps = [s for s, _ in r["validation_curve"]]
    met = [p["reconstruction"] <= r["geco_target"] for p in seen]
    if any(met):
        chosen = max((i for i in range(len(seen)) if met[i]), key=lambda i: seen[i]["elbo"])
    else:
        chosen = min(range(len(seen)), key=lambda i: seen[i]["reconstruction"])
    assert r["target_met"] == any(met)
    assert r["selected_step"] == steps[chosen]
