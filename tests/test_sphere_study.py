"""The sphere study: Theorem 1's collapse shows in (small) training runs; commands work."""

import pytest

from pyro_lvae import theory
from pyro_lvae.cli import main
from pyro_lvae.experiments.jobs import run_jobs
from pyro_lvae.experiments.studies.sphere import SphereStudy, run_job


def job(ratio, obs="fixed", steps=600):
    sigma_c = theory.critical_sigma(1.0, 2)
    return {"dim": 2, "radius": 1.0, "seed": 0, "obs": obs,
            "sigma": ratio * sigma_c if obs == "fixed" else 1.0, "beta": "1", "steps": steps,
            "batch_size": 128, "hidden": 32, "blocks": 1, "lr": 3e-3, "device": "cpu"}


def test_fixed_sigma_above_critical_collapses_and_below_finds_the_sphere():
    above = run_job(job(2.0))
    below = run_job(job(0.25))
    assert above["r_star"] == 0 and above["prior_radius"] < 0.1
    # collapsed: the ELBO reaches the theory's best log-likelihood (which is at r = 0)
    assert above["elbo"] == pytest.approx(above["best_log_likelihood"], abs=0.05)
    assert below["r_star"] > 0.98 and below["prior_radius"] > 0.75
    assert below["reconstruction_radius"] > 0.75
    assert below["elbo"] <= below["best_log_likelihood"] + 0.05  # a bound, up to MC error


def test_study_jobs_cover_the_grid():
    study = SphereStudy(dims=(2, 3), ratios=(0.5, 2.0), seeds=2)
    jobs = study.jobs()
    assert len(jobs) == 2 * 2 * (2 + len(study.ls_betas))
    assert {j["obs"] for j in jobs} == {"fixed", "learned-scalar"}


def test_parallel_runner_returns_results_in_job_order():
    jobs = [dict(job(r, steps=20), label=f"r={r}") for r in (0.5, 2.0)]
    lines = []
    results = run_jobs(run_job, jobs, workers=2, report=lines.append)
    assert [round(r["ratio"], 6) for r in results] == [0.5, 2.0]
    assert len(lines) == 2


def test_theory_command_writes_figure_and_table(tmp_path, capsys):
    assert main(["theory", "--dim", "3", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "theory.png").exists()
    assert "sigma_c = R / sqrt(d) = 0.57735" in (tmp_path / "theory.md").read_text()
    assert "| 1 |" in capsys.readouterr().out


def test_sphere_command_small_run(tmp_path):
    argv = ["reproduce", "sphere", "--quick", "--dims", "2", "--steps", "30", "--hidden", "8",
            "--blocks", "1", "--workers", "1", "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    for name in ("sphere.md", "sphere.csv", "runs.csv", "sphere-d2.png"):
        assert (tmp_path / name).exists(), name
    assert "| 2 | fixed | 0.25 |" in (tmp_path / "sphere.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["reproduce", "sphere", "--dims", "2,x"], "--dims"),
    (["reproduce", "sphere", "--dims", "0"], "--dims"),
    (["reproduce", "sphere", "--steps", "0"], "--steps"),
    (["reproduce", "collapse", "--dims", "2"], "sphere study only"),
    (["reproduce", "sphere", "--beta-schedule", "1"], "manifold study only"),
    (["reproduce", "manifold", "--beta-schedule", "warm"], "unknown beta schedule"),
    (["theory", "--radius", "-1"], "radius"),
])
def test_study_command_errors(tmp_path, capsys, argv, message):
    assert main(argv + ["--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
