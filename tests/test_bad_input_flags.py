"""Bad input in flags and settings: non-finite spec arguments, numpy integers, worker counts, and
warm-ups longer than the run.

API cases assert the error class and a message that names the problem; command-line cases
assert exit status 2, one line on stderr naming the problem, no traceback, and that an existing
run folder is byte-for-byte unchanged (tests/test_bad_input.py's conventions).
"""

import logging

import numpy as np
import pyro
import pytest
import torch
from helpers import folder_digest

import pyro_lvae as lv
from pyro_lvae.annealing import BETA_SCHEDULES
from pyro_lvae.cli import main
from pyro_lvae.datasets.images import PIXEL_TRANSFORMS
from pyro_lvae.errors import check_int, check_positive, check_positive_int
from pyro_lvae.experiments.jobs import run_jobs
from pyro_lvae.observations.base import OBSERVATIONS
from pyro_lvae.observations.table import SIGMA_MODES
from pyro_lvae.priors import PRIORS
from pyro_lvae.training.averaging import AVERAGES, AveragedWeights, WeightAverage
from pyro_lvae.training.heldout import HeldOutEvaluation
from pyro_lvae.training.schedules import LR_SCHEDULES, CosineDecay, LRSchedule, StepDecay
from pyro_lvae.training.tools import Checkpoints, Checks, ProgressBar

REGISTRIES = {"observations": OBSERVATIONS, "priors": PRIORS, "beta schedules": BETA_SCHEDULES,
              "learning-rate schedules": LR_SCHEDULES, "weight averaging": AVERAGES,
              "sigma modes": SIGMA_MODES, "pixel transforms": PIXEL_TRANSFORMS}
NON_FINITE = ("nan", "inf", "-inf", "NaN", "1e400")


def tiny():
    return lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=8, blocks=1)


def data():
    return lv.datasets.manifold2d(60, torch.Generator().manual_seed(1))


def quiet(*tools):
    return [ProgressBar(False), *tools]


# ---- nan and inf in a spec's arguments ------------------------------------------------------
@pytest.mark.parametrize("kind", list(REGISTRIES))
def test_every_registry_refuses_a_non_finite_argument_by_its_name(kind):
    registry = REGISTRIES[kind]
    tried = 0
    for name in registry.names():
        params = registry.parameters(name)
        for i, param in enumerate(params):
            if isinstance(param.default, str):
                continue  # a text argument
            for value in NON_FINITE:
                text = ":".join([name] + [value if j == i else "" for j in range(len(params))])
                with pytest.raises(lv.ConfigError, match="non-finite argument") as error:
                    registry.parse(text)
                assert repr(value) in str(error.value) and param.name.upper() in str(error.value)
                assert registry.form(name) in str(error.value)
                tried += 1
    assert tried >= len(NON_FINITE)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", " NaN ", "1e400"])
def test_a_non_finite_bare_number_is_not_a_constant_beta(text):
    with pytest.raises(lv.ConfigError, match="not a finite number"):
        lv.parse_schedule(text)


@pytest.mark.parametrize("make", [
    lambda: LRSchedule("step:nan"), lambda: LRSchedule("step:inf"),
    lambda: LRSchedule("step:1e400"), lambda: lv.parse_schedule("linear:nan"),
    lambda: lv.parse_schedule("cyclical:inf"), lambda: lv.parse_schedule("sigmoid:10:inf"),
], ids=["step:nan", "step:inf", "step:1e400", "linear:nan", "cyclical:inf", "sigmoid:10:inf"])
def test_the_reported_specs_are_config_errors(make):
    with pytest.raises(lv.ConfigError, match="non-finite argument"):
        make()


@pytest.mark.parametrize("make, message", [
    (lambda: StepDecay(float("nan")), "EVERY=nan"),
    (lambda: StepDecay(float("inf")), "EVERY=inf"),
    (lambda: StepDecay(True), "EVERY to be a number"),
    (lambda: CosineDecay(True), "FINAL of cosine"),
    (lambda: lv.LinearWarmup(float("nan")), "steps to be an integer"),
    (lambda: lv.LinearWarmup(float("inf")), "steps to be an integer"),
    (lambda: lv.LinearWarmup(True), "steps to be an integer"),
    (lambda: lv.SigmoidWarmup(float("nan")), "midpoint to be an integer"),
    (lambda: lv.SigmoidWarmup(10, float("inf")), r"width > 0 \(and finite\)"),
    (lambda: lv.CyclicalWarmup(float("inf")), "period to be an integer"),
    (lambda: lv.CyclicalWarmup(10, "x"), "ramp to be a number"),
    (lambda: lv.ConstantBeta("x"), "beta to be a number"),
], ids=["StepDecay nan", "StepDecay inf", "StepDecay True", "CosineDecay True",
        "LinearWarmup nan", "LinearWarmup inf", "LinearWarmup True", "SigmoidWarmup nan",
        "SigmoidWarmup width inf", "CyclicalWarmup inf", "CyclicalWarmup ramp text",
        "ConstantBeta text"])
def test_schedule_objects_refuse_non_finite_and_non_numbers(make, message):
    with pytest.raises(lv.ConfigError, match=message):
        make()


def test_a_constant_beta_given_as_text_or_numpy_is_a_float():
    assert lv.ConstantBeta("0.5").spec() == "constant:0.5"
    assert type(lv.ConstantBeta(np.float32(0.5)).value) is float
    history = lv.fit(tiny(), data(), steps=2, batch_size=10, beta="0.5", tools=quiet())
    np.testing.assert_array_equal(history["beta"], [0.5, 0.5])


def test_schedules_keep_plain_numbers_for_integral_floats():
    assert lv.LinearWarmup(1e3) == lv.LinearWarmup(1000)
    assert type(lv.LinearWarmup(np.int64(10)).steps) is int
    assert lv.parse_schedule("linear:1e3:0.5").spec() == "linear:1000:0.5:1"


# ---- numpy integers wherever an integer is asked ---------------------------------------------
@pytest.mark.parametrize("value", [5, np.int64(5), np.int32(5), np.uint8(5), torch.tensor(5),
                                   np.array(5)],
                         ids=["int", "np.int64", "np.int32", "np.uint8", "0-d tensor",
                              "0-d array"])
def test_an_integer_of_any_kind_is_taken_as_a_python_int(value):
    got = check_positive_int("steps", value)
    assert got == 5 and type(got) is int
    assert check_int("start", value, 0, 10) == 5


@pytest.mark.parametrize("value", [True, np.bool_(True), torch.tensor(True), 5.0,
                                   np.float64(5.0), torch.tensor(5.0), torch.tensor([5]),
                                   np.array([5]), "5", None, 0, np.int64(0), -3],
                         ids=["True", "np.bool_", "bool tensor", "5.0", "np.float64",
                              "float tensor", "1-d tensor", "1-d array", "text", "None", "0",
                              "np.int64(0)", "-3"])
def test_booleans_floats_and_non_positive_integers_are_refused(value):
    with pytest.raises(lv.ConfigError, match="Expected steps to be an integer >= 1"):
        check_positive_int("steps", value)


def _train(out, steps, n, resume=False):
    """A run whose every count is ``n(count)``."""
    pyro.set_rng_seed(3)  # the initial weights
    vae = lv.mlp_vae(n(2), n(2), lv.LearnedScalarScale(), hidden=n(8), blocks=n(1),
                     prior=lv.MixturePrior(n(2)))
    tools = quiet(Checks(n(1)), Checkpoints(n(2)), LRSchedule(None, warmup=n(1)),
                  AveragedWeights(WeightAverage("ema", 0.9, n(0), n(1))),
                  HeldOutEvaluation(data()[:10], every=n(2)))
    return lv.fit(vae, data(), steps=n(steps), batch_size=n(10), seed=n(0), out=out,
                  resume=resume, tools=tools), vae


def test_fit_with_numpy_integers_is_the_run_with_python_ints_and_resumes(tmp_path):
    runs = {}
    for n in (np.int64, int):
        _train(tmp_path / n.__name__, 3, n)
        runs[n] = _train(tmp_path / n.__name__, 5, n, resume=True)
    history, vae = runs[np.int64]
    assert len(history) == 5
    np.testing.assert_array_equal(history["loss"], runs[int][0]["loss"])
    assert lv.load(tmp_path / "int64" / "checkpoint.pt").latent_dim == 2
    vae.save(tmp_path / "m.pt")
    again = lv.load(tmp_path / "m.pt")
    assert type(again.latent_dim) is int and again.latent_dim == 2


def test_numpy_integers_for_the_networks_evaluation_and_samples():
    vae = lv.mlp_vae(np.int64(2), np.int64(2), lv.FixedScale(1.0), hidden=np.int64(8),
                     blocks=np.int64(1))
    vae.initialize(data())
    assert vae.sample(np.int64(3)).shape == (3, 2)
    assert np.isfinite(lv.evaluate.iwae(vae, data(), num_samples=np.int64(2),
                                        batch_size=np.int64(25)))
    assert lv.datasets.manifold2d(np.int64(4)).shape == (4, 2)
    assert lv.DirectELBO(np.int64(2)).num_particles == 2


@pytest.mark.parametrize("seed", [-1, 2**32, True, 1.5, "3"])
def test_a_seed_outside_numpys_range_is_refused_by_name(seed):
    with pytest.raises(lv.ConfigError, match=r"seed to be an integer in \[0, 4294967295\]"):
        lv.fit(tiny(), data(), steps=2, batch_size=10, seed=seed, tools=quiet())


def test_a_numpy_seed_is_the_python_seed():
    a = lv.fit(tiny(), data(), steps=3, batch_size=10, seed=np.int64(7), tools=quiet())
    b = lv.fit(tiny(), data(), steps=3, batch_size=10, seed=7, tools=quiet())
    assert len(a) == len(b) == 3


def test_a_boolean_learning_rate_is_refused_and_a_numpy_one_is_taken():
    with pytest.raises(lv.ConfigError, match="lr to be a positive number but got True"):
        lv.fit(tiny(), data(), steps=2, batch_size=10, lr=True, tools=quiet())
    rate = np.float32(1e-2)
    history = lv.fit(tiny(), data(), steps=2, batch_size=10, lr=rate, seed=0, tools=quiet())
    assert np.isfinite(history["loss"]).all()
    with pytest.raises(lv.ConfigError, match="positive number"):
        check_positive("scale", True)
    assert check_positive("scale", torch.tensor(0.5)) == 0.5


def test_a_held_out_batch_size_below_one_is_refused_before_the_run():
    with pytest.raises(lv.ConfigError, match="held-out batch_size to be an integer >= 1"):
        HeldOutEvaluation(data()[:5], every=2, batch_size=0)


def test_an_ema_decay_may_be_a_numpy_float():
    assert WeightAverage("ema", decay=np.float32(0.5)).decay == 0.5
    with pytest.raises(lv.ConfigError, match="decay"):
        WeightAverage("ema", decay=True)


# ---- worker counts --------------------------------------------------------------------------
def _job(job):
    return {"x": job["x"] * 2}


@pytest.mark.parametrize("workers", [0, -2, 1.5, True])
def test_run_jobs_refuses_a_worker_count_below_one(workers):
    with pytest.raises(lv.ConfigError, match="workers to be an integer >= 1"):
        run_jobs(_job, [{"x": 1}], workers=workers)


def test_run_jobs_takes_a_numpy_worker_count():
    assert run_jobs(_job, [{"x": 1}, {"x": 2}], workers=np.int64(1)) == [{"x": 2}, {"x": 4}]


# ---- warm-ups longer than the run -----------------------------------------------------------
@pytest.mark.parametrize("schedule, steps, parts", [
    (lv.LinearWarmup(1000, 0.5, 1.0), 200,
     ["linear:1000:0.5:1", "beta = 0.6,", "linear:200:0.5:1", "at least 1000 steps"]),
    (lv.LinearWarmup(201), 200, ["linear:201:0:1", "beta = 0.99,", "linear:200:0:1"]),
    (lv.SigmoidWarmup(1000, 10), 800,
     ["sigmoid:1000:10:1", "step 1046", "beta = 1.87e-09,", "sigmoid:754:10:1"]),
    (lv.SigmoidWarmup(500), 800, ["beta = 0.973,", "step 453 or earlier (sigmoid:453:75.5:1)",
                                  "at least 883 steps"]),
    (lv.CyclicalWarmup(1000), 200, ["cyclical:1000:0.5:1", "a ramp of 500", "beta = 0.398,",
                                    "500 steps", "a period of at most 200 steps"]),
    (lv.CyclicalWarmup(100), 220, ["20 steps into a cycle", "beta = 0.38,",
                                   "200 steps (whole periods) or 250 steps"]),
], ids=["linear 1000 of 200", "linear 201 of 200", "sigmoid beyond", "sigmoid late",
        "cyclical period beyond", "cyclical mid-ramp"])
def test_an_unfinished_warm_up_names_the_schedule_the_last_beta_and_the_fix(schedule, steps,
                                                                           parts):
    message = schedule.unfinished(steps)
    for part in parts:
        assert part in message, (part, message)


@pytest.mark.parametrize("schedule, steps", [
    (lv.LinearWarmup(200), 200), (lv.LinearWarmup(10, 1.0, 1.0), 5),
    (lv.SigmoidWarmup(100), 800), (lv.SigmoidWarmup(1000, end=0.0), 5),
    (lv.CyclicalWarmup(100), 250), (lv.CyclicalWarmup(100), 200),
    (lv.CyclicalWarmup(100, 1.0), 200), (lv.CyclicalWarmup(300, 0.1), 200),
    (lv.ConstantBeta(0.5), 3), (lv.GECO(1.0), 3),
], ids=["linear over the run", "linear flat", "sigmoid early", "sigmoid to 0",
        "cyclical on a plateau", "cyclical whole periods", "cyclical ramp 1",
        "cyclical short ramp", "constant", "GECO"])
def test_a_warm_up_that_ends_within_the_run_is_quiet(schedule, steps):
    assert schedule.unfinished(steps) is None


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
            and "beta schedule" in r.getMessage()]


def test_fit_warns_once_before_training_and_not_once_the_resumed_run_finishes_it(tmp_path,
                                                                                caplog):
    caplog.set_level(logging.WARNING)
    lv.fit(tiny(), data(), steps=4, batch_size=10, beta=lv.LinearWarmup(8), seed=0,
           out=tmp_path, tools=quiet())
    assert _warnings(caplog) == [lv.LinearWarmup(8).unfinished(4)]
    assert "beta = 0.375" in _warnings(caplog)[0]
    caplog.clear()
    lv.fit(tiny(), data(), steps=8, batch_size=10, beta=lv.LinearWarmup(8), seed=0,
           out=tmp_path, resume=True, tools=quiet())
    assert _warnings(caplog) == []


@pytest.mark.parametrize("beta", [lv.SigmoidWarmup(10), lv.CyclicalWarmup(10),
                                  "cyclical:100"], ids=["sigmoid", "cyclical", "spec"])
def test_fit_warns_for_every_kind_of_warm_up(beta, caplog):
    caplog.set_level(logging.WARNING)
    beta = lv.parse_schedule(beta) if isinstance(beta, str) else beta
    lv.fit(tiny(), data(), steps=4, batch_size=10, beta=beta, seed=0, tools=quiet())
    assert _warnings(caplog) == [beta.unfinished(4)]


def test_fit_is_quiet_for_a_warm_up_within_the_run(caplog):
    caplog.set_level(logging.WARNING)
    lv.fit(tiny(), data(), steps=4, batch_size=10, beta=lv.LinearWarmup(4), seed=0,
           tools=quiet())
    assert _warnings(caplog) == []


@pytest.mark.parametrize("warmup", [4, 5, np.int64(9)])
def test_a_learning_rate_warm_up_as_long_as_the_run_is_refused(warmup):
    vae = tiny()
    with pytest.raises(lv.ConfigError, match=f"got {int(warmup)} warm-up steps for a run of 4: "
                                             "the learning rate would never reach lr; use at "
                                             "most 3 warm-up steps"):
        lv.fit(vae, data(), steps=4, batch_size=10, tools=quiet(LRSchedule(None, warmup)))


def test_a_learning_rate_warm_up_shorter_than_the_run_reaches_lr():
    rates = []

    def record(step, rows, vae):
        rates.append(opt.param_groups[0]["lr"])

    vae = tiny()
    opt = torch.optim.SGD(vae.parameters(), lr=0.01)
    lv.fit(vae, data(), steps=4, batch_size=10, optimizer=opt, seed=0,
           tools=quiet(LRSchedule(None, 3), Checks(1), lv.training.Callback(record)))
    assert rates[-1] == pytest.approx(0.01)


def test_averaging_that_starts_after_the_run_warns(caplog):
    caplog.set_level(logging.WARNING)
    lv.fit(tiny(), data(), steps=4, batch_size=10, seed=0,
           tools=quiet(AveragedWeights("swa:4")))
    text = [r.getMessage() for r in caplog.records if "weight averaging" in r.getMessage()]
    assert text == ["the weight averaging swa:4:1 starts at step 4, after the run's last step "
                    "(3): the averaged model (history.averaged, averaged.pt) holds the weights "
                    "of the start of training, not an average; start it before step 4 or "
                    "train for more than 4 steps"]
    caplog.clear()
    lv.fit(tiny(), data(), steps=4, batch_size=10, seed=0,
           tools=quiet(AveragedWeights("swa:3")))
    assert not [r for r in caplog.records if "weight averaging" in r.getMessage()]


# ---- the command line -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--steps", "5", "--hidden", "8", "--blocks", "1", "--quiet",
                 "--beta-schedule", "1", "--out", str(run)]) == 0
    return run


CLI_CASES = {
    "lr schedule step:nan": (["train", "--lr-schedule", "step:nan", "--out", "{new}"],
                             "'step:nan' has a non-finite argument 'nan' for EVERY"),
    "lr schedule step:inf": (["train", "--lr-schedule", "step:inf", "--out", "{new}"],
                             "non-finite argument 'inf' for EVERY"),
    "beta schedule linear:nan": (["train", "--beta-schedule", "linear:nan", "--out", "{new}"],
                                 "non-finite argument 'nan' for STEPS"),
    "beta schedule inf": (["train", "--beta-schedule", "inf", "--out", "{new}"],
                          "'inf' is not a finite number"),
    "averaging ema:nan": (["train", "--average", "ema:nan", "--out", "{new}"],
                          "non-finite argument 'nan' for DECAY"),
    "study lr schedule step:nan": (["reproduce", "manifold", "--lr-schedule", "step:nan",
                                    "--out", "{new}"], "non-finite argument 'nan' for EVERY"),
    "study beta schedule sigmoid:nan": (["reproduce", "manifold", "--beta-schedule",
                                         "sigmoid:nan", "--out", "{new}"],
                                        "non-finite argument 'nan' for MIDPOINT"),
    "study averaging swa:inf": (["reproduce", "manifold", "--average", "swa:inf", "--out",
                                 "{new}"], "non-finite argument 'inf' for START"),
    "zero workers": (["reproduce", "sphere", "--workers", "0", "--out", "{new}"],
                     "--workers >= 1 but got 0"),
    "negative workers": (["reproduce", "sphere", "--workers", "-2", "--out", "{run}"],
                         "--workers >= 1 but got -2"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_bad_flag(case, run_folder, tmp_path, capsys):
    argv, message = CLI_CASES[case]
    before = folder_digest(run_folder)
    argv = [a.replace("{new}", str(tmp_path / "new")).replace("{run}", str(run_folder))
            for a in argv]
    code = main(argv + ["--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert err.startswith("pyro-lvae: error:") and err.count("\n") == 1
    assert folder_digest(run_folder) == before
    assert not (tmp_path / "new").exists()


def test_cli_train_warns_that_the_default_warm_up_outlasts_a_short_run(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    assert main(["train", "--steps", "5", "--hidden", "8", "--blocks", "1", "--quiet",
                 "--out", str(tmp_path / "r")]) == 0
    assert _warnings(caplog) == [lv.LinearWarmup(1000, 0.5, 1.0).unfinished(5)]



@pytest.mark.parametrize("shape, want", [(np.int64(2), (2,)), ((np.int64(2),), (2,)),
                                         ([2], (2,)), (2, (2,))])
def test_a_data_shape_of_any_integer_kind_is_taken(shape, want):
    from pyro_lvae.nets import GaussianEncoder

    vae = lv.VAE(GaussianEncoder(torch.nn.Linear(2, 2), 1), torch.nn.Linear(1, 2), 1,
                 lv.FixedScale(0.5), data_shape=shape)
    assert vae.data_shape == want and all(type(s) is int for s in vae.data_shape)


@pytest.mark.parametrize("shape", [2.5, (2.0,), (0,), (-1,), "2", (True,)])
def test_a_data_shape_that_is_not_positive_integers_is_refused(shape):
    from pyro_lvae.nets import GaussianEncoder

    with pytest.raises(lv.ConfigError, match="data_shape"):
        lv.VAE(GaussianEncoder(torch.nn.Linear(2, 2), 1), torch.nn.Linear(1, 2), 1,
               lv.FixedScale(0.5), data_shape=shape)
