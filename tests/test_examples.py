"""Every example runs in its small mode; an unregistered example fails the suite."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
REGISTERED = ["artificial_2d.py", "data_scale.py", "digits_overfitting.py", "fashion_mnist.py",
              "fashion_mnist_bits.py",
              "learning_rate_study.py", "plain_pyro.py", "reproduce_manifold.py",
              "sigma_start_probe.py", "table_start_study.py", "tables.py"]


def test_every_example_is_registered():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(REGISTERED)


def _load(name):
    spec = importlib.util.spec_from_file_location(name[:-3], EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name[:-3]] = module
    spec.loader.exec_module(module)
    return module


def test_artificial_2d_smoke(tmp_path):
    module = _load("artificial_2d.py")
    results = module.main(module.parser().parse_args(["--smoke", "--out", str(tmp_path)]))
    assert set(results) == {"F-VAE sigma=1", "F-VAE sigma=0.1", "LS-VAE", "LV-VAE", "F*-VAE",
                            "replayed schedule"}
    assert results["F*-VAE"]["sigma"] == pytest.approx(results["LS-VAE"]["sigma"], rel=1e-4)
    assert (tmp_path / "variants.png").exists()


def test_digits_overfitting_smoke():
    results = _load("digits_overfitting.py").main(["--steps", "60", "--every", "30"])
    for r in results.values():
        assert [s for s, _ in r["curve"]] == [30, 60]
        # a bound on 8-bit digits: positive, and below 8 bits plus what 60 steps cannot learn
        assert all(0 < b < 12 for _, b in r["curve"]) and 0 < r["held_out"] < 12
        assert r["held_out"] == pytest.approx(r["curve"][-1][1], abs=0.2)  # the same model


def test_data_scale_smoke(tmp_path):
    module = _load("data_scale.py")
    args = ["--smoke", "--starts", "data", "--networks", "standardized", "--out",
            str(tmp_path / "runs.json")]
    rows = module.main(module.parser().parse_args(args))
    small, large = sorted(rows, key=lambda r: r["scale"])
    assert (small["scale"], large["scale"]) == (0.1, 10.0)
    # the default networks and start: the same run at both scales, in unit-scale nats
    assert small["elbo_unit"] == pytest.approx(large["elbo_unit"], abs=0.05)
    assert module.main(module.parser().parse_args(args)) == rows  # resumed: nothing rerun


def test_sigma_start_probe_smoke():
    module = _load("sigma_start_probe.py")
    runs = module.main(module.parser().parse_args(["--smoke"]))
    assert set(runs) == {("study", 0), ("study, standardised", 0)}
    for sigma in runs.values():
        assert sigma.shape == (20,)
        # the data start (half the curve's spread of about 0.94) is left within ten steps
        assert 0.3 < sigma[0] < 0.6 and sigma[10] > sigma[0] + 0.2


def test_plain_pyro_smoke(capsys):
    module = _load("plain_pyro.py")
    sigma = module.main(module.parser().parse_args(["--smoke"]))
    assert sigma < 1.0  # the learned sigma moved down from its start
    assert "posterior std of z" in capsys.readouterr().out


def test_reproduce_manifold_smoke(tmp_path):
    module = _load("reproduce_manifold.py")
    verdicts = module.main(module.parser().parse_args(["--smoke", "--workers", "1",
                                                       "--out", str(tmp_path)]))
    assert [v[0].split()[0] for v in verdicts] == ["(a)", "(a2)", "(b)", "(c)", "(d)", "(e)"]
    assert (tmp_path / "reproduction.md").exists()


def test_fashion_mnist_smoke(tmp_path):
    module = _load("fashion_mnist.py")
    bpd = module.main(module.parser().parse_args(["--smoke", "--out", str(tmp_path / "g.png")]))
    assert bpd > 0 and (tmp_path / "g.png").exists()


def test_tables_smoke():
    module = _load("tables.py")
    metrics = module.main(module.parser().parse_args(["--smoke"]))
    assert 0 <= metrics["detection_auc"] <= 1 and 0 <= metrics["shape_similarity"] <= 1


def test_learning_rate_study_smoke(tmp_path):
    module = _load("learning_rate_study.py")
    args = module.parser().parse_args(["--smoke", "--workers", "1", "--out", str(tmp_path)])
    table = module.main(args)
    assert set(table) == {label for label, _, _ in module.SETTINGS}
    for row in table.values():
        assert np.isfinite(row["final"]) and row["swing"] >= 0
    assert (tmp_path / "elbo-over-training.png").exists()
    assert len(list((tmp_path / "jobs").glob("*.json"))) == len(module.SETTINGS)


def test_table_start_study_smoke(tmp_path):
    module = _load("table_start_study.py")
    args = module.parser().parse_args(["--smoke", "--workers", "1", "--out", str(tmp_path)])
    table = module.main(args)
    assert set(table) == {("learned per column", "off"), ("learned per column", "on")}
    for row in table.values():
        assert set(row) == set(module.METRICS)
        for mean, _, up, pairs in row.values():
            assert np.isfinite(mean) and pairs == 1 and up in (0, 1)
    assert "| learned per column | off |" in (tmp_path / "differences.md").read_text()
    # each pair's two runs differ only in the start: 2 settings x 2 annealing
    assert len(list((tmp_path / "jobs").glob("*.json"))) == 4


def test_fashion_mnist_bits_smoke(tmp_path):
    result = _load("fashion_mnist_bits.py").main(["--smoke", "--out", str(tmp_path)])
    (name, c), = result["curves"].items()
    assert c["step"] == [3.0, 6.0, 9.0, 10.0] and np.all(np.diff(c["hours"]) > 0)
    test = result["test"][name]
    assert test["weights"] == "best.pt" and test["images"] == 20 and test["iwae_samples"] == 2
    # a bound on random 8-bit images: near 8 bits/dim, and the IWAE at least the ELBO's
    assert 7 < test["elbo_bits_per_dim"] < 12
    assert test["iwae_bits_per_dim"] <= test["elbo_bits_per_dim"] + 0.05
    assert (tmp_path / "bits.png").exists() and (tmp_path / "bits.json").exists()
