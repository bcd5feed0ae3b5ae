"""The pyro-lvae command: train, resume, demo, and one-line errors."""

import json
import subprocess
import sys

import pytest
from helpers import folder_digest

import pyro_lvae as lv
from pyro_lvae.cli import build_parser, collapse_note, main
from pyro_lvae.training.fit import History

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


def test_resume_refuses_flags_it_would_ignore_and_keeps_new_totals(tmp_path, capsys):
    run = tmp_path / "ls"
    assert main(["train", "--steps", "20", "--out", str(run), *TINY]) == 0
    config = (run / "config.json").read_text()
    # a changed setting (even as argparse's prefix) is an error, not silently the old value
    for extra, named in ((["--lr", "1e-2"], "--lr would"), (["--beta-s=0.5"], "--beta-schedule"),
                         (["--obs", "fixed", "--seed", "3"], "--obs, --seed would")):
        assert main(["train", "--resume", str(run), "--steps", "30", *extra]) == 2
        err = capsys.readouterr().err
        assert "would be ignored" in err and named in err and "--out" in err
    assert (run / "config.json").read_text() == config
    # the command that started the run may be given again: its settings are the run's own
    assert main(["train", "--resume", str(run), "--steps", "20", "--hidden", "8", "--obs",
                 "learned-scalar", "--quiet"]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    assert "--epochs is for image runs" in capsys.readouterr().err
    assert len(History.from_csv(run / "history.csv")) == 20
    # the new total is saved: resuming again without --steps keeps it
    assert main(["train", "--resume", str(run), "--steps", "30", "--quiet"]) == 0
    assert json.loads((run / "config.json").read_text())["steps"] == 30
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert len(History.from_csv(run / "history.csv")) == 30


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


def test_a_learned_sigma_starts_at_half_the_data_spread_unless_given(tmp_path, capsys):
    def start(name, *extra):
        assert main(["train", "--steps", "1", "--out", str(tmp_path / name), *TINY[:-1],
                     *extra]) == 0
        return json.loads((tmp_path / name / "config.json").read_text())

    # manifold2d's coordinates have a root-mean-square spread of about 0.97
    config = start("ls")
    assert config["observation"]["init_scale"] == pytest.approx(0.484, abs=0.01)
    assert config["sigma_start"] == "half the training data's spread"
    assert "starts at 0.48" in capsys.readouterr().out
    lv_config = start("lv", "--obs", "learned-vector")
    assert lv_config["observation"]["init_scale"] == config["observation"]["init_scale"]
    assert "beta_nll" not in lv_config["observation"]  # no --beta-nll: the ELBO's gradient
    given = start("given", "--sigma", "1")
    assert given["observation"]["init_scale"] == 1.0 and "sigma_start" not in given
    assert start("fixed", "--obs", "fixed")["observation"]["scale"] == 1.0
    # a floor above the data-scaled start: refused, naming both ways out, nothing written
    assert main(["train", "--steps", "1", "--min-scale", "0.6", "--out", str(tmp_path / "bad"),
                 *TINY]) == 2
    err = capsys.readouterr().err
    assert "--min-scale" in err and "--sigma" in err and not (tmp_path / "bad").exists()


def test_beta_nll_reaches_the_model_is_saved_and_resumes(tmp_path, capsys):
    run = tmp_path / "lv"
    assert main(["train", "--obs", "learned-vector", "--beta-nll", "0.5", "--steps", "6",
                 "--checkpoint-every", "3", "--out", str(run), *TINY]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["observation"]["kind"] == "learned-vector"
    assert config["observation"]["beta_nll"] == 0.5
    model = lv.load(run / "checkpoint.pt")
    assert isinstance(model.observation, lv.LearnedVectorScale)
    assert model.observation.beta_nll == 0.5
    # the resume rebuilds the same model; the run's own --beta-nll may be given again
    assert main(["train", "--resume", str(run), "--steps", "9", "--quiet"]) == 0
    assert main(["train", "--resume", str(run), "--steps", "12", "--obs", "learned-vector",
                 "--beta-nll", "0.5", "--quiet"]) == 0
    assert len(History.from_csv(run / "history.csv")) == 12
    assert lv.load(run / "checkpoint.pt").observation.beta_nll == 0.5
    # another value would be ignored: refused, the folder left as it was
    before = folder_digest(run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--steps", "15", "--beta-nll", "0.25"]) == 2
    err = capsys.readouterr().err
    assert "--beta-nll would be ignored" in err
    assert folder_digest(run) == before


@pytest.mark.parametrize("obs", ["learned-scalar", "fixed", "negative-binomial"])
def test_beta_nll_with_another_observation_model_is_refused(obs, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--obs", obs, "--beta-nll", "0.5", "--steps", "2", "--out", str(out),
                 *TINY]) == 2
    err = capsys.readouterr().err
    assert err == (f"pyro-lvae: error: --beta-nll applies to --obs learned-vector (a sigma per "
                   f"dimension from the decoder), not --obs {obs}\n")
    assert not out.exists()


@pytest.mark.parametrize("value", ["1.5", "nan", "-0.1", "inf", "half"])
def test_beta_nll_outside_0_to_1_is_refused(value, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--obs", "learned-vector", "--beta-nll", value, "--out", str(out),
              *TINY])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --beta-nll: expected a number from 0 to 1, got '{value}'" in err
    assert "Traceback" not in err and not out.exists()


def test_beta_nll_takes_the_ends_of_0_to_1():
    parser = build_parser()
    for text, value in (("0", 0.0), ("1", 1.0), ("0.5", 0.5), ("1e-1", 0.1)):
        assert parser.parse_args(["train", "--beta-nll", text]).beta_nll == value
    assert parser.parse_args(["train"]).beta_nll is None


def test_demo_writes_table_and_figures(tmp_path, capsys):
    assert main(["demo", "--steps", "20", "--out", str(tmp_path), *TINY]) == 0
    table = (tmp_path / "results.md").read_text()
    for variant in ("F-VAE sigma=1", "F-VAE sigma=0.05", "LS-VAE", "LV-VAE"):
        assert f"| {variant} |" in table
    for name in ("overview.png", "training.png", "ls-vae.png", "lv-vae.png",
                 "ls-vae-history.csv"):
        assert (tmp_path / name).exists(), name
    assert "| LV-VAE |" in capsys.readouterr().out


def test_console_script_unknown_variant_exits_2_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "pyro_lvae.cli", "train", "--obs", "gaussian"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "invalid choice: 'gaussian'" in proc.stderr and "Traceback" not in proc.stderr


def test_collapse_note_names_the_remedy_per_observation_model():
    assert collapse_note("learned-scalar", {"kl": 1.2}) is None
    assert collapse_note("learned-scalar", {"kl": float("nan")}) is None
    learned = collapse_note("learned-scalar", {"kl": 0.01})
    assert "collapsed" in learned and "--sigma" in learned and "half the data's spread" in learned
    assert "smaller --sigma" in collapse_note("fixed", {"kl": 0.0})
    assert "warm-up" in collapse_note("bernoulli", {"kl_nats": 0.05})


def test_train_warns_when_the_model_ends_collapsed(tmp_path, capsys):
    # sigma = 20, far above the curve's critical scale: the decoder learns to ignore z
    assert main(["train", "--obs", "fixed", "--sigma", "20", "--steps", "300",
                 "--out", str(tmp_path / "big"), *TINY]) == 0
    summary = json.loads((tmp_path / "big" / "summary.json").read_text())
    assert summary["kl"] < 0.1
    assert "warning: the model ended collapsed" in capsys.readouterr().err
    main(["train", "--obs", "fixed", "--sigma", "0.1", "--steps", "300",
          "--out", str(tmp_path / "small"), *TINY])
    assert "collapsed" not in capsys.readouterr().err
