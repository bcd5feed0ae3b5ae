"""The benchmark scripts run (tiny sizes); their measurements live in the docs, not here."""

import importlib.util
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name[:-3], BENCHMARKS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_long_run_memory_benchmark_small(tmp_path):
    module = _load("long_run_memory.py")
    result = module.main(module.parser().parse_args(
        ["--steps", "300", "--hidden", "8", "--csv", str(tmp_path / "rss.csv")]))
    assert result["param_store_entries_after"] == result["param_store_entries_warm"]
    assert result["history_mb"] < 0.1
    assert (tmp_path / "rss.csv").read_text().startswith("seconds,step_estimate,rss_mb")
