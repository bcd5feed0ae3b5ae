"""The job runner: kept results are read back exactly, unreadable ones are run again, and jobs
run with subnormal floats flushed to zero."""

import json

import numpy as np
import pytest
import torch

from pyro_lvae.cli import main
from pyro_lvae.experiments.jobs import decode_result, encode_result, job_key, run_jobs
from pyro_lvae.observations import LearnedScalarScale
from pyro_lvae.training import ProgressBar
from pyro_lvae.training.fit import fit, fused_adam
from pyro_lvae.vae import mlp_vae

CALLS = []


def square(job):
    CALLS.append(job["x"])
    return {"x": job["x"], "y": job["x"] ** 2, "trace": np.arange(job["x"], dtype=np.float32)}


def flushes(job):
    tiny = torch.tensor([1e-39])  # subnormal in float32
    return {"kept": float(tiny * 1.0)}


def test_result_encoding_round_trips_arrays_tuples_tensors_and_int_keys():
    result = {"a": np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3), "b": (1, "two", 3.5),
              "c": {0: 0.25, 2: [1, 2]}, "d": torch.arange(4), "e": np.float64(0.5),
              "f": float("nan"), "g": None, "h": [np.int64(3), True]}
    back = decode_result(encode_result(result))
    assert back["a"].dtype == np.float32 and back["a"].shape == (2, 3)
    np.testing.assert_array_equal(back["a"], result["a"])
    assert back["b"] == (1, "two", 3.5)
    assert back["c"] == {0: 0.25, 2: [1, 2]}
    assert torch.equal(back["d"], result["d"])
    assert back["e"] == 0.5 and np.isnan(back["f"]) and back["g"] is None
    assert back["h"] == [3, True]
    with pytest.raises(TypeError, match="cannot store a object"):
        encode_result({"bad": object()})


def test_job_key_changes_with_the_job_and_the_function():
    assert job_key(square, {"x": 1}) == job_key(square, {"x": 1})
    assert job_key(square, {"x": 1}) != job_key(square, {"x": 2})
    assert job_key(square, {"x": 1}) != job_key(flushes, {"x": 1})
    assert job_key(square, {"x": 1, "label": "a"}) == job_key(square, {"x": 1, "label": "b"})
    # where the data lie is not a setting of the run
    assert (job_key(square, {"x": 1, "data_root": "/a"})
            == job_key(square, {"x": 1, "data_root": "/b"}))


def test_cache_reads_back_finished_jobs_and_reruns_unreadable_ones(tmp_path):
    jobs = [{"x": 2}, {"x": 3}]
    CALLS.clear()
    first = run_jobs(square, jobs, cache=tmp_path)
    assert CALLS == [2, 3] and len(list(tmp_path.glob("*.json"))) == 2
    lines = []
    again = run_jobs(square, jobs, cache=tmp_path, report=lines.append)
    assert CALLS == [2, 3]  # nothing trained again
    assert lines == ["2 of 2 run(s) read back from " + str(tmp_path)]
    for a, b in zip(first, again, strict=True):
        assert a["y"] == b["y"]
        np.testing.assert_array_equal(a["trace"], b["trace"])
    # a truncated file (a kill mid-write cannot make one, but a full disk or a hand edit can)
    path = tmp_path / f"{job_key(square, jobs[1])}.json"
    path.write_text(path.read_text()[:20])
    third = run_jobs(square, jobs + [{"x": 4}], cache=tmp_path)
    assert CALLS == [2, 3, 3, 4]
    assert [r["y"] for r in third] == [4, 9, 16]
    assert json.loads(path.read_text())["job"] == {"x": 3}


def test_jobs_flush_subnormals_and_the_process_setting_is_restored():
    assert float(torch.tensor([1e-39]) * 1.0) > 0  # off outside the runner
    assert run_jobs(flushes, [{}])[0]["kept"] == 0.0
    assert run_jobs(flushes, [{}, {}], workers=2)[1]["kept"] == 0.0
    assert float(torch.tensor([1e-39]) * 1.0) > 0


def test_fused_adam_trains_like_adam():
    assert fused_adam(1e-3)([torch.zeros(2, requires_grad=True)]).defaults["fused"]
    losses = {}
    for name, opt in (("plain", None), ("fused", fused_adam(1e-2))):
        torch.manual_seed(0)
        vae = mlp_vae(2, 2, LearnedScalarScale(), hidden=16, blocks=1)
        h = fit(vae, torch.randn(256, 2), steps=60, batch_size=64, lr=1e-2, optimizer=opt,
                seed=0, tools=[ProgressBar(False)], device="cpu")
        losses[name] = h["loss"]
    np.testing.assert_allclose(losses["fused"], losses["plain"], rtol=1e-3)
    assert losses["fused"][-10:].mean() < losses["fused"][:10].mean()


def test_reproduce_command_resumes_from_its_jobs_folder(tmp_path, capsys):
    argv = ["reproduce", "sphere", "--quick", "--dims", "2", "--steps", "20", "--hidden", "8",
            "--blocks", "1", "--workers", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    kept = sorted(p.name for p in (tmp_path / "jobs").glob("*.json"))
    assert kept
    capsys.readouterr()
    assert main(argv) == 0
    assert f"{len(kept)} of {len(kept)} run(s) read back" in capsys.readouterr().out
    assert main(argv + ["--fresh", "--quiet"]) == 0
    assert "read back" not in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "jobs").glob("*.json")) == kept
