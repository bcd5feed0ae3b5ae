"""Images: observation models, loaders on files the tests write, transforms, training smoke."""

import json
import math
import struct

import numpy as np
import pytest
import torch
import torch.distributions as td

import pyro_lvae as lv
from pyro_lvae.cli import main
from pyro_lvae.datasets import (
    Binarize,
    CelebAFolder,
    Dequantize,
    UnitLevels,
    bits_per_dim,
    load_images,
)
from pyro_lvae.training.checkpoint import BEST_NAME
from pyro_lvae.training.history import History

SHAPE = (2, 8, 8)


def out(k):
    return torch.randn(5, k * SHAPE[0], *SHAPE[1:], generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("obs", [lv.FixedScale(0.3), lv.LearnedScalarScale(init_scale=1.0),
                                 lv.LearnedChannelScale(2, init_scale=1.0),
                                 lv.LearnedVectorScale(init_scale=1.0),
                                 lv.BernoulliObservation(), lv.ContinuousBernoulliObservation()],
                         ids=lambda o: o.kind)
def test_image_observation_event_shape_follows_the_image(obs):
    p = obs(out(obs.outputs_per_channel), event_dim=3)
    assert p.batch_shape == (5,) and p.event_shape == SHAPE
    x = torch.rand(5, *SHAPE).round() if obs.kind == "bernoulli" else torch.rand(5, *SHAPE)
    assert torch.isfinite(p.log_prob(x)).all()


def test_image_log_densities_match_torch():
    x01 = torch.rand(5, *SHAPE)
    xbin = (x01 > 0.5).float()
    o = out(1)
    bern = lv.BernoulliObservation()(o, 3).log_prob(xbin)
    assert torch.allclose(bern, td.Bernoulli(logits=o).log_prob(xbin).sum((1, 2, 3)))
    cb = lv.ContinuousBernoulliObservation()(o, 3).log_prob(x01)
    assert torch.allclose(cb, td.ContinuousBernoulli(logits=o).log_prob(x01).sum((1, 2, 3)))
    ch = lv.LearnedChannelScale(2, init_scale=0.5)
    with torch.no_grad():
        ch.scale_unconstrained.copy_(torch.log(torch.tensor([0.2, 0.7]) - ch.min_scale))
    scale = torch.tensor([0.2, 0.7]).reshape(2, 1, 1)
    assert torch.allclose(ch(o, 3).log_prob(x01),
                          td.Normal(o, scale).log_prob(x01).sum((1, 2, 3)), atol=1e-4)
    o2 = out(2)
    lvp = lv.LearnedVectorScale(init_scale=1.0, min_scale=0.01)(o2, 3)
    loc, raw = o2[:, :2], o2[:, 2:]
    scale = 0.01 + torch.nn.functional.softplus(raw + math.log(math.expm1(0.99)))
    assert torch.allclose(lvp.log_prob(x01), td.Normal(loc, scale).log_prob(x01).sum((1, 2, 3)),
                          atol=1e-4)


def test_support_errors():
    with pytest.raises(lv.DataError, match="binary"):
        lv.BernoulliObservation().check_support(torch.tensor([0.0, 0.5, 1.0]))
    lv.BernoulliObservation().check_support(torch.tensor([0.0, 1.0]))
    with pytest.raises(lv.DataError, match=r"\[0, 1\]"):
        lv.ContinuousBernoulliObservation().check_support(torch.tensor([0.2, 1.5]))
    with pytest.raises(lv.ConfigError, match="channel"):
        lv.LearnedChannelScale(3)(out(1), 3)


def test_bernoulli_refuses_grey_levels_in_fit():
    vae = lv.conv_vae((1, 8, 8), 4, lv.BernoulliObservation(), width=4, convs=2, blocks=0)
    with pytest.raises(lv.DataError, match="binary"):
        lv.fit(vae, torch.rand(20, 1, 8, 8), steps=1)
    lv.fit(vae, (torch.rand(20, 1, 8, 8) > 0.5).float(), steps=1)


def test_conv_vae_shapes_save_load_and_bad_shapes(tmp_path):
    vae = lv.conv_vae((3, 16, 16), 8, lv.LearnedVectorScale(), width=4, convs=3, blocks=1)
    x = torch.rand(4, 3, 16, 16)
    vae.initialize(x)
    assert vae.reconstruct(x).shape == x.shape and vae.sample(2, "sample").shape == (2, 3, 16, 16)
    vae.save(tmp_path / "c.pt")
    again = lv.load(tmp_path / "c.pt")
    assert torch.equal(again.reconstruct(x), vae.reconstruct(x))
    with pytest.raises(lv.ConfigError, match="divisible"):
        lv.conv_vae((1, 28, 28), 8, lv.FixedScale(1.0), convs=4)
    with pytest.raises(lv.ConfigError, match="image_shape"):
        lv.conv_vae((28, 28), 8, lv.FixedScale(1.0))


def test_paper_shapes_build():
    mnist = lv.conv_vae((1, 28, 28), 256, lv.LearnedVectorScale(), convs=3, blocks=4)
    assert mnist.model.decoder.layers[-1].out_channels == 2
    celeba = lv.conv_vae((3, 64, 64), 2048, lv.FixedScale(1.0), width=8, convs=4, blocks=5)
    assert celeba.sample(1).shape == (1, 3, 64, 64)


def test_transforms_and_bits_per_dim():
    k = torch.tensor([[0, 1, 128, 255]], dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    d = Dequantize()(k, g)
    assert ((d >= k.float() / 256) & (d < (k.float() + 1) / 256)).all()
    assert UnitLevels()(k)[0].tolist() == pytest.approx([0.0, 1 / 255, 128 / 255, 1.0])
    assert Binarize()(k).tolist() == [[0.0, 0.0, 1.0, 1.0]]
    stochastic = Binarize(stochastic=True)(torch.full((20000,), 64, dtype=torch.uint8), g)
    assert stochastic.mean().item() == pytest.approx(64 / 255, abs=0.01)
    assert bits_per_dim(784 * math.log(2), 784, "binarize") == pytest.approx(1.0)
    assert bits_per_dim(0.0, 784, "dequantize") == pytest.approx(8.0)
    assert math.isnan(bits_per_dim(1.0, 784, "unit-levels"))


def write_idx(folder, name, images, labels):
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    (folder / f"{name}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes())
    (folder / f"{name}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes())


@pytest.fixture
def fake_mnist(tmp_path):
    rng = np.random.default_rng(0)
    for ds in ("MNIST", "FashionMNIST"):
        raw = tmp_path / ds / "raw"
        train, test = rng.integers(0, 256, (40, 28, 28)), rng.integers(0, 256, (12, 28, 28))
        train[:, :2] = test[:, :2] = 0  # constant border rows
        write_idx(raw, "train", train, rng.integers(0, 10, 40))
        write_idx(raw, "t10k", test, rng.integers(0, 10, 12))
    return tmp_path


def test_loaders_read_written_idx_files(fake_mnist):
    for name in ("mnist", "fashion-mnist"):
        train = load_images(name, fake_mnist, train=True)
        test = load_images(name, fake_mnist, train=False)
        assert train.shape == (40, 1, 28, 28) and test.shape == (12, 1, 28, 28)
        assert train.dtype == torch.uint8


def test_missing_and_corrupt_image_files(tmp_path, fake_mnist):
    with pytest.raises(lv.DataError, match=r"not found in .*MNIST.*--download"):
        load_images("mnist", tmp_path / "nowhere")
    raw = fake_mnist / "MNIST" / "raw" / "train-images-idx3-ubyte"
    raw.write_bytes(raw.read_bytes()[:100])
    with pytest.raises(lv.DataError, match="MNIST"):
        load_images("mnist", fake_mnist)


def fake_celeba(root, n=6):
    from PIL import Image

    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    names = []
    for i in range(n):
        name = f"{i:06d}.jpg"
        Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(folder / name)
        names.append(name)
    (root / "celeba" / "list_eval_partition.txt").write_text(
        "\n".join(f"{nm} {0 if i < n - 2 else 2}" for i, nm in enumerate(names)) + "\n")
    return root


def test_celeba_folder_reads_crops_resizes_and_splits(tmp_path):
    root = fake_celeba(tmp_path)
    train = CelebAFolder(root / "celeba", "train")
    test = load_images("celeba", root, train=False)
    assert len(train) == 4 and len(test) == 2
    img = train[0]
    assert img.shape == (3, 64, 64) and img.dtype == torch.uint8
    with pytest.raises(lv.DataError, match="img_align_celeba"):
        load_images("celeba", tmp_path / "elsewhere")


TINY = ["--width", "4", "--blocks", "1", "--latent-dim", "4", "--steps", "2", "--eval-images",
        "8", "--iwae-images", "4", "--iwae-samples", "3", "--quiet"]


@pytest.mark.parametrize("obs", ["learned-vector", "fixed", "bernoulli"])
def test_two_step_image_training_writes_the_run(fake_mnist, tmp_path, obs):
    run = tmp_path / f"run-{obs}"
    argv = ["train", "--dataset", "fashion-mnist", "--data-root", str(fake_mnist), "--obs", obs,
            "--out", str(run), *TINY]
    assert main(argv) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["pixels"] == ("binarize" if obs == "bernoulli"
                                                            else "dequantize")
    assert math.isfinite(summary["elbo_bits_per_dim"]) and summary["iwae_samples"] == 3
    # decoder means of held-out images: their error and gradient-energy ratio (sharpness.py)
    assert 0 < summary["reconstruction_rmse"] < 1 and 0 < summary["sharpness"] < 10
    for name in ("reconstructions.png", "generations.png", "training.png", "checkpoint.pt"):
        assert (run / name).exists(), name
    if obs != "bernoulli":
        assert summary["constant_pixels"] >= 56 and "sigma_on_constant_pixels" in summary
    if obs == "learned-vector":
        assert 0 <= summary["share_of_sigmas_at_floor"] <= 1 and summary["min_scale"] == 0.01
        # the default start: half the root-mean-square spread of the training pixels
        pixels = load_images("fashion-mnist", fake_mnist).numpy().reshape(40, -1) / 255.0
        half = 0.5 * np.sqrt(pixels.var(axis=0, ddof=1).mean())
        config = json.loads((run / "config.json").read_text())
        assert config["observation"]["init_scale"] == pytest.approx(half, rel=0.01)
    assert main(["train", "--resume", str(run), "--steps", "3", "--quiet"]) == 0


def test_an_image_run_resumes_for_more_epochs_from_a_moved_data_folder(fake_mnist, tmp_path,
                                                                       capsys):
    run = tmp_path / "run"
    small = [a for a in TINY if a not in ("--steps", "2")]
    assert main(["train", "--dataset", "fashion-mnist", "--data-root", str(fake_mnist),
                 "--batch-size", "20", "--epochs", "1", "--out", str(run), *small]) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 2  # 40 images / 20
    moved = tmp_path / "moved"
    moved.mkdir()
    (fake_mnist / "FashionMNIST").rename(moved / "FashionMNIST")
    before = (run / "config.json").read_text()
    # the old folder is gone: refused with the error, and config.json keeps the old total
    assert main(["train", "--resume", str(run), "--epochs", "3", "--quiet"]) == 2
    assert "--data-root" in capsys.readouterr().err
    assert (run / "config.json").read_text() == before
    assert main(["train", "--resume", str(run), "--epochs", "3", "--data-root", str(moved),
                 "--quiet"]) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 6
    config = json.loads((run / "config.json").read_text())
    assert config["epochs"] == 3 and config["data_root"] == str(moved)


def test_summary_is_strict_json_when_bits_per_dim_is_undefined(fake_mnist, tmp_path):
    # scaled grey levels have no bits/dim (a density on discrete values): null, not NaN
    run = tmp_path / "run"
    argv = ["train", "--dataset", "fashion-mnist", "--data-root", str(fake_mnist), "--obs",
            "learned-scalar", "--pixels", "unit-levels", "--out", str(run), *TINY]
    assert main(argv) == 0
    text = (run / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert summary["elbo_bits_per_dim"] is None and math.isfinite(summary["elbo_nats"])


def test_celeba_training_through_a_loader(tmp_path):
    root = fake_celeba(tmp_path)
    argv = ["train", "--dataset", "celeba", "--data-root", str(root), "--obs", "learned-scalar",
            "--convs", "4", "--num-workers", "0", "--batch-size", "2", "--out",
            str(tmp_path / "run"), *TINY]
    assert main(argv) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["images"] == 2


def test_tensorboard_logging(fake_mnist, tmp_path):
    pytest.importorskip("tensorboard")
    logdir = tmp_path / "tb"
    argv = ["train", "--dataset", "mnist", "--data-root", str(fake_mnist), "--obs",
            "learned-vector", "--out", str(tmp_path / "run"), "--tensorboard", str(logdir), *TINY]
    assert main(argv) == 0
    assert list(logdir.glob("events.out.tfevents.*"))


def test_missing_image_data_on_the_command_line(tmp_path, capsys):
    assert main(["train", "--dataset", "mnist", "--data-root", str(tmp_path), "--out",
                 str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--download" in err and str(tmp_path / "MNIST") in err


def test_weights_are_selected_on_training_images_held_out_and_reported_on_the_test_set(
        fake_mnist, tmp_path, capsys):
    """--eval-every selects best.pt on the last --validation-images training images, which
    training never sees; summary.json reports the selected weights on the test images."""
    from pyro_lvae.experiments.tasks import TASKS

    run = tmp_path / "run"
    small = [a for a in TINY if a not in ("--steps", "2")]
    assert main(["train", "--dataset", "fashion-mnist", "--data-root", str(fake_mnist),
                 "--obs", "discretized-logistic", "--batch-size", "10", "--epochs", "2",
                 "--eval-every", "1", "--validation-images", "10", "--out", str(run),
                 *small]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6  # 30 training images of 40 in batches of 10, twice
    config = json.loads((run / "config.json").read_text())
    assert config["validation_images"] == 10
    task, train = TASKS["fashion-mnist"], load_images("fashion-mnist", fake_mnist)
    held = task.validation(config)
    assert held.shape == (10, 1, 28, 28)
    assert torch.equal((held * 255).round().to(torch.uint8), train[-10:])  # the last ten
    best = summary["best"]
    assert best["file"] == BEST_NAME and math.isfinite(best["elbo_bits_per_dim"])
    history = History.from_csv(run / "history.csv")
    rows = history.heldout()
    assert best["validation_elbo"] == pytest.approx(float(np.max(rows["heldout_elbo"])))
    # the default: a tenth of this small training set; none without --eval-every
    default = tmp_path / "default"
    assert main(["train", "--dataset", "fashion-mnist", "--data-root", str(fake_mnist),
                 "--eval-every", "1", "--out", str(default), *TINY]) == 0
    assert json.loads((default / "config.json").read_text())["validation_images"] == 4
    assert main(["train", "--dataset", "fashion-mnist", "--data-root", str(fake_mnist),
                 "--validation-images", "5", "--out", str(tmp_path / "no"), *TINY]) == 2
    assert "add --eval-every" in capsys.readouterr().err
    assert main(["train", "--dataset", "fashion-mnist", "--data-root", str(fake_mnist),
                 "--eval-every", "1", "--validation-images", "30", "--out",
                 str(tmp_path / "half"), *TINY]) == 2
    assert "more than half" in capsys.readouterr().err
