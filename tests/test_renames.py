"""Names that said the wrong thing were renamed; the former names work for one release, as the very
same objects, with a DeprecationWarning that names the new one (CHANGELOG.md lists them)."""

import importlib
import math
import warnings

import pytest
import torch

import pyro_lvae as lv

RENAMED = [
    ("pyro_lvae", "scale_latents", "weight_latents"),
    ("pyro_lvae", "Constant", "ConstantBeta"),
    ("pyro_lvae", "Sigmoid", "SigmoidWarmup"),
    ("pyro_lvae", "Cyclical", "CyclicalWarmup"),
    ("pyro_lvae.annealing", "scale_latents", "weight_latents"),
    ("pyro_lvae.annealing", "Schedule", "BetaSchedule"),
    ("pyro_lvae.annealing", "Constant", "ConstantBeta"),
    ("pyro_lvae.annealing", "Sigmoid", "SigmoidWarmup"),
    ("pyro_lvae.annealing", "Cyclical", "CyclicalWarmup"),
    ("pyro_lvae.datasets", "Scale", "UnitLevels"),
    ("pyro_lvae.datasets.images", "Scale", "UnitLevels"),
    ("pyro_lvae.evaluate", "elbo", "elbo_parts"),
]


@pytest.mark.parametrize("module, old, new", RENAMED)
def test_a_former_name_is_the_new_object_and_warns_with_the_new_name(module, old, new):
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=rf"{module}\.{old} is deprecated; use "
                                                rf"{module}\.{new}"):
        alias = getattr(mod, old)
    assert alias is getattr(mod, new)
    assert new in mod.__all__ and old not in mod.__all__
    with pytest.warns(DeprecationWarning):
        exec(f"from {module} import {old}", {})


def test_an_unknown_name_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'Linear'"):
        lv.annealing.Linear  # noqa: B018
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not hasattr(lv, "nothing_here")


def test_the_renamed_beta_schedules_behave_as_before():
    with pytest.warns(DeprecationWarning):
        old = [lv.Constant(0.4), lv.Sigmoid(600), lv.Cyclical(100, ramp=0.5)]
    new = [lv.ConstantBeta(0.4), lv.SigmoidWarmup(600), lv.CyclicalWarmup(100, ramp=0.5)]
    for a, b in zip(old, new, strict=True):
        assert a == b and [a(s) for s in range(0, 1300, 50)] == [b(s) for s in range(0, 1300, 50)]
    assert isinstance(lv.GECO(1.0), lv.BetaSchedule)
    assert lv.parse_schedule("sigmoid:600") == lv.SigmoidWarmup(600)


def test_the_pixel_transform_of_8_bit_levels_keeps_its_former_command_line_name():
    from pyro_lvae.datasets import PIXEL_TRANSFORMS, UnitLevels, bits_per_dim

    assert list(PIXEL_TRANSFORMS) == ["dequantize", "unit-levels", "binarize"]
    with pytest.warns(DeprecationWarning, match="'scale' is deprecated; use 'unit-levels'"):
        assert type(PIXEL_TRANSFORMS.build("scale")) is UnitLevels
    with pytest.warns(DeprecationWarning):
        assert bits_per_dim(784 * math.log(2), 784, "scale", discrete=True) == 1.0
    assert bits_per_dim(784 * math.log(2), 784, "unit-levels", discrete=True) == 1.0
    k = torch.tensor([0, 51, 255], dtype=torch.uint8)
    assert UnitLevels()(k).tolist() == pytest.approx([0.0, 0.2, 1.0])


def test_the_command_line_takes_the_former_pixel_name_and_a_saved_run_with_it_reads_quietly():
    from pyro_lvae.cli import build_parser
    from pyro_lvae.experiments.tasks import ImageTask

    args = build_parser().parse_args(["train", "--dataset", "mnist", "--pixels", "scale"])
    assert args.pixels == "scale"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a run saved with the former name is no new use of it
        transform = ImageTask("mnist")._transform({"pixels": "scale"})
    assert transform.name == "unit-levels"


def test_the_help_of_the_renamed_choices_lists_the_current_names(capsys):
    from pyro_lvae.cli import main

    for argv in (["train", "--help"], ["tabular", "fit", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
    out = capsys.readouterr().out
    assert "{dequantize,unit-levels,binarize}" in out
    assert "{fixed,learned-scalar,learned-channel,learned-vector,tvae}" in out
    assert "geco:TARGET[:RATE" in out  # --beta-schedule lists every registered form
