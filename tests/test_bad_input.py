"""The bad-input catalogue: every user mistake gets a clear error, and nothing saved is lost.

Python API cases assert the error class and a message that names the problem. Command-line
cases assert exit status 2, one line on stderr naming the problem, no traceback, and that an
existing run folder is byte-for-byte unchanged afterwards.
"""

import json
import pickle

import numpy as np
import pytest
import torch
from helpers import folder_digest
from pyro.infer import Trace_ELBO

import pyro_lvae as lv
from pyro_lvae import evaluate, theory
from pyro_lvae.cli import main
from pyro_lvae.training import Checks


def tiny(obs=None):
    return lv.mlp_vae(2, 2, obs or lv.LearnedScalarScale(), hidden=8, blocks=1)


def good():
    return lv.datasets.manifold2d(50, torch.Generator().manual_seed(1))


class _Exploit:
    def __reduce__(self):
        return (print, ("code ran",))


API_CASES = {
    "nan data": (lambda: lv.fit(tiny(), torch.full((10, 2), float("nan")), steps=2),
                 lv.DataError, "NaN"),
    "inf data": (lambda: lv.fit(tiny(), torch.tensor([[float("inf"), 0.0]] * 4), steps=2),
                 lv.DataError, "infinite"),
    "wrong feature count": (lambda: lv.fit(tiny(), torch.randn(10, 3), steps=2),
                            lv.DataError, r"shape \(batch, 2\)"),
    "missing batch axis": (lambda: lv.fit(tiny(), torch.randn(10), steps=2),
                           lv.DataError, "one batch axis"),
    "empty data": (lambda: lv.fit(tiny(), torch.zeros(0, 2), steps=2), lv.DataError, "empty"),
    "integer numpy data": (lambda: lv.fit(tiny(), np.zeros((5, 2), dtype=int), steps=2),
                           lv.DataError, "astype"),
    "file name as data": (lambda: lv.fit(tiny(), "data.csv", steps=2), lv.DataError,
                          "load it first"),
    "float64 data to the model": (lambda: tiny().model(torch.zeros(3, 2, dtype=torch.float64)),
                                  lv.DataError, "float64"),
    "list as data": (lambda: tiny().guide([[0.0, 1.0]]), lv.DataError, "torch.Tensor"),
    "zero fixed scale": (lambda: lv.FixedScale(0.0), lv.ConfigError, "scale > 0"),
    "negative fixed scale": (lambda: lv.FixedScale(-1.0), lv.ConfigError, "scale > 0"),
    "zero floor": (lambda: lv.LearnedScalarScale(min_scale=0.0), lv.ConfigError, "min_scale"),
    "negative floor": (lambda: lv.LearnedVectorScale(min_scale=-1e-3), lv.ConfigError,
                       "min_scale"),
    "floor above the initial scale": (lambda: lv.LearnedScalarScale(init_scale=1.0, min_scale=2.0),
                                      lv.ConfigError, "init_scale > min_scale"),
    "schedule with a zero": (lambda: lv.ScheduledScale([1.0, 0.0]), lv.ConfigError, "positive"),
    "negative beta": (lambda: lv.weight_latents(-0.5), lv.ConfigError, "beta >= 0"),
    "unknown beta schedule": (lambda: lv.parse_schedule("warmup:10"), lv.ConfigError,
                              "unknown beta schedule"),
    "zero latent dimension": (lambda: lv.mlp_vae(2, 0, lv.FixedScale(1.0)), lv.ConfigError,
                              "latent_dim"),
    "variant name instead of a model": (lambda: lv.mlp_vae(2, 2, "learned-vector"),
                                        lv.ConfigError, "observation model"),
    "zero steps": (lambda: lv.fit(tiny(), good(), steps=0), lv.ConfigError, "steps"),
    "negative learning rate": (lambda: lv.fit(tiny(), good(), steps=2, lr=-1.0),
                               lv.ConfigError, "lr > 0"),
    "unknown device": (lambda: lv.fit(tiny(), good(), steps=2, device="tpu"), lv.ConfigError,
                       "unknown device"),
    "unknown divergence policy": (lambda: lv.fit(tiny(), good(), steps=2,
                                                 tools=[Checks(on_divergence="x")]),
                                  lv.ConfigError, "on_divergence"),
    "unknown query mode": (lambda: tiny().reconstruct(good(), mode="median"), lv.ConfigError,
                           "mode"),
    "zero importance samples": (lambda: evaluate.iwae(tiny(), good(), num_samples=0),
                                lv.ConfigError, "num_samples"),
    "negative sigma for the theory": (lambda: theory.optimal_radius(-1.0), lv.ConfigError,
                                      "sigma > 0"),
    "F* from a fixed-sigma model": (lambda: lv.fixed_star(tiny(lv.FixedScale(1.0))),
                                    lv.ConfigError, "LS-VAE"),
    "loader yielding text": (lambda: lv.fit(tiny(), {"x": 1}, steps=2), lv.DataError,
                             "yielded a str"),
    "negative beta for fit": (lambda: lv.fit(tiny(), good(), steps=2, beta=-1.0),
                              lv.ConfigError, "beta >= 0"),
    "resume without a folder": (lambda: lv.fit(tiny(), good(), steps=2, resume=True),
                                lv.ConfigError, "out="),
    "negative block count": (lambda: lv.mlp_vae(2, 2, lv.FixedScale(1.0), blocks=-1),
                             lv.ConfigError, "blocks"),
    "grey levels for a Bernoulli model": (
        lambda: lv.fit(lv.mlp_vae(2, 2, lv.BernoulliObservation(), hidden=8, blocks=1),
                       torch.rand(20, 2), steps=2), lv.DataError, "binary"),
    "data outside [0, 1] for a continuous Bernoulli model": (
        lambda: lv.fit(lv.mlp_vae(2, 2, lv.ContinuousBernoulliObservation(), hidden=8,
                                  blocks=1), torch.randn(20, 2), steps=2),
        lv.DataError, r"\[0, 1\]"),
    "NaN through Trace_ELBO": (lambda: Trace_ELBO().loss(tiny().model, tiny().guide,
                                                         torch.tensor([[float("nan"), 0.0]])),
                               lv.DataError, "NaN"),
}


@pytest.mark.parametrize("case", list(API_CASES))
def test_api_bad_input(case):
    call, error, message = API_CASES[case]
    with pytest.raises(error, match=message):
        call()


def _bytes(path, data):
    path.write_bytes(data)
    return path


def _saved(path, obj):
    torch.save(obj, path)
    return path


FILE_CASES = {
    "missing file": (lambda d: d / "none.pt", "no such file"),
    "a folder": (lambda d: d, "is a folder"),
    "empty file": (lambda d: _bytes(d / "e.pt", b""), "corrupt or truncated"),
    "text file": (lambda d: _bytes(d / "t.pt", b"hello"), "corrupt or truncated"),
    "truncated checkpoint": (lambda d: _truncated(d), "corrupt or truncated"),
    "torch file of something else": (lambda d: _saved(d / "o.pt", {"w": torch.zeros(1)}),
                                     "not a pyro-lvae model"),
    "pickle crafted to run code": (lambda d: _saved(d / "p.pt", {"format": "pyro-lvae-model",
                                                                 "x": _Exploit()}),
                                   "pickled code"),
}


def _truncated(folder):
    tiny().save(folder / "m.pt")
    data = (folder / "m.pt").read_bytes()
    (folder / "m.pt").write_bytes(data[: len(data) // 3])
    return folder / "m.pt"


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_bad_files_are_refused(case, tmp_path, capsys):
    make, message = FILE_CASES[case]
    path = make(tmp_path)
    with pytest.raises(lv.CheckpointError, match=message):
        lv.load(path)
    assert "code ran" not in capsys.readouterr().out


def test_checkpoint_of_another_configuration(tmp_path):
    tiny().save(tmp_path / "a.pt")
    other = lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=16, blocks=1)
    with pytest.raises(lv.CheckpointError, match="different configuration"):
        other.load_state(tmp_path / "a.pt")




@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--steps", "5", "--hidden", "8", "--blocks", "1", "--quiet",
                 "--out", str(run)]) == 0
    return run


def _history_csv(folder, text):
    path = folder / "h.csv"
    path.write_text(text)
    return str(path)


CLI_CASES = {
    "unknown variant": (["train", "--obs", "gaussian"], "invalid choice"),
    "negative sigma": (["train", "--obs", "fixed", "--sigma", "-1", "--out", "{new}"],
                       "scale > 0"),
    "zero floor": (["train", "--obs", "learned-vector", "--min-scale", "0", "--out", "{new}"],
                   "min_scale > 0"),
    "replay without a trajectory": (["train", "--obs", "scheduled", "--out", "{new}"],
                                    "needs --sigma-from"),
    "missing history": (["train", "--obs", "fixed", "--sigma-from", "{tmp}/none.csv", "--out",
                         "{new}"], "cannot read history"),
    "empty history CSV": (["train", "--obs", "fixed", "--sigma-from", "{csv:}", "--out",
                           "{new}"], "not a pyro-lvae history"),
    "history CSV with other columns": (["train", "--obs", "fixed", "--sigma-from",
                                        "{csv:a,b\n1,2\n}", "--out", "{new}"],
                                       "not a pyro-lvae history"),
    "history CSV with text for numbers": (
        ["train", "--obs", "scheduled", "--sigma-from",
         "{csv:step,loss,reconstruction,kl,beta,sigma,sigma_min,sigma_max\n0,1,1,1,1,x,1,1\n}",
         "--out", "{new}"], "non-numeric"),
    "unknown beta schedule": (["train", "--beta-schedule", "warm", "--out", "{new}"],
                              "unknown beta schedule"),
    "unknown data set": (["train", "--dataset", "cifar", "--out", "{new}"], "unknown dataset"),
    "unknown device": (["train", "--device", "tpu", "--out", "{new}"], "unknown device"),
    "zero steps": (["train", "--steps", "0", "--out", "{new}"], "steps"),
    "no output folder": (["train", "--steps", "5"], "--out DIR"),
    "zero latent dimension": (["train", "--latent-dim", "0", "--out", "{new}"],
                              "--latent-dim >= 1"),
    "zero epochs": (["train", "--dataset", "fashion-mnist", "--epochs", "0", "--out", "{new}"],
                    "--epochs >= 1"),
    "overwriting a run": (["train", "--steps", "3", "--out", "{run}"], "already holds a run"),
    "resume of a folder that is no run": (["train", "--resume", "{tmp}"], "no config.json"),
    "empty CSV table": (["tabular", "fit", "{csv:}", "--out", "{new}"], "is empty"),
    "CSV table with a header only": (["tabular", "fit", "{csv:a,b\n}", "--out", "{new}"],
                                     "no rows"),
    "CSV table with missing values": (["tabular", "fit", "{csv:a,b\n1,x\n,y\n}", "--out",
                                       "{new}"], "missing values in a (1)"),
    "sampling from a folder without a model": (["tabular", "sample", "{tmp}", "-n", "5", "-o",
                                                "{tmp}/s.csv"], "transform.json"),
    "bad study dimensions": (["reproduce", "sphere", "--dims", "2,x", "--out", "{new}"],
                             "--dims"),
    "negative radius": (["theory", "--radius", "-1", "--out", "{new}"], "radius"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_bad_input(case, run_folder, tmp_path, capsys):
    argv, message = CLI_CASES[case]
    before = folder_digest(run_folder)

    def fill(a):
        if a.startswith("{csv:"):
            return _history_csv(tmp_path, a[5:-1])
        return (a.replace("{new}", str(tmp_path / "new")).replace("{tmp}", str(tmp_path))
                .replace("{run}", str(run_folder)))

    try:
        code = main([fill(a) for a in argv] + ["--quiet"] * (argv[0] == "train"))
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    if "invalid choice" not in err:
        assert err.startswith("pyro-lvae: error:") and err.count("\n") == 1
    assert folder_digest(run_folder) == before


def test_cli_resume_of_a_corrupt_checkpoint_loses_nothing(tmp_path, capsys):
    run = tmp_path / "r"
    main(["train", "--steps", "3", "--hidden", "8", "--blocks", "1", "--quiet", "--out", str(run)])
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[:100])
    before = folder_digest(run)
    assert main(["train", "--resume", str(run), "--steps", "6", "--quiet"]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err
    assert folder_digest(run) == before


def test_cli_resume_with_a_corrupt_config(tmp_path, capsys):
    run = tmp_path / "r"
    main(["train", "--steps", "3", "--hidden", "8", "--blocks", "1", "--quiet", "--out", str(run)])
    (run / "config.json").write_text("{not json")
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    assert "config.json is corrupt" in capsys.readouterr().err


def test_the_catalogue_is_long_enough():
    assert len(API_CASES) + len(FILE_CASES) + len(CLI_CASES) >= 25
    json.dumps(list(CLI_CASES))  # names are plain strings
    pickle.dumps(list(API_CASES))
