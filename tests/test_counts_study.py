"""The counts study end to end on a tiny setting (synthetic counts only: no scanpy), and the
count data sets of ``pyro-lvae train``."""

import math

import numpy as np
import pytest
import torch

from pyro_lvae.errors import ConfigError
from pyro_lvae.experiments.count_tasks import latent_agreement, theta_recovery
from pyro_lvae.experiments.studies.counts import (
    CountStudy,
    aggregate,
    claims,
    markdown,
    run_study,
    write_outputs,
)

pytest.importorskip("sklearn")

TINY = dict(datasets=("counts-synthetic",), families=("NB",), thetas=(1.0, 100.0),
            learned=("learned", "decoder"), seeds=2, steps=30, hidden=8, latent_dim=3,
            batch_size=64, beta="1", iwae_samples=4)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    study = CountStudy(**TINY)
    out = tmp_path_factory.mktemp("counts")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the study's workers run; tiny networks gain nothing from more
    try:
        results = run_study(study, workers=1, cache=out / "jobs")
    finally:
        torch.set_num_threads(threads)
    return study, results, out


def test_every_run_is_measured_with_finite_sane_numbers(tiny):
    study, results, _ = tiny
    assert len(results) == 2 * 5  # 2 seeds x (2 fixed thetas, learned, decoder, Poisson)
    for r in results:
        assert not r["diverged"]
        for key in ("elbo", "iwae", "kl", "reconstruction", "knn_accuracy", "silhouette"):
            assert math.isfinite(r[key]), (r["family"], r["dispersion"], key)
        assert r["elbo"] < 0 < r["kl"] and r["elbo"] == pytest.approx(
            -(r["reconstruction"] + r["kl"]))
        assert 0 <= r["active_units"] <= study.latent_dim
        assert 0 <= r["knn_accuracy"] <= 1 and -1 <= r["silhouette"] <= 1
        assert r["cells"] == 400 and r["iwae_samples"] == 4
        if r["family"] == "Poisson":
            assert math.isnan(r["theta_error"]) and math.isnan(r["theta_median"])
        else:  # the synthetic set knows its theta: each setting is scored against it
            assert math.isfinite(r["theta_error"]) and r["theta_error"] >= 0
    fixed = [r for r in results if isinstance(r["dispersion"], float)]
    assert {r["theta_median"] for r in fixed} == {1.0, 100.0}


def test_table_rows_figures_and_claims(tiny):
    study, results, out = tiny
    rows = aggregate(results)
    assert [r["setting"] for r in rows] == ["NB theta=1", "NB theta=100",
                                            "NB theta learned per gene",
                                            "NB theta from the decoder", "Poisson"]
    assert all(r["seeds"] == 2 and r["diverged"] == 0 for r in rows)
    assert all(np.isfinite(r["iwae_sd"]) for r in rows)
    text = markdown(study, results)
    for r in rows:
        assert f"| {r['setting']} | 2 |" in text
    assert "## Claims" in text and "theta error" in text
    found = claims(results)
    texts = [c for c, _, _ in found]
    assert all(h in (True, False, None) for _, h, _ in found)
    assert any("learned per gene reaches the best fixed theta" in c for c in texts)
    assert any("from the decoder beats theta learned per gene" in c for c in texts)
    # the broadest theta is compared with the learned one unless it is itself the best
    assert len(found) == (2 if "best fixed theta of the grid (1)" in texts[0] else 4)
    written = write_outputs(study, results, out)
    assert {p.name for p in written} == {"counts.md", "summary.csv", "runs.csv",
                                         "counts-sweep.png", "counts-knn.png"}
    assert all(p.stat().st_size > 0 for p in written)


def test_a_second_call_reads_the_finished_runs_back(tiny):
    study, results, out = tiny
    again = run_study(study, workers=1, cache=out / "jobs")
    assert [r["iwae"] for r in again] == [r["iwae"] for r in results]


def test_quick_setting_is_small():
    quick = CountStudy.quick()
    assert quick.seeds == 1 and quick.steps <= 600 and len(quick.jobs()) == 22


def test_latent_agreement_and_theta_recovery():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(40)
    apart = torch.randn(120, 2, generator=g) * 0.1 + labels[:, None] * 5.0
    good = latent_agreement(apart, labels)
    assert good["knn_accuracy"] == 1.0 and good["silhouette"] > 0.9
    mixed = latent_agreement(torch.randn(120, 2, generator=g), labels)
    assert mixed["knn_accuracy"] < 0.6 and abs(mixed["silhouette"]) < 0.2
    truth = torch.tensor([1.0, 2.0, 4.0])
    assert theta_recovery(torch.tensor([2.0, 4.0, 8.0]), truth) == pytest.approx(math.log(2))
    assert theta_recovery(torch.tensor(2.0), truth) == pytest.approx(math.log(2))
    assert math.isnan(theta_recovery(None, truth)) and math.isnan(theta_recovery(truth, None))


def test_count_data_sets_refuse_models_of_other_data():
    from pyro_lvae.experiments.tasks import TASKS

    task = TASKS["counts-synthetic"]
    with pytest.raises(ConfigError, match="--obs learned-scalar is not a model of counts"):
        task.sample({"obs": "learned-scalar"})
    train, validation, test = task._cells()
    assert (len(train), len(validation), len(test)) == (1440, 160, 400)


def test_train_on_counts_from_the_command_line(tmp_path, capsys):
    import json

    from pyro_lvae.cli import main

    out = tmp_path / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["train", "--dataset", "counts-synthetic", "--obs", "poisson", "--steps",
                     "5", "--hidden", "8", "--latent-dim", "2", "--beta-schedule", "1",
                     "--out", str(out), "--quiet"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cells"] == 400 and summary["dataset"] == "counts-synthetic"
    assert math.isfinite(summary["iwae"]) and 0 <= summary["knn_accuracy"] <= 1
    assert (out / "latent.png").exists() and (out / "training.png").exists()
    refused = tmp_path / "refused"
    assert main(["train", "--dataset", "counts-synthetic", "--obs", "fixed", "--out",
                 str(refused), "--quiet"]) == 2
    assert "--obs fixed is not a model of counts" in capsys.readouterr().err
    assert not refused.exists()
