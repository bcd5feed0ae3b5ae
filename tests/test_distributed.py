"""Data-parallel training with 2 CPU processes (gloo): synchronised, and equal to one process
trained on the same global batches; every observation model, its data-scaled start included,
stays identical on every rank."""

import os
import socket
import subprocess
import sys

import pyro
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import leave_process_group

import pyro_lvae as lv
from pyro_lvae.direct_elbo import direct_elbo_terms
from pyro_lvae.training import Checkpoints, Checks
from pyro_lvae.training.batches import data_seed as _data_seed
from pyro_lvae.training.distributed import rank_seed

WORLD, BATCH, STEPS, SEED = 2, 8, 12, 3


def _data():
    return lv.datasets.manifold2d(64, torch.Generator().manual_seed(11))


def _vae():
    pyro.set_rng_seed(0)
    return lv.mlp_vae(2, 2, lv.LearnedVectorScale(init_scale=1.0), hidden=8, blocks=1)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, folder):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        vae = _vae()
        history = lv.fit(vae, _data(), steps=STEPS, batch_size=BATCH, lr=1e-2, seed=SEED,
                         beta=lv.LinearWarmup(6, 0.5, 1.0), out=folder / "run",
                         tools=[Checks(every=4), Checkpoints(4)])
        torch.save({"state": vae.state_dict(), "loss": torch.tensor(history["loss"])},
                   folder / f"rank{rank}.pt")
    except BaseException:
        dist.destroy_process_group()
        raise
    leave_process_group()


def _reference():
    """One process, the same global batches and noise: the two ranks' losses, averaged."""
    vae = _vae()
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    data = _data()
    shuffle = torch.Generator().manual_seed(_data_seed(SEED))
    states = []
    for r in range(WORLD):
        pyro.set_rng_seed(rank_seed(SEED, r))
        states.append(torch.get_rng_state())
    beta = lv.LinearWarmup(6, 0.5, 1.0)
    perm, pos, losses = torch.zeros(0, dtype=torch.long), 0, []
    for step in range(STEPS):
        if pos + WORLD * BATCH > len(perm):
            perm, pos = torch.randperm(len(data), generator=shuffle), 0
        opt.zero_grad()
        total = 0.0
        for r in range(WORLD):
            torch.set_rng_state(states[r])
            x = data[perm[pos + r * BATCH: pos + (r + 1) * BATCH]]
            loss = direct_elbo_terms(vae, x, beta=beta(step)).loss / WORLD
            loss.backward()
            total += float(loss.detach()) / BATCH
            states[r] = torch.get_rng_state()
        pos += WORLD * BATCH
        opt.step()
        losses.append(total)
    return vae.state_dict(), torch.tensor(losses, dtype=torch.float64)


def test_two_processes_stay_identical_and_match_one_process(tmp_path):
    mp.start_processes(_worker, args=(_free_port(), tmp_path), nprocs=WORLD,
                       start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), name  # synchronised, sigma too
    assert "model.decoder.0.out.weight" in ranks[0]["state"]
    assert torch.equal(ranks[0]["loss"], ranks[1]["loss"])  # reduced before recording
    state, losses = _reference()
    for name, value in state.items():
        assert torch.allclose(ranks[0]["state"][name], value, atol=1e-5), name
    assert torch.allclose(ranks[0]["loss"], losses, rtol=1e-5)
    # rank 0 wrote the checkpoint once, and it loads on a single process
    assert lv.load(tmp_path / "run" / "checkpoint.pt") is not None


def _mixed_data():
    g = torch.Generator().manual_seed(5)
    n = 64
    return torch.stack([torch.randn(n, generator=g), (torch.rand(n, generator=g) > 0.5).float(),
                        torch.randint(0, 3, (n,), generator=g).float()], -1)


def _observation_cases():
    mixed = [["continuous"], ["binary"], ["categorical", 3]]
    return {
        "learned-scalar": (lambda: lv.LearnedScalarScale(init_scale=1.0), 2, _data()),
        "mixed": (lambda: lv.MixedObservation(mixed, "learned-channel"), 3, _mixed_data()),
        "data-start": (lv.LearnedVectorScale, 2, _data()),  # the start: not a weight
    }


def _observation_worker(rank, port, folder):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        out = {}
        for name, (make, dim, data) in _observation_cases().items():
            pyro.set_rng_seed(rank)  # different initial weights: DDP makes them rank 0's
            vae = lv.mlp_vae(dim, 2, make(), hidden=8, blocks=1)
            h = lv.fit(vae, data, steps=6, batch_size=BATCH, lr=1e-2, seed=SEED,
                       tools=[Checks(every=3)])
            out[name] = {"state": vae.state_dict(), "objective": h.objective,
                         "start": getattr(vae.observation, "init_scale", None)}
        torch.save(out, folder / f"obs{rank}.pt")
    except BaseException:
        dist.destroy_process_group()
        raise
    leave_process_group()


def test_every_observation_model_stays_identical_on_two_processes(tmp_path):
    mp.start_processes(_observation_worker, args=(_free_port(), tmp_path), nprocs=WORLD,
                       start_method="spawn")
    ranks = [torch.load(tmp_path / f"obs{r}.pt", weights_only=False) for r in range(WORLD)]
    for name in _observation_cases():
        for key, value in ranks[0][name]["state"].items():
            assert torch.equal(value, ranks[1][name]["state"][key]), (name, key)
        assert ranks[0][name]["objective"] == ranks[1][name]["objective"]
    assert ranks[0]["learned-scalar"]["objective"] == "DirectELBO"
    # the data start: rank 0's first batch on both ranks
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(_data_seed(SEED)))
    first = _data()[perm[:BATCH]]
    for r in range(WORLD):
        assert ranks[r]["data-start"]["start"] == pytest.approx(lv.initial_scale(first), rel=1e-6)


def test_command_line_trains_on_two_processes_and_resumes_on_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    base = [sys.executable, "-m", "pyro_lvae.cli", "train", "--hidden", "8", "--blocks", "1",
            "--quiet"]
    proc = subprocess.run(base + ["--devices", "2", "--steps", "40", "--checkpoint-every",
                                  "20", "--out", str(run)], env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"processes": 2' in (run / "summary.json").read_text()
    proc = subprocess.run(base + ["--resume", str(run), "--steps", "60"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resumed on 1 process(es) from a checkpoint of 2" in proc.stderr
    assert len((run / "history.csv").read_text().splitlines()) == 61


@pytest.mark.parametrize("argv, message", [
    (["--devices", "0"], "--devices >= 1"),
    (["--num-nodes", "2", "--node-rank", "2"], "--node-rank"),
])
def test_bad_distributed_settings(tmp_path, capsys, argv, message):
    from pyro_lvae.cli import main

    assert main(["train", "--out", str(tmp_path / "r"), *argv]) == 2
    assert message in capsys.readouterr().err
