"""The artificial-problem and collapsed-start studies: runs, outputs, and the claim checks."""

import numpy as np
import pytest
import torch

from pyro_lvae.cli import main
from pyro_lvae.experiments.studies import manifold
from pyro_lvae.experiments.studies.manifold import ManifoldStudy, claims, energy_distance

TINY = ["--quick", "--seeds", "2", "--steps", "40", "--hidden", "8", "--blocks", "1",
        "--workers", "1", "--quiet"]


def test_manifold_study_runs_every_variant_and_writes_outputs(tmp_path, capsys):
    assert main(["reproduce", "manifold", *TINY, "--out", str(tmp_path)]) == 0
    text = (tmp_path / "reproduction.md").read_text()
    for variant in ("F-VAE sigma=1", "F-VAE sigma=0.01", "LS-VAE", "LV-VAE", "F*-VAE",
                    "LS replay"):
        assert f"| {variant} | 2 |" in text
    for claim in ("(a)", "(a2)", "(b)", "(c)", "(d)", "(e)"):
        assert claim in text
    for name in ("summary.csv", "runs.csv", "variants.png", "training.png", "sigma.png",
                 "seeds.png"):
        assert (tmp_path / name).exists(), name


def test_second_phase_runs_derive_from_ls_but_start_elsewhere():
    study = ManifoldStudy.quick(seeds=1)
    first = [{"variant": "LS-VAE", "seed": 0, "final_sigma": 0.3, "sigma_trajectory": [1, 0.3]}]
    star, replay = study.second_jobs(first)
    assert star["sigma"] == 0.3 and replay["schedule"] == [1, 0.3]
    assert star["init_seed"] == replay["init_seed"] == manifold.REPLAY_SEED_OFFSET


def fake(variant, seed, elbo, **extra):
    base = {"variant": variant, "seed": seed, "elbo": elbo, "rec_error": 0.1,
            "rec_to_curve_large": 0.1, "data_to_curve_large": 0.15, "energy_samples": 0.01,
            "trace": {"sigma": np.exp(-np.linspace(0, 3, 200)),
                      "loss": -np.linspace(0, 3, 200)}}
    base.update(extra)
    return base


def verdicts(results):
    return {c.split()[0]: h for c, h, _ in claims(results)}


def test_claims_hold_on_results_that_satisfy_them():
    results = []
    for s in range(4):
        results += [fake("F-VAE sigma=1", s, -2.8, rec_error=0.9, rec_to_curve_large=0.05),
                    fake("F-VAE sigma=0.01", s, -2.2, energy_samples=0.3),
                    fake("LS-VAE", s, -1.6 - 0.01 * s), fake("LV-VAE", s, -1.2),
                    fake("F*-VAE", s, -2.0), fake("LS replay", s, -1.6 - 0.01 * s + 0.001)]
    v = verdicts(results)
    assert v == {"(a)": True, "(a2)": True, "(b)": True, "(c)": True, "(d)": True, "(e)": True}


def test_claims_fail_when_the_numbers_say_so():
    results = []
    for s in range(4):
        results += [fake("F-VAE sigma=1", s, -1.0), fake("F-VAE sigma=0.01", s, -2.2),
                    fake("LS-VAE", s, -1.6), fake("LV-VAE", s, -1.7), fake("F*-VAE", s, -1.5),
                    fake("LS replay", s, -1.9 + 0.02 * s,
                         trace={"sigma": np.ones(200), "loss": np.zeros(200)})]
    v = verdicts(results)
    assert v["(a)"] is False and v["(b)"] is False and v["(c)"] is False
    assert v["(a2)"] is False  # LS ahead in every seed
    assert v["(d)"] is False  # F-VAE sigma=1 reconstructs as well as sigma=0.01 here


def test_replay_claim_is_inconclusive_when_the_seeds_cannot_tell():
    # a small mean difference with a spread too wide to show equivalence within the margin
    results = []
    for s, d in enumerate((0.15, -0.15, 0.1, -0.12)):
        results += [fake("LS-VAE", s, -1.6), fake("LS replay", s, -1.6 + d)]
    assert verdicts(results)["(c)"] is None


def test_energy_distance_is_zero_for_one_distribution_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1500, 2, generator=g), torch.randn(1500, 2, generator=g)
    same = energy_distance(a, b)
    shifted = energy_distance(a, b + torch.tensor([1.0, 0.0]))
    assert abs(same) < 0.01 and shifted > 0.3


def test_collapse_study_runs_and_writes_outputs(tmp_path):
    argv = ["reproduce", "collapse", *TINY, "--seeds", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    text = (tmp_path / "collapse.md").read_text()
    for setting in ("plain", "init 0.1", "lr 3e-3", "warm 0.5", "warm 0", "half warm"):
        assert f"| manifold2d | LS-VAE | {setting} |" in text
        assert f"| spiral2d | LV-VAE | {setting} |" in text
    assert (tmp_path / "collapse-spiral2d.png").exists()


def test_half_spread_start_is_half_the_collapsed_sigma():
    from pyro_lvae.datasets import spiral2d
    from pyro_lvae.experiments.studies.collapse import spread

    # the collapsed solution's sigma is the coordinates' root-mean-square spread
    assert spread(spiral2d) == pytest.approx(0.34, abs=0.01)
    assert spread(lambda n, generator: 0.3 * torch.randn(n, 2, generator=generator)) == (
        pytest.approx(0.3, rel=0.02))


def test_collapse_figure_with_one_setting():
    from pyro_lvae.experiments.plots import collapse_figure

    runs = [{"setting": "half warm", "variant": v, "trace_step": [0, 1, 2],
             "trace_kl": [0.0, 0.5, 1.0], "trace_sigma": [1.0, 0.5, 0.2]}
            for v in ("learned-scalar", "learned-vector")]
    fig = collapse_figure(runs, "spiral2d")
    kl_axes, sigma_axes = fig.axes[0], fig.axes[1]
    assert len(fig.axes) == 2 and len(kl_axes.lines) == 2 and len(sigma_axes.lines) == 2


def test_spiral2d_is_smaller_than_sigma_one():
    from pyro_lvae.datasets import spiral2d

    x = spiral2d(20000, torch.Generator().manual_seed(3))
    assert x.shape == (20000, 2)
    assert x.std(0).max() < 0.4


@pytest.mark.parametrize("study", ["manifold", "collapse"])
def test_reproduce_rejects_non_positive_sizes(study, tmp_path, capsys):
    assert main(["reproduce", study, "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert "--seeds >= 1" in capsys.readouterr().err


def test_held_out_probe_records_the_elbo_without_changing_training():
    study = ManifoldStudy.quick(seeds=1, steps=300, hidden=8, blocks=1, eval_points=200,
                                iwae_points=20, iwae_samples=5)
    job = next(j for j in study.first_jobs() if j["variant"] == "LV-VAE")
    plain = manifold.run_job(job)
    probed = manifold.run_job({**job, "eval_every": 100, "min_scale": 1e-3})
    assert [step for step, _ in probed["elbo_trace"]] == [100, 200, 300]
    assert all(np.isfinite(e) and e < 5 for _, e in probed["elbo_trace"])
    # the same training: same final sigma and held-out ELBO to the last digits
    assert probed["final_sigma"] == plain["final_sigma"]
    assert probed["elbo"] == pytest.approx(plain["elbo"], abs=1e-6)
    floored = manifold.run_job({**job, "min_scale": 0.2})
    assert min(floored["sigma_moderate"], floored["sigma_small"]) >= 0.2


def test_learned_variants_rerun_with_averaged_weights_and_a_schedule(tmp_path):
    out = tmp_path / "tools"
    argv = ["reproduce", "manifold", *TINY, "--out", str(out), "--learned-only",
            "--average", "ema:0.9", "--lr-schedule", "cosine"]
    assert main(argv) == 0
    import csv
    with open(out / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert sorted({r["variant"] for r in runs}) == ["LS replay", "LS-VAE", "LV-VAE"]
    # measured on the averaged model; the last weights' ELBO beside it, and different
    for r in runs:
        assert float(r["elbo"]) != pytest.approx(float(r["last_weights_elbo"]), abs=1e-6)
    assert "(a2) LV-VAE > LS-VAE" in (out / "reproduction.md").read_text()
    assert main(["reproduce", "sphere", "--average", "ema", *TINY]) != 0  # manifold only
