"""fit's optional tools: gradient-norm clipping, learning-rate schedules, averaged weights and
the held-out ELBO with its best checkpoint; each resumes exactly; the run records."""

import json
import math
import os
import socket

import numpy as np
import pyro
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import PoisonOnce, leave_process_group
from pyro.infer import RenyiELBO, TraceMeanField_ELBO

import pyro_lvae as lv
from pyro_lvae.cli import main
from pyro_lvae.training import (
    BEST_NAME,
    CHECKPOINT_NAME,
    AveragedWeights,
    Callback,
    Checkpoints,
    Checks,
    ClipGradNorm,
    HeldOutEvaluation,
    History,
    LRSchedule,
    Tool,
    load_averaged,
)
from pyro_lvae.training.heldout import HeldOut


def tiny(obs=None):
    return lv.mlp_vae(2, 2, obs or lv.LearnedScalarScale(), hidden=8, blocks=1)


def data(n=200, seed=0):
    return lv.datasets.manifold2d(n, torch.Generator().manual_seed(seed))


class Recording(torch.optim.Adam):
    """Adam that records, at every step, the gradients' total norm, the learning rate and the
    parameters after the update."""

    def __init__(self, params, lr=1e-2):
        super().__init__(params, lr=lr)
        self.norms, self.lrs, self.after = [], [], []

    def step(self, closure=None):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads]))))
        self.lrs.append(self.param_groups[0]["lr"])
        super().step(closure)
        self.after.append([p.detach().clone() for g in self.param_groups for p in g["params"]])


def recorded_run(steps=12, tools=(), **kwargs):
    made = []

    def make(params):
        made.append(Recording(params))
        return made[0]

    pyro.set_rng_seed(0)
    h = lv.fit(tiny(), data(), steps=steps, batch_size=50, seed=0, optimizer=make,
               tools=[Checks(every=4), *tools], **kwargs)
    return h, made[0]


# ---- clipping -------------------------------------------------------------------------------
@pytest.mark.parametrize("elbo", [None, TraceMeanField_ELBO(), RenyiELBO(alpha=0.5)],
                         ids=["direct", "pyro-differentiable", "pyro-loss-and-grads"])
def test_clipping_bounds_the_total_gradient_norm_on_every_torch_path(elbo):
    plain, free = recorded_run(elbo=elbo)
    assert np.isnan(plain["grad_norm"]).all()  # recorded only when clipping
    clip = 0.1 * min(free.norms)
    h, clipped = recorded_run(elbo=elbo, tools=[ClipGradNorm(clip)])
    assert max(clipped.norms) <= clip * (1 + 1e-5)
    assert min(clipped.norms) >= clip * (1 - 1e-5)  # scaled down to it, not zeroed
    # the history holds each step's norm before clipping
    assert h["grad_norm"][0] == pytest.approx(free.norms[0], rel=1e-5)
    assert np.all(h["grad_norm"] > clip)


def test_clipping_and_schedules_with_a_pyro_optimiser_are_refused_with_the_fix():
    adam = pyro.optim.Adam({"lr": 1e-3})
    with pytest.raises(lv.ConfigError, match="clip_args"):
        lv.fit(tiny(), data(), steps=2, optimizer=adam, tools=[ClipGradNorm(1.0)])
    with pytest.raises(lv.ConfigError, match="torch optimiser"):
        lv.fit(tiny(), data(), steps=2, optimizer=adam, tools=[LRSchedule("cosine")])


# ---- schedules ------------------------------------------------------------------------------
def test_named_schedule_with_warmup_sets_the_learning_rate_of_every_step():
    _, opt = recorded_run(steps=12, tools=[LRSchedule("cosine:0.1", warmup=4)])
    lr = 1e-2
    warm = [lr * (t + 1) / 5 for t in range(4)]
    cosine = [lr * (0.1 + 0.9 * (1 + math.cos(math.pi * t / 8)) / 2) for t in range(8)]
    assert opt.lrs == pytest.approx(warm + cosine, rel=1e-6)
    _, opt = recorded_run(steps=9, tools=[LRSchedule("step:4:0.5")])
    assert opt.lrs == pytest.approx([lr] * 4 + [lr / 2] * 4 + [lr / 4], rel=1e-6)


def test_schedule_as_a_function_or_as_a_scheduler_object():
    def exponential(opt):
        return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)

    _, opt = recorded_run(steps=3, tools=[LRSchedule(exponential)])
    assert opt.lrs == pytest.approx([1e-2, 5e-3, 2.5e-3])
    vae = tiny()
    opt = Recording(vae.parameters())
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, gamma=0.1)
    lv.fit(vae, data(), steps=4, batch_size=50, optimizer=opt, tools=[LRSchedule(sched)])
    assert opt.lrs == pytest.approx([1e-2, 1e-2, 1e-3, 1e-3])
    other = torch.optim.SGD(tiny().parameters(), lr=1.0)
    with pytest.raises(lv.ConfigError, match="another optimiser"):
        lv.fit(tiny(), data(), steps=2,
               tools=[LRSchedule(torch.optim.lr_scheduler.StepLR(other, 2))])


@pytest.mark.parametrize("tools, match", [
    (lambda: [LRSchedule("cosine:2")], "final factor"),
    (lambda: [LRSchedule("linear")], "unknown learning-rate schedule"),
    (lambda: [LRSchedule("step")], "EVERY"),
    (lambda: [LRSchedule(None, warmup=-1)], "lr_warmup"),
    (lambda: [Checks(on_divergence="rollback"), LRSchedule("cosine")], "one or the other"),
    (lambda: [AveragedWeights("mean")], "unknown weight averaging"),
    (lambda: [AveragedWeights("ema:1.5")], "decay"),
    (lambda: [HeldOutEvaluation(data(10), every=0)], "eval_every"),
    (lambda: [ClipGradNorm(0)], "clip_grad_norm > 0"),
])
def test_bad_tool_settings_are_refused_before_training(tools, match):
    with pytest.raises(lv.ConfigError, match=match):
        lv.fit(tiny(), data(), steps=2, tools=tools())


# ---- averaged weights -----------------------------------------------------------------------
def test_ema_averages_every_parameter_the_learned_sigma_included():
    decay = 0.8
    h, opt = recorded_run(steps=10, tools=[AveragedWeights(f"ema:{decay}")])
    expected = [p.clone() for p in opt.after[0]]  # the first average is a copy
    for params in opt.after[1:]:
        expected = [decay * e + (1 - decay) * p for e, p in zip(expected, params, strict=True)]
    averaged = list(h.averaged.parameters())
    names = [n for n, _ in h.averaged.named_parameters()]
    assert any("scale" in n for n in names)  # sigma's unconstrained parameter is averaged
    for got, want in zip(averaged, expected, strict=True):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)
    raw = [p.detach() for p in opt.after[-1]]
    assert not all(torch.equal(a, r) for a, r in zip(averaged, raw, strict=True))


def test_swa_is_the_mean_of_the_weights_from_its_start():
    h, opt = recorded_run(steps=10, tools=[AveragedWeights("swa:4:2")])
    for i, got in enumerate(h.averaged.parameters()):
        want = torch.stack([opt.after[t][i] for t in (4, 6, 8)]).mean(0)
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)


def test_the_averaged_model_is_an_independent_vae_that_sample_and_evaluate_use():
    pyro.set_rng_seed(0)
    vae = tiny()
    h = lv.fit(vae, data(), steps=30, batch_size=50, seed=0, lr=1e-2,
               tools=[Checks(every=10), AveragedWeights("ema:0.9"),
                      HeldOutEvaluation(data(100, seed=9), every=10)])
    avg = h.averaged
    assert isinstance(avg, lv.VAE) and avg.name != vae.name
    assert avg.sigma() != vae.sigma()  # the averaged sigma is not the raw one
    assert avg.observation.init_scale == vae.observation.init_scale  # the same measured start
    torch.manual_seed(1)
    raw_samples = vae.sample(5)
    torch.manual_seed(1)
    assert not torch.allclose(avg.sample(5), raw_samples)
    # the history's held-out ELBO of the averaged model is evaluate.elbo_parts of history.averaged
    torch.manual_seed(0)
    assert lv.evaluate.elbo_parts(avg, data(100, seed=9))["elbo"] == pytest.approx(
        h["heldout_elbo_averaged"][-1], rel=1e-6)
    torch.manual_seed(0)
    assert lv.evaluate.elbo_parts(vae, data(100, seed=9))["elbo"] == pytest.approx(
        h["heldout_elbo"][-1], rel=1e-6)
    # trains on its own: SVI on the copy leaves the raw model's weights alone
    before = [p.clone() for p in vae.parameters()]
    svi = pyro.infer.SVI(avg.model, avg.guide, pyro.optim.Adam({"lr": 1e-2}),
                         pyro.infer.Trace_ELBO())
    svi.step(data(20))
    assert all(torch.equal(b, p) for b, p in zip(before, vae.parameters(), strict=True))


def test_checkpoint_holds_the_raw_and_the_averaged_model(tmp_path):
    vae = tiny()
    h = lv.fit(vae, data(), steps=10, batch_size=50, seed=0, out=tmp_path,
               tools=[AveragedWeights("ema:0.5")])
    raw, avg = lv.load(tmp_path / CHECKPOINT_NAME), load_averaged(tmp_path / CHECKPOINT_NAME)
    x = data(7)
    assert torch.equal(raw.reconstruct(x), vae.reconstruct(x))
    assert torch.equal(avg.reconstruct(x), h.averaged.reconstruct(x))
    assert not torch.equal(avg.reconstruct(x), raw.reconstruct(x))
    blob = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert int(blob["tools"]["averaged"]["n_averaged"]) == 10
    lv.fit(tiny(), data(), steps=2, out=tmp_path / "plain")
    with pytest.raises(lv.CheckpointError, match="no averaged model"):
        load_averaged(tmp_path / "plain" / CHECKPOINT_NAME)


def test_averaging_and_the_held_out_curve_work_on_the_svi_path_too():
    vae = tiny()
    h = lv.fit(vae, data(), steps=12, batch_size=50, seed=0,
               optimizer=pyro.optim.Adam({"lr": 1e-2}),
               tools=[Checks(every=4), AveragedWeights("ema:0.5"),
                      HeldOutEvaluation(data(30, seed=9), every=4)])
    assert h.objective == "pyro Trace_ELBO"
    raw = dict(vae.named_parameters())
    moved = [not torch.equal(p, raw[n]) for n, p in h.averaged.named_parameters()]
    assert all(moved) and len(moved) == len(raw)  # every parameter averaged, none shared
    assert np.isfinite(h.heldout()["heldout_elbo_averaged"]).all()


def test_a_rollback_restores_the_averaged_weights_too():
    h = lv.fit(tiny(), data(), steps=10, batch_size=50,
               tools=[Checks(every=5, on_divergence="rollback"), AveragedWeights("ema:0.5")],
               optimizer=lambda params: PoisonOnce(params, at=5))
    assert all(torch.isfinite(p).all() for p in h.averaged.parameters())
    assert np.isfinite(h["loss"]).all()


# ---- held-out ELBO and the best checkpoint --------------------------------------------------
def test_best_checkpoint_holds_the_model_of_the_best_held_out_elbo(tmp_path):
    pyro.set_rng_seed(0)
    val = data(100, seed=9)
    h = lv.fit(tiny(), data(), steps=60, batch_size=50, seed=0, lr=3e-2, out=tmp_path,
               tools=[Checks(every=5), HeldOutEvaluation(val, every=10)])
    curve = h.heldout()
    assert curve["step"].tolist() == [9, 19, 29, 39, 49, 59]  # rows after steps 10, 20, ...
    best = int(np.argmax(curve["heldout_elbo"]))
    # the best's step is the history row of the same evaluation
    assert h.best == {"step": curve["step"][best], "elbo": curve["heldout_elbo"][best]}
    blob = torch.load(tmp_path / BEST_NAME, weights_only=True)
    assert blob["step"] == h.best["step"] + 1  # the checkpoint counts the steps done
    again = HeldOut(val, 10).evaluate(lv.load(tmp_path / BEST_NAME))
    assert again == pytest.approx(h.best["elbo"], rel=1e-6)
    h.to_csv(tmp_path / "history.csv")
    read = History.from_csv(tmp_path / "history.csv")
    assert np.array_equal(read.heldout()["heldout_elbo"], curve["heldout_elbo"])


def test_held_out_evaluation_leaves_training_unchanged():
    pyro.set_rng_seed(0)
    plain = lv.fit(tiny(), lv.datasets.manifold2d, steps=20, batch_size=30, seed=0,
                   tools=[Checks(every=5)])
    pyro.set_rng_seed(0)
    evaluated = lv.fit(tiny(), lv.datasets.manifold2d, steps=20, batch_size=30, seed=0,
                       tools=[Checks(every=5), HeldOutEvaluation(data(50), every=5)])
    assert np.array_equal(plain["loss"], evaluated["loss"])
    assert np.isfinite(evaluated.heldout()["heldout_elbo"]).all()


def test_histories_without_held_out_columns_still_load(tmp_path):
    h = lv.fit(tiny(), data(), steps=4, batch_size=50)
    h.to_csv(tmp_path / "h.csv")
    assert "heldout" not in (tmp_path / "h.csv").read_text().splitlines()[0]
    read = History.from_csv(tmp_path / "h.csv")
    assert np.isnan(read["heldout_elbo"]).all() and len(read) == 4


def test_a_resumed_run_keeps_the_best_held_out_evaluation_so_far(tmp_path):
    val = data(60, seed=7)
    kwargs = {"steps": 20, "batch_size": 32, "seed": 5, "lr": 1e-2, "out": tmp_path}
    first = lv.fit(tiny(), lv.datasets.manifold2d, **kwargs,
                   tools=[Checks(every=5), HeldOutEvaluation(val, every=10)])
    # nothing left to train: the bookkeeping comes from the file
    again = lv.fit(lv.load(tmp_path / CHECKPOINT_NAME), lv.datasets.manifold2d, resume=True,
                   **kwargs, tools=[Checks(every=5), HeldOutEvaluation(val, every=10)])
    assert first.best is not None and again.best == first.best


# ---- exact resume with every tool on --------------------------------------------------------
TOOLS = {
    "clip": lambda: [ClipGradNorm(1.0)],
    "cosine-warmup": lambda: [LRSchedule("cosine:0.1", warmup=15)],
    "step-decay": lambda: [LRSchedule("step:7:0.5")],
    "ema": lambda: [AveragedWeights("ema:0.9")],
    "swa": lambda: [AveragedWeights("swa:10:3")],
    "held-out": lambda: [HeldOutEvaluation(data(60, seed=7), every=10)],
    "all": lambda: [ClipGradNorm(1.0), LRSchedule("cosine", warmup=5),
                    AveragedWeights("ema:0.95"), HeldOutEvaluation(data(60, seed=7), every=10)],
    "own tool": lambda: [StepCounter()],
}


class StepCounter(Tool):
    """A tool of one's own: counts the steps and the sum of the losses seen at checks, its
    state resumed from the checkpoint."""

    state_key = "counter"

    def __init__(self):
        self.steps, self.total = 0, 0.0

    def on_step_end(self, run, step):
        self.steps += 1

    def on_check(self, run, done, rows):
        self.total += float(np.sum(rows["loss"]))

    def state_dict(self):
        return {"steps": self.steps, "total": self.total}

    def load_state_dict(self, state):
        self.steps, self.total = state["steps"], state["total"]


def _same(a, b):
    """Equal states (nested dicts of numbers and tensors)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


class Killed(Exception):
    """The process dies (after the checkpoint of step 20, before the one of step 30)."""


def kill_at_25(done, rows, vae):
    if done == 25:
        raise Killed


@pytest.mark.parametrize("name", list(TOOLS))
def test_resume_with_each_tool_continues_exactly_like_an_uninterrupted_run(tmp_path, name):
    def run(out, tools, resume=False, vae=None):
        if vae is None:
            pyro.set_rng_seed(5)
            vae = tiny()
        return lv.fit(vae, lv.datasets.manifold2d, steps=40, batch_size=32, seed=5,
                      lr=1e-2, out=out, resume=resume,
                      tools=[Checks(every=5), Checkpoints(10), *tools])

    whole_tools, resumed_tools = TOOLS[name](), TOOLS[name]()
    whole = run(tmp_path / "whole", whole_tools)
    with pytest.raises(Killed):
        run(tmp_path / "part", [*TOOLS[name](), Callback(kill_at_25)])
    assert torch.load(tmp_path / "part" / CHECKPOINT_NAME, weights_only=True)["step"] == 20
    pyro.clear_param_store()
    torch.manual_seed(123)  # resuming restores every random state itself
    resumed = run(tmp_path / "part", resumed_tools, resume=True,
                  vae=lv.load(tmp_path / "part" / CHECKPOINT_NAME))
    for a, b in zip(whole_tools, resumed_tools, strict=True):  # the tools' own states
        assert _same(a.state_dict(), b.state_dict()), a
    assert np.array_equal(resumed["loss"], whole["loss"])
    assert np.array_equal(resumed["grad_norm"], whole["grad_norm"], equal_nan=True)
    assert np.array_equal(resumed["heldout_elbo"], whole["heldout_elbo"], equal_nan=True)
    assert np.array_equal(resumed["heldout_elbo_averaged"], whole["heldout_elbo_averaged"],
                          equal_nan=True)
    assert resumed.best == whole.best
    if whole.averaged is not None:
        for a, b in zip(resumed.averaged.parameters(), whole.averaged.parameters(), strict=True):
            assert torch.equal(a, b)
    whole_blob = torch.load(tmp_path / "whole" / CHECKPOINT_NAME, weights_only=True)
    part_blob = torch.load(tmp_path / "part" / CHECKPOINT_NAME, weights_only=True)
    assert whole_blob["tools"].keys() == part_blob["tools"].keys()
    if "scheduler" in whole_blob["tools"]:
        assert whole_blob["tools"]["scheduler"]["_last_lr"] == \
            part_blob["tools"]["scheduler"]["_last_lr"]
    if "heldout" in whole_blob["tools"]:
        best = [torch.load(tmp_path / run_name / BEST_NAME, weights_only=True)["model"]
                ["state_dict"] for run_name in ("whole", "part")]
        assert all(torch.equal(best[0][k], best[1][k]) for k in best[0])


# ---- the command line and the run records --------------------------------------------------
def test_train_command_with_every_tool_writes_best_averaged_and_run_records(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--steps", "40", "--hidden", "8", "--blocks", "1", "--quiet",
                 "--clip-grad-norm", "5", "--lr-schedule", "cosine", "--lr-warmup", "5",
                 "--average", "ema:0.9", "--eval-every", "20", "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["train_seconds"] > 0 and summary["train_cpu_seconds"] > 0
    assert summary["device"] == "cpu" and summary["device_name"]
    assert summary["best"]["step"] in (19, 39) and summary["best"]["file"] == BEST_NAME  # its row
    assert summary["averaged"]["elbo"] != summary["elbo"]
    assert (run / BEST_NAME).exists() and (run / "averaged.pt").exists()
    averaged, last = lv.load(run / "averaged.pt"), load_averaged(run / CHECKPOINT_NAME)
    assert all(torch.equal(a, b) for a, b in zip(averaged.parameters(), last.parameters(),
                                                 strict=True))
    config = json.loads((run / "config.json").read_text())
    assert config["average"] == "ema:0.9:0:1" and config["lr_schedule"] == "cosine"
    history = History.from_csv(run / "history.csv")
    assert history.heldout()["step"].tolist() == [19, 39]
    assert main(["train", "--resume", str(run), "--steps", "60", "--quiet"]) == 0
    assert History.from_csv(run / "history.csv").heldout()["step"].tolist() == [19, 39, 59]


# ---- two processes (gloo) -------------------------------------------------------------------
def _tools_worker(rank, port, folder):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        pyro.set_rng_seed(0)
        h = lv.fit(tiny(), data(64, seed=11), steps=12, batch_size=8, lr=1e-2, seed=3,
                   out=folder / "run",
                   tools=[Checks(every=4), ClipGradNorm(1.0), LRSchedule("cosine", warmup=2),
                          AveragedWeights("ema:0.8"),
                          HeldOutEvaluation(data(40, seed=7), every=4)])
        torch.save({"averaged": h.averaged.state_dict(), "heldout": torch.tensor(
            h.heldout()["heldout_elbo"]), "best": h.best["step"]}, folder / f"rank{rank}.pt")
    except BaseException:
        dist.destroy_process_group()
        raise
    leave_process_group()


def test_every_tool_stays_identical_on_two_processes(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_tools_worker, args=(port, tmp_path), nprocs=2, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key, value in ranks[0]["averaged"].items():
        assert torch.equal(value, ranks[1]["averaged"][key]), key
    assert torch.equal(ranks[0]["heldout"], ranks[1]["heldout"]) and len(ranks[0]["heldout"]) == 3
    assert ranks[0]["best"] == ranks[1]["best"]
    best = torch.load(tmp_path / "run" / BEST_NAME, weights_only=True)
    assert best["step"] == ranks[0]["best"] + 1  # steps done; the best names its row


# ---- fit's earlier keyword arguments ----------------------------------------------------------
def test_earlier_keyword_arguments_build_their_tools_with_a_warning_at_the_caller(tmp_path):
    """The deprecated form trains exactly like the tools it names, and says so where it is
    written."""
    kwargs = {"steps": 20, "batch_size": 32, "seed": 5, "lr": 1e-2}
    pyro.set_rng_seed(5)
    with pytest.warns(DeprecationWarning, match="ClipGradNorm") as caught:
        old = lv.fit(tiny(), lv.datasets.manifold2d, check_every=5, clip_grad_norm=1.0,
                     average="ema:0.9", heldout=data(60, seed=7), eval_every=10, **kwargs)
    assert caught[0].filename == __file__
    pyro.set_rng_seed(5)
    new = lv.fit(tiny(), lv.datasets.manifold2d, **kwargs,
                 tools=[Checks(every=5), ClipGradNorm(1.0), AveragedWeights("ema:0.9"),
                        HeldOutEvaluation(data(60, seed=7), every=10)])
    assert np.array_equal(old["loss"], new["loss"])
    assert np.array_equal(old["grad_norm"], new["grad_norm"])
    assert old.best == new.best
    with pytest.raises(TypeError, match="unexpected keyword argument 'clip'"):
        lv.fit(tiny(), lv.datasets.manifold2d, steps=2, clip=1.0)


def test_the_earlier_eval_every_without_heldout_is_refused_before_training():
    """eval_every= alone (no held-out set to evaluate) is refused, with the deprecation
    warning of the keyword."""
    with pytest.warns(DeprecationWarning, match="eval_every"):
        with pytest.raises(lv.ConfigError, match="needs heldout"):
            lv.fit(tiny(), data(), steps=2, eval_every=10)


def test_tools_are_refused_when_they_are_not_tools_or_given_twice():
    with pytest.raises(lv.ConfigError, match="Callback"):
        lv.fit(tiny(), data(), steps=2, tools=[lambda step, rows, vae: None])
    with pytest.raises(lv.ConfigError, match="two tools of one kind"):
        lv.fit(tiny(), data(), steps=2, tools=[ClipGradNorm(1.0), ClipGradNorm(2.0)])
    with pytest.raises(lv.ConfigError, match="needs out="):
        lv.fit(tiny(), data(), steps=2, tools=[Checkpoints(10)])


def test_a_tool_used_in_a_second_run_starts_afresh():
    tools = [AveragedWeights("ema:0.9"), HeldOutEvaluation(data(60, seed=7), every=5),
             LRSchedule("cosine")]
    first = lv.fit(tiny(), data(), steps=10, batch_size=50, seed=0, tools=tools)
    second_vae = tiny()
    second = lv.fit(second_vae, data(), steps=10, batch_size=50, seed=0, tools=tools)
    assert second.averaged is not first.averaged
    moved = [not torch.equal(a, b) for a, b in zip(second.averaged.parameters(),
                                                    first.averaged.parameters(), strict=True)]
    assert all(moved)  # the second run averages its own model's weights
    curve = second.heldout()
    best = int(np.argmax(curve["heldout_elbo"]))  # its best is its own run's
    assert second.best == {"step": curve["step"][best], "elbo": curve["heldout_elbo"][best]}


# ---- checkpoints of earlier versions --------------------------------------------------------
DATA = os.path.join(os.path.dirname(__file__), "data")


def test_a_checkpoint_written_before_the_tools_resumes_like_the_uninterrupted_run(tmp_path):
    """tests/data holds step 20 of a 40-step run written by pyro-lvae 0.1.0 (fit's earlier
    keyword arguments: check_every=5, checkpoint_every=10, clip_grad_norm=1.0, lr_schedule=
    "cosine", lr_warmup=5, average="ema:0.95", heldout=..., eval_every=10), and the losses of
    that run uninterrupted. Resumed with the same tools, the run ends where it did."""
    import shutil

    shutil.copy(os.path.join(DATA, "checkpoint-0.1.0-step20-of-40.pt"),
                tmp_path / CHECKPOINT_NAME)
    want = np.load(os.path.join(DATA, "checkpoint-0.1.0-losses-of-40.npy"))
    val = lv.datasets.manifold2d(60, torch.Generator().manual_seed(7))
    vae = lv.load(tmp_path / CHECKPOINT_NAME)
    h = lv.fit(vae, lv.datasets.manifold2d, steps=40, batch_size=32, seed=5, lr=1e-2,
               out=tmp_path, resume=True,
               tools=[Checks(every=5), Checkpoints(10), ClipGradNorm(1.0),
                      LRSchedule("cosine", warmup=5), AveragedWeights("ema:0.95"),
                      HeldOutEvaluation(val, every=10)])
    assert len(h) == 40
    np.testing.assert_allclose(h["loss"], want, rtol=1e-5)
    assert h.best["step"] in (9, 19, 29, 39)  # a held-out row (the file counted steps done)
    assert h.averaged is not None
