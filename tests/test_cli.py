"""The pyro-lvae command: train, resume, demo, and one-line errors."""

import json
import subprocess
import sys

import pytest

from pyro_lvae.cli import main
from pyro_lvae.train import History

TINY = ["--hidden", "8", "--blocks", "1", "--quiet"]


def test_train_writes_a_complete_run_folder_and_resumes(tmp_path, capsys):
    run = tmp_path / "ls"
    code = main(["train", "--obs", "learned-scalar", "--steps", "30", "--checkpoint-every", "10",
                 "--out", str(run), *TINY])
    assert code == 0
    for name in ("config.json", "history.csv", "checkpoint.pt", "summary.json", "points.png",
                 "training.png"):
        assert (run / name).exists(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 30 and summary["elbo"] < 0 and 0 < summary["sigma"] < 1.1
    assert "held-out ELBO" in capsys.readouterr().out
    assert main(["train", "--resume", str(run), "--steps", "45", "--quiet"]) == 0
    assert len(History.from_csv(run / "history.csv")) == 45


def test_train_fixed_star_and_scheduled_replay_from_a_learned_run(tmp_path):
    ls = tmp_path / "ls"
    main(["train", "--obs", "learned-scalar", "--steps", "20", "--out", str(ls), *TINY])
    final = History.from_csv(ls / "history.csv")["sigma"][-1]
    star = tmp_path / "star"
    assert main(["train", "--obs", "fixed", "--sigma-from", str(ls), "--steps", "5",
                 "--out", str(star), *TINY]) == 0
    assert json.loads((star / "config.json").read_text())["observation"]["scale"] == \
        pytest.approx(final)
    replay = tmp_path / "replay"
    assert main(["train", "--obs", "scheduled", "--sigma-from", str(ls / "history.csv"),
                 "--steps", "20", "--out", str(replay), *TINY]) == 0
    replayed = History.from_csv(replay / "history.csv")["sigma"]
    assert replayed.tolist() == pytest.approx(History.from_csv(ls / "history.csv")["sigma"]
                                              .tolist(), rel=1e-5)


def test_demo_writes_table_and_figures(tmp_path, capsys):
    assert main(["demo", "--steps", "20", "--out", str(tmp_path), *TINY]) == 0
    table = (tmp_path / "results.md").read_text()
    for variant in ("F-VAE sigma=1", "F-VAE sigma=0.05", "LS-VAE", "LV-VAE"):
        assert f"| {variant} |" in table
    for name in ("overview.png", "training.png", "ls-vae.png", "lv-vae.png",
                 "ls-vae-history.csv"):
        assert (tmp_path / name).exists(), name
    assert "| LV-VAE |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--obs", "scheduled", "--out", "{tmp}/r"], "needs --sigma-from"),
        (["train", "--obs", "fixed", "--sigma", "-1", "--out", "{tmp}/r"], "scale > 0"),
        (["train", "--obs", "learned-vector", "--min-scale", "0", "--out", "{tmp}/r"],
         "min_scale > 0"),
        (["train", "--obs", "fixed", "--sigma-from", "{tmp}/missing", "--out", "{tmp}/r"],
         "cannot read history"),
        (["train", "--beta-schedule", "warmup", "--out", "{tmp}/r"], "unknown beta schedule"),
        (["train", "--dataset", "cifar", "--out", "{tmp}/r"], "unknown dataset"),
        (["train", "--resume", "{tmp}/nothing"], "no config.json"),
        (["train", "--steps", "5"], "--out"),
        (["train", "--device", "tpu", "--out", "{tmp}/r"], "unknown device"),
    ],
)
def test_cli_errors_are_one_line_with_exit_2(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv + ["--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyro-lvae: error:") and message in err
    assert "\n" not in err and "Traceback" not in err


def test_cli_refuses_to_overwrite_a_run(tmp_path, capsys):
    run = str(tmp_path / "r")
    assert main(["train", "--steps", "3", "--out", run, *TINY]) == 0
    before = (tmp_path / "r" / "checkpoint.pt").read_bytes()
    assert main(["train", "--steps", "3", "--out", run, *TINY]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "r" / "checkpoint.pt").read_bytes() == before


def test_console_script_unknown_variant_exits_2_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "pyro_lvae.cli", "train", "--obs", "gaussian"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "invalid choice: 'gaussian'" in proc.stderr and "Traceback" not in proc.stderr


def test_corrupt_checkpoint_on_resume_is_a_clear_error(tmp_path, capsys):
    run = tmp_path / "r"
    main(["train", "--steps", "3", "--out", str(run), *TINY])
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    assert main(["train", "--resume", str(run), "--steps", "6", "--quiet"]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err
