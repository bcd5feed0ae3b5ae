"""One place maps a variant's name to its observation model: ``pyro_lvae.observations.build``;
the table model composes the Normal models and still loads checkpoints of its earlier layout."""

import ast
import math
from pathlib import Path

import pytest
import torch

import pyro_lvae as lv
from pyro_lvae import observations
from pyro_lvae.observations import OBSERVATIONS
from pyro_lvae.tabular import SIGMA_MODES, MixedObservation

#: settings for the kinds that need some (every other kind builds from none)
REQUIRED = {
    "fixed": {"scale": 0.3},
    "learned-channel": {"channels": 3},
    "scheduled": {"schedule": [1.0, 0.5, 0.25]},
    "mixed": {"schema": [["continuous"], ["binary"], ["categorical", 3]]},
}


@pytest.mark.parametrize("kind", sorted(OBSERVATIONS))
def test_build_makes_the_registered_class_of_every_kind(kind):
    obs = observations.build(kind, **REQUIRED.get(kind, {}))
    assert type(obs) is OBSERVATIONS[kind]
    assert obs.config()["kind"] == kind
    rebuilt = observations.observation_from_config(obs.config())
    assert type(rebuilt) is type(obs) and rebuilt.config() == obs.config()


@pytest.mark.parametrize("kind", sorted(OBSERVATIONS))
def test_every_kind_has_display_properties(kind):
    variant = observations.describe(kind)
    assert variant.kind == kind and variant.label
    assert not (variant.learned and variant.constant)


def test_display_properties_of_the_paper_variants():
    assert [observations.describe(k).label for k in ("fixed", "learned-scalar",
                                                     "learned-vector")] == \
        ["F-VAE", "LS-VAE", "LV-VAE"]
    assert observations.describe("learned-scalar").shared
    assert not observations.describe("learned-vector").shared
    assert not observations.describe("scheduled").learned
    assert observations.describe("bernoulli").binary


def test_build_passes_the_settings_to_the_class():
    obs = observations.build("learned-channel", channels=2, init_scale=0.4, min_scale=0.01)
    assert obs.config() == {"kind": "learned-channel", "channels": 2, "init_scale": 0.4,
                            "min_scale": 0.01}
    assert float(observations.build("fixed", scale=0.5).scale) == 0.5
    assert observations.settings_of("fixed") == ("scale",)
    assert observations.settings_of("bernoulli") == ()


def test_build_refuses_an_unknown_kind_and_lists_the_kinds():
    with pytest.raises(lv.ConfigError, match=r"unknown observation model 'learned'.*fixed"):
        observations.build("learned", init_scale=1.0)
    for ask in (observations.settings_of, observations.describe):
        with pytest.raises(lv.ConfigError, match="unknown observation model 'nope'"):
            ask("nope")


def test_build_refuses_a_setting_the_class_does_not_take_and_names_those_it_takes():
    with pytest.raises(lv.ConfigError,
                       match=r"'fixed' \(FixedScale\) does not take init_scale; it takes scale"):
        observations.build("fixed", scale=0.1, init_scale=1.0)
    with pytest.raises(lv.ConfigError, match="'bernoulli'.*does not take scale; it takes no"):
        observations.build("bernoulli", scale=0.1)


def test_build_names_a_missing_setting():
    with pytest.raises(lv.ConfigError, match=r"'learned-channel'.*needs channels"):
        observations.build("learned-channel", init_scale=0.5)


def test_build_keeps_the_classes_own_checks():
    with pytest.raises(lv.ConfigError, match="init_scale > min_scale"):
        observations.build("learned-scalar", init_scale=0.1, min_scale=0.2)


# ---- no module of the research layer or of the tables branches on a variant's name ----------
ROOT = Path(lv.__file__).parent
NAMES = set(OBSERVATIONS) | set(SIGMA_MODES)


def _string_constants(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        for item in node.elts:
            yield from _string_constants(item)


def _branches_on_a_name(tree):
    """``x == "fixed"``, ``"fixed" != x``, ``x in ("fixed", ...)`` and ``x.startswith("learned")``
    with a registered kind or a table sigma mode."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                hits = NAMES.intersection(_string_constants(operand))
                if hits:
                    yield node.lineno, sorted(hits)[0]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("startswith", "endswith")):
            for arg in node.args:
                for text in _string_constants(arg):
                    if any(name.startswith(text) for name in NAMES):
                        yield node.lineno, text


@pytest.mark.parametrize("package", ["experiments", "tabular"])
def test_no_module_compares_with_a_variant_name(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    found = [f"{path.relative_to(ROOT)}:{line} ({name!r})" for path in files
             for line, name in _branches_on_a_name(ast.parse(path.read_text()))]
    assert not found, ("ask pyro_lvae.observations (build, describe, settings_of) instead of "
                       "comparing with a variant's name: " + ", ".join(found))


def test_the_name_check_finds_a_comparison():
    code = 'if job["obs"] == "fixed" or kind in ("tvae",) or k.startswith("learned"): pass'
    assert [name for _, name in _branches_on_a_name(ast.parse(code))] == \
        ["fixed", "tvae", "learned"]


# ---- the table model: Normal terms by composition, checkpoints of the earlier layout load --------
SCHEMA = [["continuous"], ["binary"], ["continuous"], ["categorical", 3]]


def _old_state(mode):
    """A state_dict as the table model saved it when it held its sigma itself, with the sigma
    per continuous column that it gives."""
    sigma = torch.tensor([0.4, 0.7])
    if mode == "fixed":
        return {"fixed_scale": torch.tensor(0.3)}, torch.full((2,), 0.3)
    if mode == "learned-scalar":
        return {"scale_unconstrained": torch.tensor(math.log(0.4 - 1e-3))}, torch.full((2,), 0.4)
    if mode == "learned-column":
        return {"scale_unconstrained": torch.log(sigma - 1e-3)}, sigma
    if mode == "tvae":
        return {"raw_scale": torch.tensor([0.4, 3.0])}, torch.tensor([0.4, 1.0])  # clamped
    return {}, None  # decoder: sigma from the decoder output


@pytest.mark.parametrize("mode", SIGMA_MODES)
def test_a_table_model_saved_in_the_earlier_layout_loads_with_its_log_density(mode):
    old, sigma = _old_state(mode)
    obs = MixedObservation(SCHEMA, mode)
    assert set(obs.state_dict()) == set(old)  # saved in the same layout as before
    obs.load_state_dict(old)  # strict: every key is used
    out = torch.randn(5, obs.output_shape((4,))[0])
    x = torch.stack([torch.randn(5), torch.tensor([0.0, 1, 1, 0, 1]), torch.randn(5),
                     torch.tensor([0.0, 2, 1, 1, 0])], -1)
    loc, rest = out[:, :2], out[:, 2:]
    if sigma is None:  # the decoder's raw output, then the floor and the start of 1
        raw, rest = rest[:, :2], rest[:, 2:]
        sigma = 1e-3 + torch.nn.functional.softplus(raw + math.log(math.expm1(1 - 1e-3)))
    expected = (torch.distributions.Normal(loc, sigma).log_prob(x[:, [0, 2]]).sum(-1)
                + torch.distributions.Bernoulli(logits=rest[:, 0]).log_prob(x[:, 1])
                + torch.distributions.Categorical(logits=rest[:, 1:]).log_prob(x[:, 3].long()))
    assert torch.allclose(obs(out, 1).log_prob(x), expected, atol=1e-5)
    again = MixedObservation(SCHEMA, mode)
    again.load_state_dict(obs.state_dict())
    assert torch.allclose(again(out, 1).log_prob(x), expected, atol=1e-5)


@pytest.mark.parametrize("mode", SIGMA_MODES)
def test_the_table_model_trains_its_sigma_in_every_mode(mode):
    obs = MixedObservation(SCHEMA, mode, **({"sigma": 0.5} if mode != "tvae" else {}))
    out = torch.randn(5, obs.output_shape((4,))[0], requires_grad=True)
    x = torch.tensor([[0.3, 1.0, -0.2, 2.0]] * 5)
    obs(out, 1).log_prob(x).sum().backward()
    grads = [p.grad for p in obs.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    assert len(grads) == (0 if mode in ("fixed", "decoder") else 1)


def test_a_table_without_continuous_columns_has_only_discrete_terms():
    for mode in SIGMA_MODES:
        obs = MixedObservation([["categorical", 3], ["binary"]], mode)
        assert obs.output_shape((2,)) == (4,)
        out = torch.zeros(2, 4)
        expected = 2 * (math.log(1 / 3) + math.log(0.5))
        assert obs(out, 1).log_prob(torch.tensor([[1.0, 0.0]] * 2)).sum().item() == \
            pytest.approx(expected)
