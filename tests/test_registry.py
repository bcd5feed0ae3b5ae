"""One place maps a variant's name to its observation model: ``pyro_lvae.observations.build``;
the table model composes the Normal models and still loads checkpoints of its earlier layout."""

import ast
import math
from pathlib import Path

import pytest
import torch

import pyro_lvae as lv
from pyro_lvae import observations
from pyro_lvae.annealing import BETA_SCHEDULES
from pyro_lvae.datasets import PIXEL_TRANSFORMS
from pyro_lvae.observations import OBSERVATIONS
from pyro_lvae.priors import PRIORS
from pyro_lvae.registry import Registry
from pyro_lvae.tabular import SIGMA_MODES, MixedObservation
from pyro_lvae.training.averaging import AVERAGES
from pyro_lvae.training.schedules import LR_SCHEDULES

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
    if mode == "learned-channel":
        return {"scale_unconstrained": torch.log(sigma - 1e-3)}, sigma
    if mode == "tvae":
        return {"raw_scale": torch.tensor([0.4, 3.0])}, torch.tensor([0.4, 1.0])  # clamped
    return {}, None  # learned-vector: sigma from the decoder output


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
    assert len(grads) == (0 if mode in ("fixed", "learned-vector") else 1)


def test_a_table_without_continuous_columns_has_only_discrete_terms():
    for mode in SIGMA_MODES:
        obs = MixedObservation([["categorical", 3], ["binary"]], mode)
        assert obs.output_shape((2,)) == (4,)
        out = torch.zeros(2, 4)
        expected = 2 * (math.log(1 / 3) + math.log(0.5))
        assert obs(out, 1).log_prob(torch.tensor([[1.0, 0.0]] * 2)).sum().item() == \
            pytest.approx(expected)


# ---- the registry helper: one way to map a name to a class, one spec grammar ---------------
def _shapes():
    shapes = Registry("shape")

    @shapes.register("box", aliases=("cube",))
    class Box:
        def __init__(self, width: float, height: float = 1.0, label: str = "plain",
                     depth: float | None = None) -> None:
            self.width, self.height, self.label, self.depth = width, height, label, depth

    @shapes.register("dot")
    def dot() -> str:
        return "dot"

    return shapes, Box


def test_a_registry_is_a_mapping_of_its_names():
    shapes, box = _shapes()
    assert list(shapes) == ["box", "dot"] and shapes.names() == ("box", "dot")
    assert shapes["box"] is box and len(shapes) == 2
    assert "cube" in shapes and "nope" not in shapes and 3 not in shapes
    assert shapes.aliases() == {"cube": "box"}
    assert shapes.settings_of("box") == ("width", "height", "label", "depth")
    assert shapes.settings_of("dot") == ()


def test_a_deprecated_alias_builds_the_same_thing_and_warns_with_the_new_name():
    shapes, box = _shapes()
    with pytest.warns(DeprecationWarning, match="'cube' is deprecated; use 'box'"):
        made = shapes.build("cube", width=2.0)
    assert type(made) is box and made.width == 2.0
    with pytest.warns(DeprecationWarning, match="use 'box'"):
        assert shapes.parse("cube:3").width == 3
    assert shapes.resolve("cube", warn=False) == "box"


def test_registry_errors_name_the_thing_the_setting_and_what_it_takes():
    shapes, _ = _shapes()
    with pytest.raises(lv.ConfigError, match=r"unknown shape 'ball'; expected one of box, dot"):
        shapes.build("ball")
    with pytest.raises(lv.ConfigError, match=r"the shape 'box' \(Box\) does not take colour; it "
                                             r"takes width, height, label, depth"):
        shapes.build("box", width=1.0, colour="red")
    with pytest.raises(lv.ConfigError, match=r"the shape 'box' \(Box\) needs width"):
        shapes.build("box")
    with pytest.raises(lv.ConfigError, match="'dot' does not take width; it takes no settings"):
        shapes.build("dot", width=1.0)
    with pytest.raises(lv.ConfigError, match="a shape has no display properties"):
        shapes.describe("box")
    with pytest.raises(lv.ConfigError, match="non-empty text without ':'"):
        shapes.add("a:b", dict)


def test_parse_reads_positional_numbers_in_the_class_order_and_spec_writes_them_back():
    shapes, _ = _shapes()
    assert shapes.form("box") == "box:WIDTH[:HEIGHT[:LABEL[:DEPTH]]]"
    made = shapes.parse(" box:2:0.5:tall:7 ")
    assert (made.width, made.height, made.label, made.depth) == (2, 0.5, "tall", 7)
    assert isinstance(made.width, int) and isinstance(made.height, float)
    assert shapes.spec(made) == "box:2:0.5:tall:7"
    made = shapes.parse("box:1e-3::")  # an empty argument takes the default
    assert (made.width, made.height, made.label, made.depth) == (1e-3, 1.0, "plain", None)
    assert shapes.spec(made) == "box:0.001:1:plain:"
    assert shapes.parse(shapes.spec(made)).__dict__ == made.__dict__
    exact = shapes.build("box", width=1 / 3)
    assert shapes.parse(shapes.spec(exact)).width == 1 / 3  # written exactly
    assert shapes.parse("dot") == "dot"


@pytest.mark.parametrize("text, message", [
    ("ball:1", r"unknown shape 'ball:1'; expected one of box:WIDTH\[:HEIGHT"),
    ("box", r"shape 'box' has the wrong number of arguments; expected box:WIDTH\["),
    ("box:1:2:a:4:5", "wrong number of arguments"),
    ("box:x", r"shape 'box:x' has a non-numeric argument 'x' for WIDTH; expected box:WIDTH"),
    ("2", "unknown shape '2'"),
])
def test_parse_refuses_a_bad_spec_and_says_the_form(text, message):
    shapes, _ = _shapes()
    with pytest.raises(lv.ConfigError, match=message):
        shapes.parse(text)


def test_spec_refuses_what_it_cannot_write():
    shapes, box = _shapes()
    with pytest.raises(lv.ConfigError, match="is not a registered shape"):
        shapes.spec(object())
    with pytest.raises(lv.ConfigError, match="has no spec: its width is list"):
        shapes.spec(box([1, 2]))
    with pytest.raises(lv.ConfigError, match="its label is str 'a:b'"):
        shapes.spec(box(1.0, label="a:b"))


def test_a_bare_number_stands_for_the_registrys_number_entry():
    schedule = lv.parse_schedule("0.25")
    assert type(schedule) is BETA_SCHEDULES["constant"] and schedule(7) == 0.25
    with pytest.raises(lv.ConfigError, match="expected a number or one of constant"):
        lv.parse_schedule("warm")


# ---- every registered thing round-trips ---------------------------------------------------------
#: every registry of the package (a registry found by the scan below but not here fails)
REGISTRIES = {
    "observations": OBSERVATIONS,
    "priors": PRIORS,
    "beta schedules": BETA_SCHEDULES,
    "learning-rate schedules": LR_SCHEDULES,
    "weight averaging": AVERAGES,
    "table sigma modes": SIGMA_MODES,
    "pixel transforms": PIXEL_TRANSFORMS,
}
#: settings for each entry, away from the defaults where there are some (an entry not listed
#: builds from no settings: a new entry that needs some fails naming them)
EXAMPLES = {
    ("observations", "fixed"): {"scale": 0.3},
    ("observations", "learned-scalar"): {"init_scale": 0.7, "min_scale": 0.01},
    ("observations", "learned-channel"): {"channels": 3, "init_scale": 0.5},
    ("observations", "learned-vector"): {"min_scale": 0.02, "beta_nll": 0.5},
    ("observations", "scheduled"): {"schedule": [1.0, 0.5, 0.25]},
    ("observations", "discretized-logistic-mixture"): {"components": 3},
    ("observations", "low-rank"): {"rank": 2},
    ("observations", "student-t"): {"init_df": 4.0},
    ("observations", "mixed"): {"schema": [["continuous"], ["binary"], ["categorical", 3]],
                                "sigma_mode": "tvae"},
    ("priors", "mixture"): {"components": 3, "min_scale": 0.01},
    ("priors", "vamp"): {"components": 7},
    ("priors", "flow"): {"transform": "spline", "layers": 2, "hidden": 8, "bins": 5},
    ("beta schedules", "constant"): {"value": 0.4},
    ("beta schedules", "linear"): {"steps": 300, "start": 0.25, "end": 0.75},
    ("beta schedules", "sigmoid"): {"midpoint": 200},
    ("beta schedules", "cyclical"): {"period": 50, "ramp": 0.3, "end": 0.9},
    ("beta schedules", "geco"): {"target": -2.5, "rate": 0.003, "smoothing": 0.9,
                                 "min_beta": 0.01, "max_beta": 100.0},
    ("learning-rate schedules", "cosine"): {"final": 0.1},
    ("learning-rate schedules", "step"): {"every": 7, "gamma": 0.25},
    ("weight averaging", "ema"): {"decay": 0.99, "start": 5, "every": 2},
    ("weight averaging", "swa"): {"start": 10},
    ("pixel transforms", "dequantize"): {"levels": 128},
    ("pixel transforms", "binarize"): {"threshold": 0.25, "stochastic": True},
    ("table sigma modes", "fixed"): {"columns": 2, "sigma": 0.3, "min_scale": 1e-3,
                                     "max_scale": 1.0},
}
for _name in ("learned-scalar", "learned-channel", "learned-vector", "tvae"):
    EXAMPLES["table sigma modes", _name] = {"columns": 2, "sigma": 0.5, "min_scale": 1e-3,
                                           "max_scale": 1.0}
ENTRIES = [(kind, name) for kind, registry in REGISTRIES.items() for name in registry]


def test_every_registry_of_the_package_is_covered():
    import importlib
    import pkgutil

    import pyro_lvae

    found = set()
    for info in pkgutil.walk_packages(pyro_lvae.__path__, "pyro_lvae."):
        if info.name.startswith(("pyro_lvae.experiments", "pyro_lvae.cli")):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional extra that is not installed
            continue
        found |= {id(v) for v in vars(module).values() if isinstance(v, Registry)}
    assert found == {id(r) for r in REGISTRIES.values()}


@pytest.mark.parametrize("kind, name", ENTRIES)
def test_every_registered_thing_builds_and_its_spec_or_config_round_trips(kind, name):
    registry = REGISTRIES[kind]
    made = registry.build(name, **EXAMPLES.get((kind, name), {}))
    if kind == "table sigma modes":  # a mode makes the Normal model of the continuous columns
        assert isinstance(made, lv.Observation)
        assert name == "tvae" or type(made) is OBSERVATIONS[name]
        return
    if made is None:  # no averaging
        assert registry.parse(name) is None
        return
    if hasattr(made, "config"):  # observation models and priors: the saved form round-trips
        rebuild = (observations.observation_from_config if kind == "observations"
                   else lv.priors.prior_from_config)
        again = rebuild(made.config())
        assert type(again) is type(made) and again.config() == made.config()
    try:
        text = registry.spec(made)
    except lv.ConfigError as e:  # a tensor or a table schema is no NAME:ARG text
        assert kind == "observations" and name in ("scheduled", "mixed"), e
        assert "has no spec" in str(e)
        return
    assert text.split(":")[0] == name
    again = registry.parse(text)
    assert type(again) is type(made) and registry.spec(again) == text
    assert again.__dict__ == made.__dict__ if not isinstance(made, torch.nn.Module) \
        else again.config() == made.config()
    if kind == "beta schedules":
        assert [again(s) for s in range(0, 600, 17)] == [made(s) for s in range(0, 600, 17)]
        assert lv.parse_schedule(made.spec()).spec() == text


def test_geco_spec_parses_back_to_the_same_geco():
    geco = lv.GECO(1.0)
    assert geco.spec() == "geco:1:0.01:0.99:0.001:1000:1000"
    again = lv.parse_schedule(geco.spec())
    assert type(again) is lv.GECO and again.spec() == geco.spec()
    assert lv.parse_schedule("geco:1.0:0.01:0.99").spec() == geco.spec()  # the earlier form


def test_specs_written_before_keep_their_text():
    """Checkpoints compare the averaging's spec on resume; configs hold the beta's."""
    from pyro_lvae.training.averaging import WeightAverage, parse_average

    assert WeightAverage("ema", decay=0.999).spec() == "ema:0.999:0:1"
    assert parse_average("swa:500").spec() == "swa:500:1"
    assert lv.parse_schedule("linear:1000:0.5:1").spec() == "linear:1000:0.5:1"
    assert lv.parse_schedule("sigmoid:600").spec() == "sigmoid:600:100:1"
    assert lv.parse_schedule("0.5").spec() == "constant:0.5"


def test_learning_rate_schedules_by_object_equal_those_by_name():
    from pyro_lvae.training.schedules import CosineDecay, make_scheduler

    rates = []
    for schedule in ("cosine:0.1", CosineDecay(0.1)):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        sched = make_scheduler(schedule, opt, steps=6, warmup=2)
        rates.append([])
        for _ in range(6):
            rates[-1].append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    assert rates[0] == rates[1] and rates[0][-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(
        math.pi * 3 / 4)))
    assert repr(LR_SCHEDULES.parse("step:4")) == "StepDecay(every=4, gamma=0.5)"


# ---- one name per thing: the table model's sigma modes are the observation models' names ----
def test_the_table_sigma_modes_take_the_observation_models_names():
    assert set(SIGMA_MODES) - {"tvae"} <= set(OBSERVATIONS)
    assert SIGMA_MODES.aliases() == {"learned-column": "learned-channel",
                                     "decoder": "learned-vector"}


@pytest.mark.parametrize("old, new", [("learned-column", "learned-channel"),
                                      ("decoder", "learned-vector")])
def test_a_former_sigma_mode_name_works_warns_and_loads_from_a_saved_config(old, new):
    with pytest.warns(DeprecationWarning, match=f"'{old}' is deprecated; use '{new}'"):
        obs = MixedObservation(SCHEMA, old)
    assert obs.sigma_mode == new and type(obs.continuous) is OBSERVATIONS[new]
    saved = {**obs.config(), "sigma_mode": old}  # a model saved before the rename
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loading a saved file is no use of the old name
        again = observations.observation_from_config(saved)
    assert again.config() == obs.config()
    from pyro_lvae.cli import build_parser

    args = build_parser().parse_args(["tabular", "fit", "t.csv", "--out", "o", "--sigma-mode",
                                      old])
    assert args.sigma_mode == old  # the command line still takes it
