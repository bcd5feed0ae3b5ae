"""Run folders: marked by their config.json and their checkpoints, never overwritten by a run of
another kind or another run, and never changed by a refused command.

Every refusal here is checked the same way: exit status 2 (or the error class in Python), one
line on stderr naming the problem, no traceback, and every file of the folder byte-for-byte as
it was (hashes before and after).
"""

import json
import shutil

import pytest
import torch
from helpers import folder_digest

import pyro_lvae as lv
from pyro_lvae.cli import main
from pyro_lvae.training import BEST_NAME, CHECKPOINT_NAME

TINY = ["--hidden", "8", "--blocks", "1", "--quiet"]




def run_cli(argv, capsys):
    """The exit status and stderr of ``pyro-lvae argv`` (argparse's errors included)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def refused(argv, capsys, folder, message):
    """``argv`` exits with status 2 and one line naming ``message``, and ``folder`` (if any)
    is left exactly as it was."""
    before = folder_digest(folder) if folder is not None else None
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert err.startswith("pyro-lvae: error:") and err.count("\n") == 1, err
    if folder is not None:
        assert folder_digest(folder) == before
    return err


def tiny(obs=None):
    return lv.mlp_vae(2, 2, obs or lv.LearnedScalarScale(), hidden=8, blocks=1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Finished runs to copy: a mixture-prior run with an averaged model and best.pt, a
    low-rank run, a second run of the first's configuration, and a tabular model."""
    root = tmp_path_factory.mktemp("runs")
    mixture = ["--prior", "mixture", "--prior-components", "3", "--average", "ema",
               "--eval-every", "5"]
    assert main(["train", "--steps", "10", *TINY, *mixture, "--out", str(root / "mix")]) == 0
    assert main(["train", "--steps", "10", *TINY, *mixture, "--seed", "1",
                 "--out", str(root / "twin")]) == 0
    assert main(["train", "--steps", "10", *TINY, "--obs", "low-rank",
                 "--out", str(root / "low")]) == 0
    table = root / "t.csv"
    table.write_text("a,b\n" + "".join(f"{i % 5},{'xy'[i % 2]}\n" for i in range(20)))
    assert main(["tabular", "fit", str(table), "--steps", "5", *TINY,
                 "--out", str(root / "tab")]) == 0
    return root


@pytest.fixture
def run(runs, tmp_path):
    """A fresh copy of the mixture run."""
    return shutil.copytree(runs / "mix", tmp_path / "run")


def config(folder):
    return json.loads((folder / "config.json").read_text())


def identity(path):
    return torch.load(path, weights_only=True)["run"]


# ---- the marks ---------------------------------------------------------------------------------

def test_a_train_run_is_marked_by_its_config_and_its_checkpoints(runs):
    c = config(runs / "mix")
    assert (c["format"], c["kind"]) == ("pyro-lvae-run", "train")
    assert len(c["run_id"]) == 32
    for name in (CHECKPOINT_NAME, BEST_NAME):
        assert identity(runs / "mix" / name) == {"kind": "train", "id": c["run_id"]}
    assert config(runs / "twin")["run_id"] != c["run_id"]


def test_a_tabular_model_is_marked_by_its_config_and_its_checkpoint(runs):
    c = config(runs / "tab")
    assert (c["format"], c["kind"]) == ("pyro-lvae-run", "tabular")
    assert identity(runs / "tab" / CHECKPOINT_NAME) == {"kind": "tabular", "id": c["run_id"]}
    assert lv.tabular.TabularModel.load(runs / "tab").sample(4, seed=0).shape == (4, 2)


def test_a_python_fit_marks_its_checkpoint(tmp_path):
    lv.fit(tiny(), lv.datasets.manifold2d, steps=3, seed=0, out=tmp_path)
    assert identity(tmp_path / CHECKPOINT_NAME)["kind"] == "fit"


# ---- 1. a command writes into a folder of another kind ------------------------------------------

def test_tabular_fit_refuses_a_train_run_folder(runs, run, capsys):
    refused(["tabular", "fit", runs / "t.csv", "--out", run, "--steps", "5", *TINY], capsys,
            run, "is a run of pyro-lvae train")


@pytest.mark.parametrize("argv, message", [
    (["train", "--resume", "{tab}", "--steps", "20", "--quiet"], "not a run of pyro-lvae train"),
    (["train", "--out", "{tab}", "--steps", "5", *TINY], "holds a model of pyro-lvae tabular"),
    (["tabular", "sample", "{run}", "-n", "3", "-o", "{tmp}/s.csv"],
     "not a model of pyro-lvae tabular fit"),
    (["tabular", "fit", "{csv}", "--out", "{tab}", "--steps", "5", *TINY],
     "already holds a model"),
])
def test_commands_refuse_a_folder_of_another_kind(runs, run, tmp_path, capsys, argv, message):
    tab = shutil.copytree(runs / "tab", tmp_path / "tab")
    fill = {"{tab}": str(tab), "{run}": str(run), "{tmp}": str(tmp_path),
            "{csv}": str(runs / "t.csv")}
    argv = [fill.get(a, a).replace("{tmp}", str(tmp_path)) for a in argv]
    before = folder_digest(run)
    refused(argv, capsys, tab, message)
    assert folder_digest(run) == before
    assert not (tmp_path / "s.csv").exists()


def test_tabular_sample_refuses_a_checkpoint_of_another_run(runs, tmp_path, capsys):
    tab = shutil.copytree(runs / "tab", tmp_path / "tab")
    shutil.copy(runs / "mix" / CHECKPOINT_NAME, tab / CHECKPOINT_NAME)
    refused(["tabular", "sample", tab, "-n", "3", "-o", tmp_path / "s.csv"], capsys, tab,
            "not a model of pyro-lvae tabular fit")


# ---- 2. a new run writes into a folder that holds files ---------------------------------------

def test_a_new_run_refuses_a_folder_holding_a_config_of_its_own(tmp_path, capsys):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "config.json").write_text('{"mine": 1}')
    refused(["train", "--out", folder, "--lr", "0", "--steps", "5", *TINY], capsys, folder,
            "already holds config.json")
    refused(["train", "--out", folder, "--steps", "5", *TINY], capsys, folder,
            "already holds config.json")


def test_a_refused_new_run_writes_nothing(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(["train", "--out", empty, "--lr", "0", "--steps", "5", *TINY], capsys, empty,
            "lr > 0")
    assert not list(empty.iterdir())
    refused(["train", "--out", tmp_path / "new", "--lr", "0", "--steps", "5", *TINY], capsys,
            None, "lr > 0")
    assert not (tmp_path / "new").exists()


def test_a_new_run_that_fails_before_its_first_checkpoint_can_be_started_again(tmp_path,
                                                                               capsys):
    out = tmp_path / "r"
    argv = ["train", "--out", out, "--steps", "50", "--lr", "1e12", "--obs", "learned-vector",
            *TINY]
    code, err = run_cli(argv, capsys)
    assert code == 2 and "diverged" in err
    assert not out.exists()  # config.json written at the start is taken back
    assert main(["train", "--out", str(out), "--steps", "5", *TINY]) == 0


# ---- 3. a refused resume rewrites config.json --------------------------------------------------

@pytest.mark.parametrize("device, message", [("tpu", "unknown device"),
                                             ("cuda:99", "cuda")])
def test_a_resume_refused_for_its_device_leaves_the_run_as_it_was(run, capsys, device, message):
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 99:
        pytest.skip("a machine with 100 GPUs")
    refused(["train", "--resume", run, "--steps", "40", "--device", device, "--quiet"], capsys,
            run, message)
    assert main(["train", "--resume", str(run), "--quiet"]) == 0  # still resumable, as it was
    assert config(run)["steps"] == 10


def test_a_resume_refused_for_its_optimiser_state_leaves_the_run_as_it_was(run, capsys):
    blob = torch.load(run / CHECKPOINT_NAME, weights_only=True)
    blob["optimizer"]["param_groups"][0]["params"] = [0]  # a state for another model
    torch.save(blob, run / CHECKPOINT_NAME)
    refused(["train", "--resume", run, "--steps", "40", "--quiet"], capsys, run,
            "optimiser state does not fit")


# ---- 4. a checkpoint of another run or a damaged one -------------------------------------------

def _poke(path, **entries):
    blob = torch.load(path, weights_only=True)
    blob.update(entries)
    torch.save(blob, path)


@pytest.mark.parametrize("damage, message", [
    ("low-rank checkpoint", "belongs to another run"),
    ("twin's checkpoint", "belongs to another run"),
    ("unmarked low-rank checkpoint", "carries no run identity"),
    ("observation edited", "unknown observation model 'nope'"),
    ("observation edited to another", "observation 'learned-scalar' (expected 'fixed')"),
    ("prior edited", "prior 'mixture' (expected 'normal')"),
    ("hidden edited", "network hidden 8 (expected 16)"),
    ("negative step", "its step -50 is outside 0..10"),
    ("step past the end", "its step 11 is outside 0..10"),
    ("best.pt of another run", "best.pt belongs to another run"),
    ("averaged.pt of another model", "averaged.pt holds another model"),
    ("config without a dataset", "names no dataset"),
    ("config that is a list", "holds a JSON list"),
    ("config of another kind", "not a run of pyro-lvae train"),
])
def test_a_resume_refuses_a_checkpoint_that_is_not_the_run_s(runs, run, capsys, damage,
                                                             message):
    c = config(run)
    if damage == "low-rank checkpoint":
        shutil.copy(runs / "low" / CHECKPOINT_NAME, run / CHECKPOINT_NAME)
    elif damage == "twin's checkpoint":
        shutil.copy(runs / "twin" / CHECKPOINT_NAME, run / CHECKPOINT_NAME)
    elif damage == "unmarked low-rank checkpoint":
        blob = torch.load(runs / "low" / CHECKPOINT_NAME, weights_only=True)
        del blob["run"]
        torch.save(blob, run / CHECKPOINT_NAME)
    elif damage.startswith("observation edited"):
        c["obs"] = "nope" if damage == "observation edited" else "fixed"
    elif damage == "prior edited":
        c["prior"] = {"kind": "normal"}
    elif damage == "hidden edited":
        c["hidden"] = 16
    elif damage == "negative step":
        _poke(run / CHECKPOINT_NAME, step=-50)
    elif damage == "step past the end":
        _poke(run / CHECKPOINT_NAME, step=11)
    elif damage == "best.pt of another run":
        shutil.copy(runs / "twin" / BEST_NAME, run / BEST_NAME)
    elif damage == "averaged.pt of another model":
        lv.load(runs / "low" / CHECKPOINT_NAME).save(run / "averaged.pt")
    elif damage == "config without a dataset":
        del c["dataset"]
    elif damage == "config that is a list":
        c = [1, 2]
    elif damage == "config of another kind":
        c["kind"] = "tabular"
    (run / "config.json").write_text(json.dumps(c))
    refused(["train", "--resume", run, "--steps", "20", "--quiet"], capsys, run, message)


# ---- 5. a truncated best.pt ---------------------------------------------------------------------

def test_a_truncated_best_model_is_refused_and_then_chosen_again(run, capsys):
    data = (run / BEST_NAME).read_bytes()
    (run / BEST_NAME).write_bytes(data[: len(data) // 3])
    refused(["train", "--resume", run, "--steps", "20", "--quiet"], capsys, run,
            "best.pt: the file is corrupt or truncated")
    (run / BEST_NAME).unlink()  # as the message says: move it away
    assert main(["train", "--resume", str(run), "--steps", "20", "--quiet"]) == 0
    best = json.loads((run / "summary.json").read_text())["best"]
    assert best["step"] >= 10  # chosen among the evaluations after the resume
    assert lv.load(run / BEST_NAME) is not None
    assert identity(run / BEST_NAME)["id"] == config(run)["run_id"]


def test_python_resume_refuses_a_truncated_best_model(tmp_path):
    val = lv.datasets.manifold2d(50, torch.Generator().manual_seed(3))
    tools = [lv.training.HeldOutEvaluation(val, every=2)]
    lv.fit(tiny(), lv.datasets.manifold2d, steps=4, seed=0, out=tmp_path, tools=tools)
    data = (tmp_path / BEST_NAME).read_bytes()
    (tmp_path / BEST_NAME).write_bytes(data[:200])
    before = folder_digest(tmp_path)
    with pytest.raises(lv.CheckpointError, match="best.pt.*corrupt or truncated"):
        lv.fit(lv.load(tmp_path / CHECKPOINT_NAME), lv.datasets.manifold2d, steps=8, seed=0,
               out=tmp_path, resume=True,
               tools=[lv.training.HeldOutEvaluation(val, every=2)])
    assert folder_digest(tmp_path) == before


# ---- 6. fit(out=<an existing run>) -------------------------------------------------------------

def test_fit_refuses_to_overwrite_a_run_without_resume(tmp_path):
    lv.fit(tiny(), lv.datasets.manifold2d, steps=3, seed=0, out=tmp_path)
    before = folder_digest(tmp_path)
    with pytest.raises(lv.ConfigError, match="already holds a run.*resume=True.*another"):
        lv.fit(tiny(), lv.datasets.manifold2d, steps=3, seed=0, out=tmp_path)
    assert folder_digest(tmp_path) == before


@pytest.mark.parametrize("resume, message", [(False, "already holds a run"),
                                             (True, "pyro-lvae train --resume")])
def test_fit_refuses_a_command_s_run_folder(run, resume, message):
    before = folder_digest(run)
    vae = lv.load(run / CHECKPOINT_NAME)
    with pytest.raises(lv.ConfigError, match=message):
        lv.fit(vae, lv.datasets.manifold2d, steps=20, out=run, resume=resume)
    assert folder_digest(run) == before


def test_tabular_model_fit_refuses_a_folder_holding_a_model(runs, tmp_path):
    import pandas as pd

    tab = shutil.copytree(runs / "tab", tmp_path / "tab")
    before = folder_digest(tab)
    with pytest.raises(lv.ConfigError, match="already holds a model"):
        lv.tabular.TabularModel.fit(pd.read_csv(runs / "t.csv"), steps=3, hidden=8, blocks=1,
                                    out=tab)
    assert folder_digest(tab) == before


def test_python_resume_refuses_a_model_of_another_configuration(tmp_path):
    lv.fit(tiny(), lv.datasets.manifold2d, steps=3, seed=0, out=tmp_path)
    before = folder_digest(tmp_path)
    with pytest.raises(lv.CheckpointError, match="observation 'learned-scalar'"):
        lv.fit(tiny(lv.LearnedVectorScale()), lv.datasets.manifold2d, steps=6, out=tmp_path,
               resume=True)
    assert folder_digest(tmp_path) == before


# ---- folders of the previous version ------------------------------------------------------------

def _unmark(folder):
    c = config(folder)
    for key in ("format", "kind", "run_id"):
        del c[key]
    (folder / "config.json").write_text(json.dumps(c, indent=2))
    for name in (CHECKPOINT_NAME, BEST_NAME):
        blob = torch.load(folder / name, weights_only=True)
        del blob["run"]
        torch.save(blob, folder / name)


def test_a_run_of_the_previous_version_resumes_and_is_marked_once_it_succeeded(run, capsys):
    _unmark(run)
    refused(["train", "--resume", run, "--steps", "20", "--device", "tpu", "--quiet"], capsys,
            run, "unknown device")
    assert "format" not in config(run)  # a refused resume adds no mark
    assert main(["train", "--resume", str(run), "--steps", "20", "--quiet"]) == 0
    c = config(run)
    assert (c["format"], c["kind"], c["steps"]) == ("pyro-lvae-run", "train", 20)
    assert identity(run / CHECKPOINT_NAME) == {"kind": "train", "id": c["run_id"]}
    assert main(["train", "--resume", str(run), "--steps", "25", "--quiet"]) == 0


# ---- command-line cases -------------------------------------------------------------------------

def test_a_negative_seed_is_refused_by_name(tmp_path, capsys):
    code, err = run_cli(["train", "--seed", "-1", "--steps", "5", "--out", tmp_path / "r",
                         *TINY], capsys)
    assert code == 2 and "argument --seed: expected a whole number from 0 to 4294967295" in err
    assert "Traceback" not in err and not (tmp_path / "r").exists()


def test_resume_of_a_file_names_the_folder_to_give(run, capsys):
    refused(["train", "--resume", run / CHECKPOINT_NAME, "--steps", "20", "--quiet"], capsys,
            run, f"is a file; give --resume {run}")


def test_tensorboard_at_an_existing_file_is_refused(run, tmp_path, capsys):
    log = tmp_path / "log"
    log.write_text("mine")
    refused(["train", "--out", tmp_path / "new", "--steps", "5", "--tensorboard", log, *TINY],
            capsys, None, "--tensorboard")
    assert not (tmp_path / "new").exists() and log.read_text() == "mine"
    refused(["train", "--resume", run, "--steps", "20", "--tensorboard", log, "--quiet"],
            capsys, run, "is a file; give a folder")


def test_resume_accepts_the_run_s_own_prior_and_averaging_flags(run, capsys):
    assert main(["train", "--resume", str(run), "--steps", "12", "--prior", "mixture",
                 "--prior-components", "3", "--average", "ema", "--eval-every", "5",
                 "--quiet"]) == 0
    assert main(["train", "--resume", str(run), "--steps", "14", "--average",
                 "ema:0.999:0:1", "--quiet"]) == 0
    for flags in (["--prior-components", "4"], ["--average", "swa"], ["--prior", "vamp"]):
        refused(["train", "--resume", run, "--steps", "16", *flags, "--quiet"], capsys, run,
                "not the run's own")


def test_resume_accepts_the_run_s_own_geco_flags(tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["train", "--out", str(out), "--steps", "4", "--geco", "3", "--geco-rate",
                 "0.05", *TINY]) == 0
    assert main(["train", "--resume", str(out), "--steps", "6", "--geco", "3", "--geco-rate",
                 "0.05", "--quiet"]) == 0
    refused(["train", "--resume", out, "--steps", "8", "--geco-rate", "0.5", "--quiet"],
            capsys, out, "not the run's own")


def test_geco_rate_without_geco_is_refused(tmp_path, capsys):
    refused(["train", "--out", tmp_path / "r", "--steps", "5", "--geco-rate", "0.5", *TINY],
            capsys, None, "--geco-rate")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", [["train", "--steps", "5", *TINY],
                                     ["tabular", "fit", "{csv}", "--steps", "5", *TINY]])
def test_a_folder_named_dash_is_refused(runs, tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    argv = [str(runs / "t.csv") if a == "{csv}" else a for a in command] + ["--out", "-"]
    refused(argv, capsys, None, "folder named '-'")
    assert not (tmp_path / "-").exists()
