"""Integer columns of tables are quantised data: the mass of a Normal on their lattice, said by
``tabular fit``, with models fitted before (integer columns as Normal densities) still loading."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import pyro_lvae as lv
from pyro_lvae.cli import main
from pyro_lvae.observations.discrete import lattice_normal_log_prob
from pyro_lvae.tabular import TableTransformer, TabularModel


def table(n=80, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"height": np.round(rng.normal(170, 10, n), 1),
                         "count": rng.integers(0, 6, n),
                         "klass": rng.choice([0, 1, 2], n),
                         "colour": rng.choice(["red", "blue", "green"], n)})


def test_integer_columns_keep_their_lattice_in_the_schema():
    df = table()
    t = TableTransformer.fit(df)
    assert t.integer_columns == ["count", "klass"]
    kind, step, low, high = t.schema()[1]
    c = t.columns[1]
    assert kind == "integer" and step == pytest.approx(1 / c.std)
    assert low == pytest.approx((0 - c.mean) / c.std)
    assert high == pytest.approx((5 - c.mean) / c.std)
    assert t.schema()[0] == ["continuous"]
    # the encoded values lie on the lattice
    x = t.transform(df)[:, 1]
    steps = (x - low) / step
    assert torch.allclose(steps, steps.round(), atol=1e-4)
    assert TableTransformer.fit(df, integers="continuous").schema()[1] == ["continuous"]
    assert TableTransformer.fit(df, continuous="quantile").integer_columns == []
    with pytest.raises(lv.ConfigError, match="integers"):
        TableTransformer.fit(df, integers="round")


def test_lattice_masses_sum_to_one_and_match_the_cdf():
    step, low, high = 0.4, -1.0, 1.0  # values -1, -0.6, ..., 1.0
    values = torch.arange(6, dtype=torch.float64) * step + low
    loc = torch.tensor([[-3.0], [0.1], [0.5], [7.0]], dtype=torch.float64)
    scale = torch.tensor([[0.05], [0.3], [2.0], [0.5]], dtype=torch.float64)
    t = torch.tensor
    log_p = lattice_normal_log_prob(values, loc, scale, t(step), t(low), t(high))
    assert torch.isfinite(log_p).all() and (log_p <= 0).all()
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(4, dtype=torch.float64))
    n = torch.distributions.Normal(loc, scale)
    upper = n.cdf(values[:-1] + step / 2)
    want = torch.cat([upper, torch.ones_like(loc)], -1) - torch.cat([0 * loc, upper], -1)
    ok = want > 1e-8
    assert float((log_p[ok] - want[ok].log()).abs().max()) < 1e-6
    one = lattice_normal_log_prob(t([2.0]), t([0.0]), t([1.0]), t(1.0), t(2.0), t(2.0))
    assert float(one) == 0.0  # a column with one value


def test_a_learned_sigma_on_an_integer_column_cannot_push_its_term_above_zero():
    """On a lattice a Normal density grows without bound as sigma falls; the lattice mass is at
    most 1: the integer column's negative log-likelihood stays >= 0 at any sigma."""
    schema = [["integer", 1.0, 0.0, 3.0], ["continuous"]]
    x = torch.tensor([[0.0, 0.3], [1.0, -0.2], [3.0, 0.1]])
    for sigma in (1.0, 1e-2, 1e-3):
        obs = lv.MixedObservation(schema, "fixed", sigma=sigma)
        out = x.clone()  # the decoder's means at the data
        p = obs(out, 1)
        integer_term = p.log_prob(x) - torch.distributions.Normal(x[:, 1], sigma).log_prob(x[:, 1])
        assert (integer_term <= 1e-6).all()
    obs.check_support(x)
    obs.check_support(torch.tensor([[5.0, 0.0]]))  # beyond the range: in the open top bin
    beyond = obs(torch.zeros(1, 2), 1).log_prob(torch.tensor([[5.0, 0.0]]))
    top = obs(torch.zeros(1, 2), 1).log_prob(torch.tensor([[3.0, 0.0]]))
    torch.testing.assert_close(beyond, top)
    with pytest.raises(lv.DataError, match="integer column 0"):
        obs.check_support(torch.tensor([[0.5, 0.0]]))


def test_draws_of_integer_columns_are_lattice_values():
    obs = lv.MixedObservation([["integer", 0.5, -1.0, 1.0], ["continuous"]], "fixed", sigma=2.0)
    torch.manual_seed(0)
    draws = obs(torch.zeros(500, 2), 1).sample()
    v = draws[:, 0]
    assert set(torch.unique(v).tolist()) <= {-1.0, -0.5, 0.0, 0.5, 1.0}
    assert int((v == -1.0).sum()) > 50  # the open edge bin collects the lower tail
    obs.check_support(draws)


def test_a_model_fitted_before_integer_columns_were_discrete_still_loads(tmp_path):
    df = table()
    old = TabularModel.fit(df, integers="continuous", steps=5, hidden=8, blocks=1, seed=0)
    old.save(tmp_path / "m")
    state = json.loads((tmp_path / "m" / "transform.json").read_text())
    state.pop("integers")  # as the earlier version wrote it
    state["version"] = 1
    (tmp_path / "m" / "transform.json").write_text(json.dumps(state))
    again = TabularModel.load(tmp_path / "m")
    assert again.transformer.integer_columns == []
    x = again.encode(df)
    z = torch.zeros(len(x), again.vae.latent_dim)
    torch.testing.assert_close(again.vae.likelihood(z).log_prob(x),
                               old.vae.likelihood(z).log_prob(x))


def test_tabular_fit_says_which_columns_were_read_as_integers(tmp_path, capsys):
    table(60).to_csv(tmp_path / "data.csv", index=False)
    run = tmp_path / "model"
    assert main(["tabular", "fit", str(tmp_path / "data.csv"), "--out", str(run), "--steps",
                 "10", "--hidden", "8", "--blocks", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "read as integers (the mass of a Normal on their integer values): count, klass" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["integer_columns"] == ["count", "klass"]
    model = TabularModel.load(run)
    assert model.vae.observation.schema[1][0] == "integer"
    synth = model.sample(40, seed=0)
    assert set(synth["klass"]) <= {0, 1, 2}


def test_tabular_fit_can_keep_integer_columns_continuous(tmp_path, capsys):
    table(60).to_csv(tmp_path / "data.csv", index=False)
    run = tmp_path / "model"
    assert main(["tabular", "fit", str(tmp_path / "data.csv"), "--out", str(run), "--steps",
                 "5", "--hidden", "8", "--blocks", "1", "--integers", "continuous",
                 "--quiet"]) == 0
    assert "read as integers" not in capsys.readouterr().out
    assert TabularModel.load(run).vae.observation.schema[1] == ["continuous"]
