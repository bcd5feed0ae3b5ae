"""The Lightning adapter: a real Trainer on the CPU trains sigma and anneals beta, resumes from
its checkpoint, and computes fit's loss on the same batch and draws."""

import csv
import math
import os
import subprocess
import sys

import lightning.pytorch as pl
import pyro
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from pyro.infer import RenyiELBO, TraceMeanField_ELBO

import pyro_lvae as lv
from pyro_lvae.training.lightning import PyroLVAEModule


def tiny(obs=None):
    return lv.mlp_vae(2, 2, obs or lv.LearnedScalarScale(), hidden=8, blocks=1)


def data(n=200, seed=0):
    return lv.datasets.manifold2d(n, torch.Generator().manual_seed(seed))


def loader(n=1000, batch_size=50):
    return torch.utils.data.DataLoader(data(n), batch_size=batch_size, shuffle=True,
                                       generator=torch.Generator().manual_seed(0))


def trainer(tmp_path, max_steps, **kwargs):
    return pl.Trainer(max_steps=max_steps, accelerator="cpu", devices=1,
                      logger=CSVLogger(tmp_path), log_every_n_steps=1,
                      enable_progress_bar=False, enable_model_summary=False, **kwargs)


def metrics(tmp_path):
    path = next(tmp_path.rglob("metrics.csv"))
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("loss")]


def test_a_trainer_trains_sigma_and_anneals_beta(tmp_path):
    vae = tiny()
    schedule = lv.LinearWarmup(20, 0.2, 1.0)
    module = PyroLVAEModule(vae, beta=schedule, lr=3e-2)
    trainer(tmp_path, 40, enable_checkpointing=False).fit(module, loader())
    rows = metrics(tmp_path)
    assert [int(r["step"]) for r in rows] == list(range(40))
    assert [float(r["beta"]) for r in rows] == pytest.approx([schedule(s) for s in range(40)])
    sigma = [float(r["sigma"]) for r in rows]
    start = vae.observation.init_scale  # taken from the first batch
    assert sigma[0] == pytest.approx(start, rel=1e-4)
    assert abs(math.log(float(vae.sigma()) / start)) > 0.2  # sigma trained (a module parameter)
    assert sigma[-1] == pytest.approx(float(vae.sigma()), rel=0.05)  # the logged one
    for r in rows:  # the logged parts add up
        assert float(r["loss"]) == pytest.approx(
            float(r["reconstruction"]) + float(r["beta"]) * float(r["kl"]), rel=1e-4)


def test_a_geco_weight_follows_each_steps_reconstruction_under_a_trainer(tmp_path):
    """Lightning feeds GECO every step's reconstruction loss: beta moves off 1 by the
    multiplier's own update, and no step goes past its patience."""
    geco = lv.GECO(target=-5.0, rate=0.1, patience=2)  # an unreachable target: beta falls
    module = PyroLVAEModule(tiny(), beta=geco, lr=1e-2)
    trainer(tmp_path, 12, enable_checkpointing=False).fit(module, loader())
    rows = metrics(tmp_path)
    betas = [float(r["beta"]) for r in rows]
    assert betas[0] == pytest.approx(1.0) and betas[-1] < betas[1] < 1.0
    assert geco.steps == 12


class _Weights(Callback):
    def on_train_start(self, trainer, module):
        self.state = {k: v.clone() for k, v in module.state_dict().items()}


def test_resume_from_a_lightning_checkpoint_continues_weights_step_and_beta(tmp_path):
    schedule = lv.LinearWarmup(20, 0.0, 1.0)
    saved = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = PyroLVAEModule(tiny(), beta=schedule, lr=1e-2)
    trainer(tmp_path / "a", 10, callbacks=[saved]).fit(first, loader())
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 10
    weights = _Weights()
    second = PyroLVAEModule(tiny(), beta=schedule, lr=1e-2)  # other initial weights
    later = trainer(tmp_path / "b", 20, callbacks=[weights])
    later.fit(second, loader(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert later.global_step == 20
    for key, value in ckpt["state_dict"].items():
        assert torch.equal(weights.state[key], value), key
    assert second.vae.observation.init_scale == first.vae.observation.init_scale
    rows = metrics(tmp_path / "b")
    assert [int(r["step"]) for r in rows] == list(range(10, 20))
    assert [float(r["beta"]) for r in rows] == pytest.approx([schedule(s) for s in range(10, 20)])


@pytest.mark.parametrize("elbo", [None, TraceMeanField_ELBO()], ids=["default", "mean-field"])
def test_its_loss_equals_fits_on_the_same_batch_and_seed(elbo):
    x = data(50)
    pyro.set_rng_seed(0)
    vae = tiny()
    pyro.set_rng_seed(0)
    twin = tiny()  # the same initial weights
    h = lv.fit(vae, lambda n, generator: x, steps=1, batch_size=50, seed=3, beta=0.5,
               elbo=elbo)
    module = PyroLVAEModule(twin, beta=0.5, elbo=elbo)
    twin.observation.initialize(x)
    pyro.set_rng_seed(3)
    terms = module.elbo_terms(x, 0.5)
    assert float(terms.loss.detach()) / 50 == pytest.approx(h["loss"][0], rel=1e-6)
    assert float(terms.reconstruction) / 50 == pytest.approx(h["reconstruction"][0], rel=1e-6)
    assert float(terms.kl) / 50 == pytest.approx(h["kl"][0], rel=1e-6)


def test_a_plain_model_guide_pair_trains(tmp_path):
    vae = tiny(lv.FixedScale(0.3))
    before = [p.clone() for p in vae.parameters()]
    module = PyroLVAEModule(vae.model, vae.guide, beta=0.5, lr=1e-2)
    trainer(tmp_path, 15, enable_checkpointing=False).fit(module, loader())
    assert all(not torch.equal(b, p) for b, p in zip(before, vae.parameters(), strict=True))
    rows = metrics(tmp_path)
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert float(rows[0]["sigma"]) == pytest.approx(0.3)


def test_bad_arguments_are_clear_errors():
    vae = tiny()
    with pytest.raises(lv.ConfigError, match="its own guide"):
        PyroLVAEModule(vae, vae.guide)
    with pytest.raises(lv.ConfigError, match="nn.Modules"):
        PyroLVAEModule(lambda x: None, lambda x: None)
    with pytest.raises(lv.ConfigError, match="differentiable_loss"):
        PyroLVAEModule(vae, elbo=RenyiELBO())


SCRIPT = """
import sys, torch, pyro, lightning.pytorch as pl
import pyro_lvae as lv
from pyro_lvae.training.lightning import PyroLVAEModule

torch.set_num_threads(1)
pl.seed_everything(0)
vae = lv.mlp_vae(2, 2, lv.LearnedVectorScale(), hidden=8, blocks=1)
module = PyroLVAEModule(vae, beta=lv.LinearWarmup(6, 0.5, 1.0), lr=1e-2)
init = {k: v.clone() for k, v in vae.state_dict().items()}
x = lv.datasets.manifold2d(400, torch.Generator().manual_seed(0))
loader = torch.utils.data.DataLoader(x, batch_size=20)
trainer = pl.Trainer(max_steps=8, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False)
trainer.fit(module, loader)
torch.save({"state": vae.state_dict(), "init": init, "start": vae.observation.init_scale},
           sys.argv[1] + f"/rank{trainer.global_rank}.pt")
"""


def test_two_processes_under_lightning_ddp_stay_identical(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["start"] == ranks[1]["start"]  # rank 0's first batch on both ranks
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key
    for key in ("model.decoder.0.out.weight", "guide.encoder.net.1.out.weight"):
        assert not torch.equal(ranks[0]["state"][key], ranks[0]["init"][key])  # trained
