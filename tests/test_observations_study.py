"""``pyro-lvae reproduce observations``: the point sets, the runs, the cache, the claim checks."""

import csv
import math

import numpy as np
import pytest
import torch

from pyro_lvae.cli import main
from pyro_lvae.datasets.artificial import MANIFOLD_NOISE
from pyro_lvae.experiments.jobs import job_key
from pyro_lvae.experiments.studies import observations as study
from pyro_lvae.experiments.studies.observations import (
    DATASETS,
    FAMILIES,
    IMAGE_FAMILIES,
    claims,
    normal_noise_curve,
    spike_size,
    verdict,
    with_outliers,
)

TINY = ["--quick", "--seeds", "1", "--steps", "110", "--hidden", "8", "--blocks", "1",
        "--workers", "1"]


def test_every_configuration_runs_writes_its_outputs_and_resumes_from_the_cache(tmp_path,
                                                                                 capsys):
    argv = ["reproduce", "observations", *TINY, "--out", str(tmp_path)]
    assert main(argv) == 0
    first = capsys.readouterr().out
    text = (tmp_path / "observations.md").read_text()
    images = study.ObservationStudy().images
    assert images == ("digits",)  # Fashion-MNIST only with its files (--images, --data-root)
    for dataset in (*DATASETS, *images):
        assert f"(`{dataset}`)" in text
    for family in {**FAMILIES, **IMAGE_FAMILIES}:
        rows = len(DATASETS) * (family in FAMILIES) + len(images) * (family in IMAGE_FAMILIES)
        assert text.count(f"| {family} | 1 |") == rows, family
    assert text.count("n/a") >= 5  # no bits/dim for the continuous densities on digits
    assert "nats per image of 64 pixels" in text
    assert "## Claims" in text and text.count("**undecided**") == 3  # one seed cannot decide
    for name in ("summary.csv", "runs.csv", "generations.png", "images-digits.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    rows = {r["family"]: r for r in csv.DictReader((tmp_path / "summary.csv").open())
            if r["dataset"] == "digits"}
    for family in IMAGE_FAMILIES:  # blurry after 110 steps, but edges of some strength
        assert 0.0 < float(rows[family]["sharpness"]) < 1.0, family
    runs = len(DATASETS) * len(FAMILIES) + len(images) * len(IMAGE_FAMILIES)
    assert len(list((tmp_path / "jobs").glob("*.json"))) == runs
    assert f"[{runs}/{runs}]" in first
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert f"{runs} of {runs} run(s) read back" in again and "[1/" not in again
    assert (tmp_path / "observations.md").read_text() == text


def test_image_runs_select_their_weights_on_the_validation_split(monkeypatch):
    from pyro_lvae.experiments import selection

    tools, seen = [], []

    class Spy(selection.SelectedWeights):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            tools.append(self)

    real = study._measure_images

    def measure(vae, job, x, kind, shape):
        # the weights measured on the test images score, on the validation split, what the
        # selected step scored (the evaluation draws under its own seed)
        seen.append(tools[-1].evaluator.evaluate(vae))
        return real(vae, job, x, kind, shape)

    monkeypatch.setattr(study, "SelectedWeights", Spy)
    monkeypatch.setattr(study, "_measure_images", measure)
    s = study.ObservationStudy(seeds=1, datasets=(), image_families=("LV-VAE",), steps=60,
                               image_hidden=8, blocks=1, image_eval_every=10, iwae_points=10,
                               iwae_samples=5, lr=1e-2)
    (job,) = s.jobs()
    assert (job["validation_size"], job["eval_every"]) == (250, 10)
    r = study.run_job(job)
    curve = dict(r["validation_curve"])
    assert sorted(curve) == [10, 20, 30, 40, 50, 60]
    assert r["selected_step"] == max(curve, key=curve.get)
    assert r["validation_elbo"] == curve[r["selected_step"]]
    assert seen == [pytest.approx(r["validation_elbo"], abs=1e-4)]
    assert math.isfinite(r["elbo"]) and math.isfinite(r["elbo_last"])
    # the validation digits are held out of training: 1257 - 250 trained on
    assert tools[0].evaluator.data.shape == (250, 64)


def test_normal_noise_lies_along_the_curves_normal_with_the_regions_noise():
    n = 30000
    x, region = normal_noise_curve(n, torch.Generator().manual_seed(4), return_region=True)
    s = torch.rand(n, generator=torch.Generator().manual_seed(4))  # the draw it made first
    t = 4 * s - 2
    residual = x - torch.stack([t, torch.cos(math.pi * t)], dim=-1)
    tangent = torch.stack([torch.ones_like(t), -math.pi * torch.sin(math.pi * t)], dim=-1)
    along = (residual * tangent).sum(-1) / tangent.norm(dim=-1)
    assert along.abs().max() < 1e-5
    for i, noise in enumerate(MANIFOLD_NOISE):
        assert residual[region == i].norm(dim=-1).pow(2).mean().sqrt() == pytest.approx(
            noise, rel=0.05)
    # not aligned with the axes: both coordinates of the residual carry the noise
    big = residual[region == 2]
    assert big[:, 0].std() > 0.05 and big[:, 1].std() > 0.05


def test_outliers_replace_a_twentieth_of_the_points_by_the_box():
    x, outlier = with_outliers(40000, torch.Generator().manual_seed(1), return_outlier=True)
    assert outlier.float().mean() == pytest.approx(study.OUTLIER_FRACTION, abs=0.005)
    assert x[outlier].abs().max() <= study.OUTLIER_BOX
    assert x[outlier, 1].abs().max() > 2.5  # the curve itself stays within |y| < 2
    assert x[~outlier, 1].abs().max() < 2.0


def test_digits_lie_on_17_distinct_bins_of_the_8bit_grid():
    x = study.digits_8bit()
    levels = torch.unique(x * 255)
    assert x.shape == (1797, 64) and levels.numel() == 17
    assert torch.allclose(levels, torch.round(levels), atol=1e-4)  # every value is a k / 255
    assert levels.min() == 0 and levels.max() == 255
    job = study.ObservationStudy(seeds=1).jobs()[-1]
    train, held_out, shape, validation = study._train_and_held_out(job)
    # 250 of the 1257 training digits are the validation split
    assert (len(train), len(held_out), len(validation), shape) == (1007, 540, 250, (1, 8, 8))
    assert torch.equal(study._train_and_held_out(job)[1], held_out)  # the same every run


def test_spike_size_is_the_largest_rise_above_the_running_median():
    flat = np.full(500, 3.0)
    assert spike_size(flat) == 0.0
    spiky = flat.copy()
    spiky[300] += 5.0
    spiky[301] += 1.0
    assert spike_size(spiky) == pytest.approx(5.0)
    assert spike_size(flat - np.linspace(0, 1, 500)) == 0.0  # a falling loss never spikes
    assert math.isnan(spike_size(flat[:50]))


def fake(dataset, family, seed, elbo):
    return {"dataset": dataset, "family": family, "seed": seed, "elbo": elbo, "iwae": elbo,
            "energy_samples": 0.01, "spike": 0.1, "diverged": False}


def outcomes(lowrank, student, calibrated):
    """Constructed results with paired ELBO differences (per seed) against the claims' bases."""
    results = []
    for s, (a, b, c) in enumerate(zip(lowrank, student, calibrated, strict=True)):
        results += [fake("normal-noise", "LV-VAE", s, -1.5 + 0.1 * s),
                    fake("normal-noise", "low-rank r=1", s, -1.5 + 0.1 * s + a),
                    fake("outliers", "LV-VAE", s, -2.0 - 0.1 * s),
                    fake("outliers", "Student-t", s, -2.0 - 0.1 * s + b),
                    fake("2d", "LS-VAE", s, -1.6 + 0.05 * s),
                    fake("2d", "calibrated (sigma-VAE)", s, -1.6 + 0.05 * s + c)]
    return [h for _, h, _ in claims(results)]


def test_claims_hold_when_the_paired_differences_say_so():
    assert outcomes([0.3, 0.25, 0.35, 0.3], [0.2, 0.22, 0.18, 0.2],
                    [0.0, -0.01, 0.01, 0.0]) == [True, True, True]


def test_claims_fail_when_the_paired_differences_say_so():
    assert outcomes([-0.3, -0.25, -0.35, -0.3], [-0.2, -0.22, -0.18, -0.2],
                    [-0.3, -0.31, -0.29, -0.3]) == [False, False, False]


def test_claims_are_undecided_within_two_standard_errors():
    assert outcomes([0.3, -0.25, 0.2, -0.3], [0.2, -0.22, 0.1, -0.2],
                    [0.3, -0.35, 0.2, -0.3]) == [None, None, None]


def test_verdict_uses_the_margin_and_needs_two_pairs():
    assert verdict(np.array([-0.03, -0.02, -0.03]), margin=0.05)[0] is True
    assert verdict(np.array([-0.03, -0.02, -0.03]))[0] is False
    assert verdict(np.array([0.5]))[0] is None
    holds, mean, se = verdict(np.array([1.0, 3.0, np.nan]))
    assert holds is None and mean == 2.0 and se == pytest.approx(1.0)  # NaN pairs dropped


def test_a_diverged_run_is_kept_counted_and_left_out_of_the_means(monkeypatch):
    from pyro_lvae.errors import TrainingDiverged

    def diverge(*args, **kwargs):
        raise TrainingDiverged("the loss became NaN at step 7\nmore")

    job = study.ObservationStudy.quick(seeds=1, steps=10, hidden=4).jobs()[0]
    monkeypatch.setattr(study, "fit", diverge)
    run = study.run_job(job)
    assert run["diverged"] and run["reason"] == "the loss became NaN at step 7"
    assert math.isnan(run["elbo"])
    done = {**fake(run["dataset"], run["family"], 1, -1.0), "spike": 1.5}
    (row,) = study.aggregate([run, done])
    assert (row["seeds"], row["diverged"], row["spiked"]) == (2, 1, 1)
    assert row["elbo"] == -1.0 and math.isnan(row["elbo_sd"])


def test_digits_jobs_keep_their_settings_and_fashion_mnist_jobs_carry_their_subset():
    s = study.ObservationStudy(seeds=1, images=("digits", "fashion-mnist"), data_root="/data",
                               fashion_train_size=300, fashion_test_size=50)
    jobs = {(j["dataset"], j["family"]): j for j in s.jobs()}
    digits = jobs[("digits", "LV-VAE")]
    # the validation split and the evaluation interval are part of the job (and of its cache
    # key: runs cached before weights were selected on validation are not read back)
    assert set(digits) == {"steps", "batch_size", "hidden", "blocks", "latent_dim", "lr", "beta",
                           "eval_points", "iwae_points", "iwae_samples", "device", "dataset",
                           "family", "seed", "label", "validation_size", "eval_every"}
    old = {k: v for k, v in digits.items() if k not in ("validation_size", "eval_every")}
    assert job_key(study.run_job, digits) != job_key(study.run_job, old)
    points = next(j for j in s.jobs() if j["dataset"] == "2d")
    assert "validation_size" not in points  # the point sets draw fresh data: no selection
    assert (digits["hidden"], digits["latent_dim"]) == (200, 8)
    fashion = jobs[("fashion-mnist", "LV-VAE floor 0.01")]
    assert {k: fashion[k] for k in ("hidden", "latent_dim", "train_size", "test_size",
                                    "data_root", "validation_size")} == {
        "hidden": 200, "latent_dim": 16, "train_size": 300, "test_size": 50, "data_root": "/data",
        "validation_size": 1000}
    assert len(jobs) == len(s.jobs()) == len(DATASETS) * len(FAMILIES) + 2 * len(IMAGE_FAMILIES)


def test_a_fashion_mnist_run_loads_its_subset_from_the_data_root(monkeypatch):
    from pyro_lvae.experiments.studies.imagesets import ImageSplit

    asked = []

    def fake_split(name, data_root=None, **sizes):
        asked.append((name, data_root, sizes))
        x = torch.zeros(4, 784)
        return ImageSplit(x, torch.zeros(4), x[:2], torch.zeros(2), (1, 28, 28), x[:1],
                          torch.zeros(1))

    monkeypatch.setattr(study, "load_split", fake_split)
    s = study.ObservationStudy(seeds=1, images=("fashion-mnist",), data_root="/d",
                               fashion_train_size=4, fashion_test_size=2)
    train, held_out, shape, validation = study._train_and_held_out(s.jobs()[-1])
    assert asked == [("fashion-mnist", "/d", {"train_size": 4, "test_size": 2,
                                              "validation_size": 1000})]
    assert (train.shape, held_out.shape, shape) == ((4, 784), (2, 784), (1, 28, 28))
    assert validation.shape == (1, 784)


def test_image_grid_shows_the_originals_once_and_three_rows_per_family():
    pixels = np.arange(2 * 64, dtype=np.uint8).reshape(2, 64)
    figure = {"shape": [1, 8, 8], "data": pixels, "reconstruction": pixels, "mean": pixels,
              "sample": pixels}
    results = [{"dataset": "digits", "family": f, "seed": 0, "figure": figure}
               for f in ("LS-VAE", "LV-VAE")] + [{"dataset": "digits", "family": "LS-VAE",
                                                  "seed": 1}]
    fig = study.images_figure(results, "digits")
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels == ["held-out images", "LS-VAE\nreconstruction", "mean of p(x|z)",
                      "sample of p(x|z)", "LV-VAE\nreconstruction", "mean of p(x|z)",
                      "sample of p(x|z)"]
    shown = fig.axes[0].get_images()[0].get_array()
    assert shown.shape == (8, 2 * 9 - 1 + 9 * 8) and shown[0, 1] == pytest.approx(1 / 255)
    assert study.images_figure(results, "fashion-mnist") is None
