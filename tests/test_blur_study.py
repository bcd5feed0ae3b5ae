"""``pyro-lvae reproduce blur``: a tiny sweep runs, measures every family, writes its figures
and resumes from its cache; the mean-first observation holds sigma, then learns it."""

import csv
import math

import pytest
import torch

from pyro_lvae.cli import main
from pyro_lvae.errors import ConfigError
from pyro_lvae.experiments.studies import blur

#: one family of each kind: fixed, learned per pixel (and a start of its own, run at the first
#: size only), discretised, mean-first
FAMILIES = ("F-VAE sigma=0.1", "LV-VAE", "LV-VAE start 0.05", "discretized logistic",
            "LV-VAE mean-first")
TINY = {"seeds": 1, "sizes": ((2, 1), (3, 1)), "lengths": (10, 20), "eval_every": 10,
        "latent_dim": 2, "batch_size": 8, "digits_validation_size": 40, "start_sizes": (0,),
        "test_images": 30, "families": FAMILIES}


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    out = tmp_path_factory.mktemp("blur")
    study = blur.BlurStudy(**TINY)
    results = blur.run_study(study, cache=out / "jobs")
    return study, results, out


def test_every_family_size_and_length_has_a_finite_row(ran):
    study, results, _ = ran
    # the start family at the first size only
    assert len(results) == 4 * 2 + 1
    rows = blur.aggregate(results)
    assert len(rows) == len(results) * 2
    for r in rows:
        assert r["diverged"] == 0, r["family"]
        for key in ("sharpness", "rec_rmse", "elbo", "bits_per_dim", "validation_elbo"):
            assert math.isfinite(r[key]), (r["family"], key)
        assert 0 < r["sharpness"] < 2 and 0 < r["rec_rmse"] < 1
        assert r["selected_step"] <= r["length"] and r["selected_step"] % 10 == 0
    for run in results:  # each length's selection: the best validation ELBO up to it
        curve = dict(run["validation_curve"])
        assert sorted(curve) == [10, 20]
        for row in run["rows"]:
            best = max((s for s in curve if s <= row["length"]), key=curve.get)
            assert row["selected_step"] == best
            assert row["validation_elbo"] == curve[best]


def test_writes_tables_and_figures_and_resumes(ran, capsys):
    study, results, out = ran
    written = blur.write_outputs(study, results, out)
    names = {p.name for p in written}
    assert {"blur.md", "summary.csv", "runs.csv", "blur-size-digits.png",
            "blur-length-digits.png"} <= names
    for p in written:
        assert p.stat().st_size > 0
    text = (out / "blur.md").read_text()
    assert text.count("| LV-VAE mean-first | w") == 4 and "| LV-VAE start 0.05 | w2b1 " in text
    runs = list(csv.DictReader((out / "runs.csv").open()))
    assert len(runs) == 2 * len(results)
    again = blur.run_study(study, cache=out / "jobs",
                           report=lambda line: print(line))
    assert f"{len(results)} of {len(results)} run(s) read back" in capsys.readouterr().out
    assert [r["rows"] for r in again] == [r["rows"] for r in results]


def test_every_family_builds_its_observation_model():
    job = {"mean_first_steps": 5}
    for family, (kind, _) in blur.FAMILIES.items():
        obs = blur._observation({**job, "family": family})
        assert (kind == "mean-first") == isinstance(obs, blur.MeanFirstVectorScale), family


def test_mean_first_holds_sigma_then_learns_it():
    obs = blur.MeanFirstVectorScale(fixed_steps=5, init_scale=0.1)
    out = torch.randn(3, 2, 4, requires_grad=True)
    obs.set_step(4)
    d = obs(out, 2)
    assert torch.allclose(d.base_dist.scale, torch.full((3, 1, 4), 0.1))
    d.log_prob(torch.zeros(3, 1, 4)).sum().backward()
    assert out.grad[:, 1].abs().max() == 0 and out.grad[:, 0].abs().max() > 0
    obs.set_step(5)
    assert not torch.allclose(obs(out, 2).base_dist.scale, torch.full((3, 1, 4), 0.1))


def test_settings_and_flags_are_checked(tmp_path, capsys):
    with pytest.raises(ConfigError, match="multiple of eval_every"):
        blur.BlurStudy(lengths=(15, 20), eval_every=10)
    with pytest.raises(ConfigError, match="unknown blur study size"):
        blur.BlurStudy(size="huge")
    assert blur.BlurStudy(size="paper").lengths == (5000, 20000)
    out = str(tmp_path / "o")
    assert main(["reproduce", "blur", "--steps", "10", "--out", out]) == 2
    assert "set by --size" in capsys.readouterr().err
    assert main(["reproduce", "priors", "--size", "paper", "--out", out]) == 2
    assert "blur study only" in capsys.readouterr().err
