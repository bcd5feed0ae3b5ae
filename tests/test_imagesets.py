"""The studies' small image sets: fixed splits on the 8-bit grid, labels, clear errors."""

import pytest
import torch

from pyro_lvae.errors import ConfigError, DataError
from pyro_lvae.experiments.studies.imagesets import digits_8bit, load_split, upscaled


def test_digits_split_is_fixed_on_the_8bit_grid_with_labels():
    a, b = load_split("digits"), load_split("digits")
    assert a.train.shape == (1257, 64) and a.test.shape == (540, 64) and a.shape == (1, 8, 8)
    assert torch.equal(a.train, b.train) and torch.equal(a.test_labels, b.test_labels)
    k = a.train * 255
    assert torch.allclose(k, k.round(), atol=1e-3)  # on the grid j / 255
    assert len(torch.unique(torch.cat([a.train, a.test]))) == 17
    x, y = digits_8bit(return_labels=True)
    assert set(y.tolist()) == set(range(10))
    # the split partitions the 1797 digits: every image appears once
    assert torch.cat([a.train_labels, a.test_labels]).bincount().sum() == len(y)
    assert torch.allclose(torch.cat([a.train, a.test]).sum(0), x.sum(0), atol=1e-3)


def test_a_validation_split_is_held_out_of_the_training_digits_and_leaves_the_test_alone():
    plain, held = load_split("digits"), load_split("digits", validation_size=250)
    assert held.train.shape == (1007, 64) and held.validation.shape == (250, 64)
    assert torch.equal(held.test, plain.test) and torch.equal(held.test_labels, plain.test_labels)
    # training and validation digits partition the 1257 training digits, in place
    assert torch.equal(torch.cat([held.train, held.validation]), plain.train)
    assert torch.equal(torch.cat([held.train_labels, held.validation_labels]),
                       plain.train_labels)
    assert plain.validation is None
    with pytest.raises(ConfigError, match="validation split of 700"):
        load_split("digits", validation_size=700)
    big = upscaled(held, 28)
    assert big.shape == (1, 28, 28) and big.validation.shape == (250, 784)
    k = big.train * 255
    assert torch.allclose(k, k.round(), atol=1e-3) and 0 <= big.train.min() <= big.train.max() <= 1
    assert torch.equal(big.validation_labels, held.validation_labels)


def test_fashion_mnist_needs_its_files_and_a_root(tmp_path):
    with pytest.raises(ConfigError, match="--data-root"):
        load_split("fashion-mnist")
    with pytest.raises(DataError, match="not found"):
        load_split("fashion-mnist", tmp_path)
    with pytest.raises(ConfigError, match="unknown image set"):
        load_split("cifar")


def test_reproduce_checks_image_flags_before_any_run(tmp_path, capsys):
    from pyro_lvae.cli import main

    out = str(tmp_path / "o")
    for argv, match in ((["--images", "cifar"], "unknown image set"),
                        (["--images", "fashion-mnist"], "needs --data-root"),
                        (["--data-root", str(tmp_path / "nowhere")], "no such folder")):
        assert main(["reproduce", "observations", "--quick", "--out", out, *argv]) == 2
        assert match in capsys.readouterr().err
    assert main(["reproduce", "sphere", "--quick", "--out", out, "--images", "digits"]) == 2
    assert "priors, observations and blur" in capsys.readouterr().err


def test_levels_inverts_the_8bit_grid_and_clamps():
    from pyro_lvae.experiments.studies.imagesets import levels

    k = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(levels(k.float() / 255), k)
    assert levels(torch.tensor([-0.2, 1.3])).tolist() == [0, 255]
