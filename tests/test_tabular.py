"""Tables: exact encoding, the mixed observation model, the command line, the metrics."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributions as td

import pyro_lvae as lv
from pyro_lvae.cli import main
from pyro_lvae.tabular import TableTransformer, TabularModel
from pyro_lvae.tabular import metrics as M


def table(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "height": np.round(rng.normal(170, 10, n), 1),
        "count": rng.integers(0, 20, n),
        "flag": rng.random(n) > 0.5,
        "colour": rng.choice(["red", "green", "blue"], n),
        "grade": rng.choice([1, 2, 3, 4], n),
        "sex": rng.choice([0.0, 1.0], n),
        "price": np.round(np.exp(rng.normal(2, 1, n)), 2),
    })


@pytest.mark.parametrize("continuous", ["standard", "quantile"])
def test_round_trip_is_exact_with_types_and_categories(continuous):
    df = table()
    t = TableTransformer.fit(df, categorical=["grade"], continuous=continuous)
    kinds = {c.name: c.kind for c in t.columns}
    assert kinds == {"height": "continuous", "count": "integer", "flag": "binary",
                     "colour": "categorical", "grade": "categorical", "sex": "binary",
                     "price": "continuous"}
    back = t.inverse_transform(t.transform(df))
    pd.testing.assert_frame_equal(back, df)


def test_inverse_clips_to_the_observed_range_and_rounds_integers():
    df = table()
    t = TableTransformer.fit(df)
    x = t.transform(df)
    x[:, 0] = 100.0  # far outside
    x[:, 1] = 0.37
    back = t.inverse_transform(x)
    assert (back["height"] == df["height"].max()).all()
    assert back["count"].dtype == df["count"].dtype and back["count"].between(0, 19).all()


def test_state_round_trip(tmp_path):
    t = TableTransformer.fit(table(), continuous="quantile")
    t.save(tmp_path / "t.json")
    again = TableTransformer.load(tmp_path / "t.json")
    assert torch.equal(again.transform(table()), t.transform(table()))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(lv.CheckpointError, match="corrupt"):
        TableTransformer.load(tmp_path / "bad.json")


@pytest.mark.parametrize("make, error, message", [
    (lambda df: df.assign(height=df["height"].where(df.index % 7 != 0)), lv.DataError,
     r"missing values in height \(9\).*--missing drop"),
    (lambda df: df.iloc[:0], lv.DataError, "empty"),
    (lambda df: df.to_numpy()[:, 0], lv.DataError, "2-D"),
    (lambda df: [[1, 2]], lv.DataError, "DataFrame"),
])
def test_bad_tables(make, error, message):
    with pytest.raises(error, match=message):
        TableTransformer.fit(make(table()))


def test_missing_values_can_be_dropped():
    df = table()
    df.loc[[1, 4], "colour"] = None
    t = TableTransformer.fit(df, missing="drop")
    assert len(t.transform(df, missing="drop")) == len(df) - 2


def test_unseen_category_missing_column_and_wrong_type_are_named():
    t = TableTransformer.fit(table())
    with pytest.raises(lv.DataError, match="colour has value.*purple"):
        t.transform(table().assign(colour="purple"))
    with pytest.raises(lv.DataError, match="lacks column.*price"):
        t.transform(table().drop(columns="price"))
    with pytest.raises(lv.DataError, match="height should hold numbers"):
        t.transform(table().assign(height="tall"))
    with pytest.raises(lv.DataError, match="no column named 'nope'"):
        TableTransformer.fit(table(), categorical=["nope"])


def test_mixed_log_density_is_the_sum_of_column_densities():
    schema = [["continuous"], ["binary"], ["categorical", 3], ["continuous"]]
    obs = lv.MixedObservation(schema, "learned-vector", min_scale=0.01)
    assert obs.output_shape((4,)) == (2 + 2 + 1 + 3,)
    out = torch.randn(5, 8)
    x = torch.stack([torch.randn(5), torch.tensor([0.0, 1, 1, 0, 1]),
                     torch.tensor([0.0, 2, 1, 1, 0]), torch.randn(5)], -1)
    p = obs(out, 1)
    assert p.batch_shape == (5,) and p.event_shape == (4,)
    loc, raw, logit, cat = out[:, :2], out[:, 2:4], out[:, 4], out[:, 5:8]
    scale = 0.01 + torch.nn.functional.softplus(raw + math.log(math.expm1(0.99)))
    expected = (td.Normal(loc, scale).log_prob(x[:, [0, 3]]).sum(-1)
                + td.Bernoulli(logits=logit).log_prob(x[:, 1])
                + td.Categorical(logits=cat).log_prob(x[:, 2].long()))
    assert torch.allclose(p.log_prob(x), expected, atol=1e-5)
    draws = p.sample()
    assert set(draws[:, 1].tolist()) <= {0.0, 1.0} and set(draws[:, 2].tolist()) <= {0.0, 1, 2}
    assert torch.equal(p.mode[:, 2], cat.argmax(-1).float())


def test_tvae_sigma_starts_inside_its_clamp_and_learns():
    # at a bound of the clamp no gradient flows: a start there would freeze sigma for good
    for bad in (1.0, 0.01, 5.0):
        with pytest.raises(lv.ConfigError, match="strictly inside"):
            lv.MixedObservation([["continuous"]], "tvae", sigma=bad)
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    model = TabularModel.fit(table, sigma_mode="tvae", latent_dim=2, hidden=16, blocks=1,
                             steps=60, seed=0, device="cpu", progress=False)
    scale = model.vae.observation.raw_scale.detach()
    assert not torch.allclose(scale, torch.full_like(scale, 0.1))


def test_sigma_modes():
    schema = [["continuous"], ["continuous"]]
    out = torch.zeros(3, 2)
    tvae = lv.MixedObservation(schema, "tvae")
    assert torch.allclose(tvae(out, 1).scale, torch.full((3, 2), 0.1))  # CTGAN's start
    with torch.no_grad():
        tvae.raw_scale.fill_(5.0)
    assert torch.allclose(tvae(out, 1).scale, torch.ones(3, 2))  # clamped to [0.01, 1]
    with torch.no_grad():
        tvae.raw_scale.fill_(1e-6)
    assert torch.allclose(tvae(out, 1).scale, torch.full((3, 2), 0.01))
    assert torch.allclose(lv.MixedObservation(schema, "fixed", 0.3)(out, 1).scale,
                          torch.full((3, 2), 0.3))
    scalar = lv.MixedObservation(schema, "learned-scalar", 0.5)
    assert scalar(out, 1).scale.shape == (3, 2)
    with pytest.raises(lv.ConfigError, match="sigma mode"):
        lv.MixedObservation(schema, "per-row")
    with pytest.raises(lv.DataError, match="codes 0..2"):
        lv.MixedObservation([["categorical", 3]]).check_support(torch.tensor([[3.0]]))


def test_tabular_model_fits_samples_saves_and_loads(tmp_path):
    df = table(120)
    model = TabularModel.fit(df, categorical=["grade"], steps=60, hidden=16, blocks=1, seed=0,
                             sigma_mode="learned-vector")
    synth = model.sample(50, seed=1)
    assert list(synth.columns) == list(df.columns)
    assert (synth.dtypes == df.dtypes).all()
    for name in ("colour", "grade", "flag", "sex"):
        assert set(synth[name]) <= set(df[name])
    assert synth["count"].between(df["count"].min(), df["count"].max()).all()
    model.save(tmp_path / "m")
    again = TabularModel.load(tmp_path / "m")
    torch.manual_seed(0)
    a = again.sample(10)
    torch.manual_seed(0)
    b = model.sample(10)
    pd.testing.assert_frame_equal(a, b)


def test_metrics_on_identical_and_shifted_tables():
    df = table(400)
    t = TableTransformer.fit(df, categorical=["grade"])
    assert M.shape_similarity(df, df, t) == {c: pytest.approx(1.0) for c in df.columns}
    assert M.association_difference(df, df, t) == pytest.approx(0.0)
    half = M.detection_auc(df.iloc[:200], df.iloc[200:], t)
    shifted = df.assign(height=df["height"] + 30)
    assert 0.3 < half < 0.7 and M.detection_auc(df, shifted, t) > 0.95
    u = M.utility(df.iloc[:300], df.iloc[300:], df.iloc[:300], t, "colour")
    assert u["metric"] == "accuracy" and u["synthetic"] == u["real"]
    r2 = M.utility(df.iloc[:300], df.iloc[300:], df.iloc[:300], t, "height")
    assert r2["metric"] == "R^2"


def test_cli_fit_and_sample_round_trip(tmp_path, capsys):
    df = table(100)
    df.to_csv(tmp_path / "data.csv", index=False)
    run = tmp_path / "model"
    assert main(["tabular", "fit", str(tmp_path / "data.csv"), "--categorical", "grade",
                 "--out", str(run), "--steps", "40", "--hidden", "16", "--blocks", "1",
                 "--quiet"]) == 0
    for name in ("model.pt", "transform.json", "checkpoint.pt", "history.csv", "summary.json"):
        assert (run / name).exists(), name
    assert main(["tabular", "sample", str(run), "-n", "30", "-o", str(tmp_path / "s.csv"),
                 "--seed", "0", "--discrete", "argmax"]) == 0
    synth = pd.read_csv(tmp_path / "s.csv")
    real = pd.read_csv(tmp_path / "data.csv")
    assert list(synth.columns) == list(real.columns) and len(synth) == 30
    assert (synth.dtypes == real.dtypes).all()
    assert set(synth["colour"]) <= set(real["colour"])
    assert "wrote 30 rows" in capsys.readouterr().out


@pytest.mark.parametrize("content, argv_extra, message", [
    (None, [], "no such file"),
    ("", [], "is empty"),
    ("a,b\n", [], "no rows"),
    ("a,b\n1,x\n,y\n2,z\n", [], "missing values in a (1)"),
    ("a,b\n1,x\n2,y\n", ["--categorical", "c"], "no column named 'c'"),
    ("a,b\n1,x\n2,y\n", ["--steps", "0"], "steps"),
])
def test_cli_tabular_fit_errors(tmp_path, capsys, content, argv_extra, message):
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_text(content)
    code = main(["tabular", "fit", str(path), "--out", str(tmp_path / "m"), "--quiet",
                 *argv_extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_cli_tabular_sample_errors(tmp_path, capsys):
    assert main(["tabular", "sample", str(tmp_path / "none"), "-n", "5", "-o",
                 str(tmp_path / "s.csv")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["tabular", "sample", str(tmp_path), "-n", "0", "-o", "x.csv"]) == 2
    assert "-n >= 1" in capsys.readouterr().err


def test_table_study_job_and_outputs(tmp_path):
    from pyro_lvae.experiments.studies.tables import TableStudy, run_job, write_outputs

    study = TableStudy.quick(steps=30, hidden=16, blocks=1, datasets=("wine",),
                             settings=("TVAE-like",), annealing=("on",))
    (job,) = study.jobs()
    result = run_job(job)
    for key in ("shape_similarity", "association_difference", "detection_auc",
                "utility_synthetic", "utility_real", "elbo", "active_units"):
        assert np.isfinite(result[key]), key
    written = write_outputs(study, [result], tmp_path)
    assert "| wine | TVAE-like | on |" in (tmp_path / "tables.md").read_text()
    assert len(written) == 3
