"""Faults: killed processes, killed writes, full disks, divergence with rollback."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyro
import pytest
import torch
from helpers import PoisonOnce

import pyro_lvae as lv
from pyro_lvae import io
from pyro_lvae.training import Checkpoints, Checks
from pyro_lvae.training.fit import CHECKPOINT_NAME, History

TRAIN = [sys.executable, "-m", "pyro_lvae.cli", "train", "--obs", "learned-vector",
         "--hidden", "8", "--blocks", "1", "--steps", "1200", "--checkpoint-every", "100",
         "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_sigkill_mid_run_then_resume_continues_exactly(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(TRAIN + ["--out", str(whole)], check=True, env=ENV, capture_output=True)
    proc = subprocess.Popen(TRAIN + ["--out", str(killed)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (killed / CHECKPOINT_NAME).exists() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "history.csv").exists()  # it really died before the end
    step = torch.load(killed / CHECKPOINT_NAME, weights_only=True)["step"]
    assert 0 < step < 1200
    subprocess.run([sys.executable, "-m", "pyro_lvae.cli", "train", "--resume", str(killed),
                    "--quiet"], check=True, env=ENV, capture_output=True)
    a = History.from_csv(whole / "history.csv")
    b = History.from_csv(killed / "history.csv")
    assert len(b) == 1200
    assert np.array_equal(a["loss"], b["loss"]) and np.array_equal(a["sigma"], b["sigma"])


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_checkpoint(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, torch, pyro_lvae as lv
        from pyro_lvae.training import Checkpoints, Checks
        real, calls = torch.save, [0]
        def dying_save(obj, f):
            calls[0] += 1
            if calls[0] == 2:  # the second checkpoint: write half a file, then die
                f.write(b"PK half a zip"); f.flush(); os.kill(os.getpid(), signal.SIGKILL)
            real(obj, f)
        torch.save = dying_save
        vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=8, blocks=1)
        lv.fit(vae, lv.datasets.manifold2d, steps=50, tools=[Checks(every=10), Checkpoints(10)],
               seed=0, out={str(tmp_path)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == 10
    assert list(tmp_path.glob(".checkpoint.pt.*.tmp"))  # the half-written temporary file
    vae = lv.load(tmp_path / CHECKPOINT_NAME)
    h = lv.fit(vae, lv.datasets.manifold2d, steps=30, tools=[Checks(every=10)], seed=0,
               out=tmp_path, resume=True)
    assert len(h) == 30
    assert not list(tmp_path.glob(".checkpoint.pt.*.tmp"))  # cleaned up on resume


def _failing_save(after: int, error: OSError):
    real, calls = torch.save, [0]

    def save(obj, f):
        calls[0] += 1
        if calls[0] > after:
            f.write(b"partial")
            raise error
        real(obj, f)
    return save


@pytest.mark.parametrize("error, message", [
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    (PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),
])
def test_full_disk_or_unwritable_folder_is_a_clear_error_and_keeps_the_checkpoint(
        tmp_path, monkeypatch, error, message):
    vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=8, blocks=1)
    monkeypatch.setattr(io.torch, "save", _failing_save(1, error))
    with pytest.raises(lv.CheckpointError, match=message) as info:
        lv.fit(vae, lv.datasets.manifold2d, steps=40, tools=[Checks(every=10), Checkpoints(10)],
               seed=0, out=tmp_path)
    assert "unchanged" in str(info.value)
    monkeypatch.undo()
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == 10
    assert not list(tmp_path.glob(".*.tmp"))


def test_rollback_restores_the_last_good_check_and_lowers_the_learning_rate(caplog):
    pyro.set_rng_seed(0)
    vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=8, blocks=1)
    opt = PoisonOnce(vae.parameters(), at=25)
    h = lv.fit(vae, lv.datasets.manifold2d, steps=60, seed=0, optimizer=opt,
               tools=[Checks(every=10, on_divergence="rollback")])
    assert len(h) == 60 and np.isfinite(h["loss"]).all()
    assert h["step"].tolist() == list(range(60))
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4)
    assert "rolled back to step 20" in caplog.text


def test_rollback_gives_up_after_max_rollbacks():
    vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=8, blocks=1)
    x = lv.datasets.manifold2d(200) * 1e30
    with pytest.raises(lv.TrainingDiverged, match=r"after 2 rollback\(s\)"):
        lv.fit(vae, x, steps=100, lr=1e3,
               tools=[Checks(every=5, on_divergence="rollback", max_rollbacks=2)])
    assert all(torch.isfinite(v).all() for v in vae.state_dict().values())


def test_rollback_needs_a_torch_optimiser():
    vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=8, blocks=1)
    with pytest.raises(lv.ConfigError, match="torch optimiser"):
        lv.fit(vae, lv.datasets.manifold2d, steps=5, optimizer=pyro.optim.Adam({"lr": 1e-3}),
               tools=[Checks(on_divergence="rollback")])


def test_every_torch_load_in_the_package_is_weights_only():
    import ast
    from pathlib import Path

    package = Path(lv.__file__).parent
    calls = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load" and getattr(node.func.value, "id", "") == "torch"):
                calls.append((path.name, node))
    assert calls, "expected at least one torch.load (in io.safe_load)"
    for name, node in calls:
        flags = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
        assert flags.get("weights_only") is True, f"torch.load without weights_only in {name}"
