"""The benchmark scripts run (tiny sizes); their measurements live in the docs, not here."""

import importlib
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    # an importable module: the scaling benchmark's workers are spawned processes that import
    # it by name (they inherit sys.path)
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name[:-3])


def test_long_run_memory_benchmark_small(tmp_path):
    module = _load("long_run_memory.py")
    result = module.main(module.parser().parse_args(
        ["--steps", "300", "--hidden", "8", "--csv", str(tmp_path / "rss.csv")]))
    assert result["param_store_entries_after"] == result["param_store_entries_warm"]
    assert result["history_mb"] < 0.1
    assert (tmp_path / "rss.csv").read_text().startswith("seconds,step_estimate,rss_mb")


def test_speed_benchmark_runs_every_contestant_on_tiny_networks():
    from pyro_lvae.experiments import bench

    for case in bench.CASES:
        small = bench.Case(case.name, case.kind, case.obs, 8, 3)
        r = bench.run_case(small, "cpu", repetitions=1, small=True, ablation=True)
        assert set(r["seconds"]) == {"reference", "pyro-lvae", "pyro SVI",
                                     "traced ELBO + torch Adam", "pyro SVI, validation on"}
        assert all(v[0] > 0 for v in r["seconds"].values())
    assert "time ratio" in bench.markdown([r])


def test_speed_benchmark_on_the_cpu_clock_uses_one_thread_and_says_so():
    import torch

    from pyro_lvae.experiments import bench

    threads = torch.get_num_threads()
    case = bench.CASES[0]
    small = bench.Case(case.name, case.kind, case.obs, 8, 3)
    seen = []
    original = bench.run_case
    bench.run_case = lambda *a, **k: seen.append(torch.get_num_threads()) or original(
        small, "cpu", repetitions=1, small=True, svi=False, clock=k["clock"])
    try:
        results = bench.run("cpu", repetitions=1, report=lambda line: None, clock="cpu")
    finally:
        bench.run_case = original
    assert set(seen) == {1} and torch.get_num_threads() == threads
    assert all(v[0] > 0 for v in results[0]["seconds"].values())
    assert "1 thread, process CPU time" in bench.markdown(results)


def test_reference_loss_is_the_same_objective():
    """The hand-written reference computes the loss pyro-lvae trains (same seed, same value)."""
    import pyro
    import torch

    import pyro_lvae as lv
    from pyro_lvae.direct_elbo import direct_elbo_terms
    from pyro_lvae.experiments.bench import _Reference

    for obs in (lv.LearnedScalarScale(init_scale=1.0), lv.LearnedVectorScale(init_scale=1.0)):
        vae = lv.mlp_vae(2, 2, obs, hidden=8, blocks=1, standardize=False)  # as benchmarked
        ref = _Reference(vae)
        x = lv.datasets.manifold2d(16)
        pyro.set_rng_seed(3)
        ours = direct_elbo_terms(vae, x).loss
        pyro.set_rng_seed(3)
        theirs = ref.loss(x)
        assert torch.allclose(ours, theirs, rtol=1e-5)


def test_scaling_benchmark_small():
    module = _load("scaling.py")
    rate = module.measure("mlp", 2, 1, steps=5, batch=8)
    assert rate > 0


def test_priors_benchmark_times_every_prior():
    module = _load("priors.py")
    result = module.main(module.parser().parse_args(
        ["--steps", "2", "--repeats", "1", "--hidden", "8", "--blocks", "1"]))
    assert set(result) == set(module.PRIORS) and all(v > 0 for v in result.values())


def _tiny_counts():
    import torch

    import pyro_lvae as lv

    data = lv.datasets.synthetic_counts(60, genes=20, types=3,
                                        generator=torch.Generator().manual_seed(0))
    train, test = lv.datasets.held_out_split(60, 0.25, seed=0)
    return data.counts[train], data.counts[test], data.labels[test]


def _tiny_setting(module):
    return module.Setting(hidden=8, latent=2, epochs=1, batch_size=16, samples=20, neighbours=3,
                          folds=3)


def test_counts_scvi_benchmark_trains_and_scores_the_count_vaes_tiny():
    import math

    module = _load("counts_scvi.py")
    train, test, labels = _tiny_counts()
    setting = _tiny_setting(module)
    assert [len(b) for b in module.epoch_batches(train, 16, 0)] == [16, 16, 13]  # last kept
    for likelihood, dispersion, heads, theta in (("nb", "gene-cell", 2, 0),
                                                 ("zinb", "gene", 2, 20)):
        row = module.run_one("pyro-lvae", likelihood, dispersion, train, test, labels, setting, 0)
        # one hidden layer of 8 each way: encoder 20 -> 8 -> 2 x 2, decoder 2 -> 8 -> heads x 20
        assert row["parameters"] == (20 * 8 + 8) + (8 * 4 + 4) + (2 * 8 + 8) \
            + heads * (8 * 20 + 20) + theta
        assert row["marginal_ll_own"] == row["marginal_ll_lv"] and math.isfinite(row["elbo"])
        assert 0 <= row["knn_accuracy"] <= 1 and -1 <= row["silhouette"] <= 1
        assert row["seconds_per_epoch"] > 0 and row["cpu_seconds_per_epoch"] > 0
    summary = module.summarise([dict(row, seed=0), dict(row, seed=1, elbo=row["elbo"] + 2)])
    assert summary[0]["seeds"] == 2 and summary[0]["elbo"] == row["elbo"] + 1
    assert math.isclose(summary[0]["elbo_sd"], math.sqrt(2))
    assert "| ZINB, dispersion per gene | pyro-lvae (`learned`) | 608 |" in module.markdown(summary)


def test_counts_scvi_benchmark_matches_scvi_sizes_and_estimators_tiny():
    pytest = __import__("pytest")
    pytest.importorskip("scvi")
    module = _load("counts_scvi.py")
    train, test, labels = _tiny_counts()
    setting = _tiny_setting(module)
    for likelihood, dispersion in (("nb", "gene"), ("zinb", "gene-cell")):
        ours = module.run_one("pyro-lvae", likelihood, dispersion, train, test, labels, setting, 0)
        theirs = module.run_one("scvi-tools", likelihood, dispersion, train, test, labels,
                                setting, 0)
        # the same layers; SCVI adds a batch norm (scale and shift) after each hidden layer
        assert theirs["parameters"] - ours["parameters"] == 2 * (2 * 8)
        # SCVI's own estimator and lv.evaluate.iwae on SCVI's networks: the same bound, 20 draws
        assert abs(theirs["marginal_ll_own"] - theirs["marginal_ll_lv"]) < 2.0
        assert theirs["elbo"] < theirs["marginal_ll_own"] + 1.0
def _images_pythae_args(module, *extra):
    return module.parser().parse_args(
        ["--images", "digits28", "--steps", "8", "--seeds", "1", "--batch-size", "16",
         "--digits-train", "64", "--width", "4", "--blocks", "0", "--latent-dim", "2",
         "--samples", "40", "--components", "3", "--iwae-samples", "2", *extra])


def test_images_pythae_benchmark_pyro_lvae_side(tmp_path):
    """pyro-lvae's side of the pythae comparison on a tiny version: weights selected on the
    validation images each epoch, test measures of the selected weights, bits/dim only where
    the model has them, a table, a JSON file and a figure."""
    import json
    import math

    module = _load("images_pythae.py")
    results = module.main(_images_pythae_args(
        module, "--models", "F-VAE", "discretised logistic", "--out", str(tmp_path)))
    assert [r["model"] for r in results] == ["F-VAE", "discretised logistic"]
    fixed, logistic = results
    for r in results:
        assert r["best_step"] in (4, 8)  # 4 steps per epoch, selected at an epoch's end
        assert r["steps_per_second"] > 0 and 0 < r["rmse"] < 1 and r["sharpness"] >= 0
        assert math.isfinite(r["frechet"]) and r["frechet"] > r["frechet_floor"] > 0
    assert fixed["frechet_floor"] == logistic["frechet_floor"]  # the same images for both
    assert math.isnan(fixed["bits_per_dim"]) and 0 < fixed["bits_per_dim_dequantized"]
    assert 0 < logistic["bits_per_dim"] < 8 and math.isnan(logistic["bits_per_dim_dequantized"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["model"] for r in saved["summary"]] == ["F-VAE", "discretised logistic"]
    assert saved["summary"][1]["bits_per_dim"] == logistic["bits_per_dim"]
    assert "| digits28 | discretised logistic | 1 |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "pythae-digits28.png").stat().st_size > 0
    again = module.main(_images_pythae_args(
        module, "--models", "F-VAE", "discretised logistic", "--out", str(tmp_path)))
    assert [r["frechet"] for r in again] == [r["frechet"] for r in results]  # read back


def test_images_pythae_benchmark_data_and_refusals(monkeypatch):
    import pytest
    import torch

    module = _load("images_pythae.py")
    x = torch.zeros(2, 64)
    x[0] = 1.0
    x[1, 3 * 8 + 5] = 1.0  # one lit pixel of 8x8: row 3, column 5 (3.5 pixels of 28x28 each)
    big = module.upscale(x)
    assert big.shape == (2, 1, 28, 28) and torch.all(big[0] == 1)
    assert torch.equal(big, torch.round(big * 255) / 255)
    row, column = divmod(int(big[1].argmax()), 28)
    assert 3 * 3.5 <= row < 4 * 3.5 and 5 * 3.5 <= column < 6 * 3.5
    split, validation = module.image_split("digits28", {"digits_train": 1000})
    assert split.train.shape == (1000, 1, 28, 28) and validation.shape == (257, 1, 28, 28)
    assert split.test.shape == (540, 1, 28, 28)
    with pytest.raises(SystemExit, match="whole number"):
        module.jobs(_images_pythae_args(module, "--steps", "6", "--models", "F-VAE"))
    monkeypatch.setitem(sys.modules, "pythae", None)  # as if it were not installed
    with pytest.raises(SystemExit, match="pythae is not installed.*pip install"):
        module.jobs(_images_pythae_args(module, "--models", "pythae VAE"))


def test_images_pythae_benchmark_pythae_side():
    import math

    import pytest

    pytest.importorskip("pythae")
    module = _load("images_pythae.py")
    results = module.main(_images_pythae_args(
        module, "--models", "pythae VAE", "pythae VAMP", "pythae IWAE"))
    for r in results:
        assert r["library"] == "pythae" and r["best_step"] in (4, 8)
        assert math.isnan(r["bits_per_dim"]) and 0 < r["rmse"] < 1
        assert math.isfinite(r["frechet"]) and r["steps_per_second"] > 0
