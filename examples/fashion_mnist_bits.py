"""Fashion-MNIST in bits/dim on its full test set, for a run of ``pyro-lvae train`` with a
discretised observation model, and the curve of bits/dim against training time.

The run selects its weights on a validation split of the training set (``--eval-every`` with
``--validation-images``); this script scores those weights (``best.pt``) on all 10000 test
images, with the ELBO and an importance-sampled bound, and draws the validation bits/dim of
every evaluation against the training time, converted from steps with the time of one step on
one core (measured here on the run's own model and data, in CPU time, as a resumed run's clock
counts only its last call). Published anchors on the same 8-bit test set are drawn beside it.

    ../shared/tools/fashion-mnist data
    pyro-lvae train --dataset fashion-mnist --data-root data --obs discretized-logistic-mixture \\
        --prior mixture --width 32 --blocks 2 --latent-dim 64 --epochs 20 --eval-every 430 \\
        --eval-images 10000 --out runs/fmnist-dlm
    python examples/fashion_mnist_bits.py runs/fmnist-dlm --data-root data --samples 100
    python examples/fashion_mnist_bits.py --smoke     # a tiny run on random images
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import pyro_lvae as lv
from pyro_lvae.cli import main as cli_main
from pyro_lvae.datasets import PIXEL_TRANSFORMS, bits_per_dim, load_images
from pyro_lvae.io import save_figure
from pyro_lvae.observations import describe
from pyro_lvae.training.history import History

#: bits/dim on 8-bit Fashion-MNIST's test set reported in the literature
ANCHORS = {"Bit-Swap (Kingma et al. 2019), hierarchical VAE": 3.28,
           "Glow-like flows (about)": 2.9}


def _history(run: Path) -> History:
    """The run's history: history.csv of a finished run, else its last checkpoint's (a run
    still training, or stopped to be resumed)."""
    if (run / "history.csv").exists() and (run / "summary.json").exists():
        return History.from_csv(run / "history.csv")
    blob = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    return History.from_state_dict(blob["history"])


def step_seconds(run: Path, data_root: str, steps: int = 20) -> float:
    """CPU seconds of one training step of the run's model, measured on one thread over
    ``steps`` steps on its training images (after two unmeasured ones): a run's own clock
    counts only its last call when it was resumed, and other processes slow its wall clock."""
    config = json.loads((run / "config.json").read_text())
    vae = lv.load(run / "checkpoint.pt", map_location="cpu")
    images = load_images(config["dataset"], data_root, train=True)
    transform = PIXEL_TRANSFORMS.build(PIXEL_TRANSFORMS.resolve(config["pixels"], warn=False))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        kwargs = {"batch_size": config["batch_size"], "lr": config["lr"], "transform": transform,
                  "seed": 0}
        lv.fit(vae, images, steps=2, **kwargs)
        t0 = time.process_time()
        lv.fit(vae, images, steps=steps, **kwargs)
        return (time.process_time() - t0) / steps
    finally:
        torch.set_num_threads(threads)


def curve(run: Path, per_step: float) -> dict[str, list[float]]:
    """Validation bits/dim of every held-out evaluation, against steps and training hours
    (``per_step`` seconds a step)."""
    config = json.loads((run / "config.json").read_text())
    rows = _history(run).heldout()
    dims = 784 if config["dataset"] in ("mnist", "fashion-mnist") else 3 * 64 * 64
    discrete = describe(config["obs"]).discrete
    pixels = PIXEL_TRANSFORMS.resolve(config["pixels"], warn=False)
    steps = np.asarray(rows["step"], dtype=float) + 1  # steps done at each evaluation
    return {"step": steps.tolist(),
            "hours": (steps * per_step / 3600).tolist(),
            "bits_per_dim": [bits_per_dim(-e, dims, pixels, discrete=discrete)
                             for e in rows["heldout_elbo"]],
            "seconds_per_step": per_step}


@torch.no_grad()
def score(run: Path, data_root: str, samples: int, images: int | None,
          device: str = "cpu") -> dict[str, float]:
    """The selected weights (best.pt, else the last checkpoint) on the test images: ELBO and
    an importance-sampled bound with ``samples`` draws, in nats and bits/dim."""
    config = json.loads((run / "config.json").read_text())
    path = run / "best.pt" if (run / "best.pt").exists() else run / "checkpoint.pt"
    vae = lv.load(path, map_location=device)
    test = load_images(config["dataset"], data_root, train=False)
    if images is not None:
        test = test[:images]
    pixels = PIXEL_TRANSFORMS.resolve(config["pixels"], warn=False)
    x = PIXEL_TRANSFORMS.build(pixels)(test, torch.Generator().manual_seed(0)).to(device)
    dims, discrete = x[0].numel(), describe(config["obs"]).discrete
    torch.manual_seed(0)
    t0 = time.perf_counter()
    elbo = lv.evaluate.elbo_parts(vae, x, batch_size=250)["elbo"]
    bound = lv.evaluate.iwae(vae, x, num_samples=samples, batch_size=50,
                             chunk_size=min(samples, 50))
    return {"weights": path.name, "images": len(x), "iwae_samples": samples,
            "elbo_nats": elbo, "iwae_nats": bound,
            "elbo_bits_per_dim": bits_per_dim(-elbo, dims, pixels, discrete=discrete),
            "iwae_bits_per_dim": bits_per_dim(-bound, dims, pixels, discrete=discrete),
            "seconds": time.perf_counter() - t0}


def figure(curves: dict[str, dict], scores: dict[str, dict]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, c in curves.items():
        line, = ax.plot(c["hours"], c["bits_per_dim"], marker="o", ms=3,
                        label=f"{name}: validation ELBO")
        s = scores.get(name)
        if s is not None and math.isfinite(s["iwae_bits_per_dim"]):
            ax.axhline(s["iwae_bits_per_dim"], color=line.get_color(), ls=":",
                       label=f"{name}: test IWAE ({s['iwae_samples']} samples), selected weights")
    for label, value in ANCHORS.items():
        ax.axhline(value, color="grey", lw=0.8, ls="--")
        ax.annotate(f"{label}: {value}", (0.01, value), xycoords=("axes fraction", "data"),
                    xytext=(0, 2), textcoords="offset points", fontsize=7, color="grey")
    ax.set_xlabel("training hours (one CPU core; the run's measured time per step)")
    ax.set_ylabel("bits/dim")
    ax.set_title("Fashion-MNIST, 8-bit: bits/dim against training time")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _smoke(folder: Path) -> Path:
    """A tiny run on random 8-bit images written as Fashion-MNIST's files."""
    import struct

    raw = folder / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", 60), ("t10k", 20)):
        img = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        (raw / f"{name}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, n, 28, 28) + img.tobytes())
        (raw / f"{name}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 2049, n) + rng.integers(0, 10, n).astype(np.uint8).tobytes())
    run = folder / "run"
    code = cli_main(["train", "--dataset", "fashion-mnist", "--data-root", str(folder),
                        "--obs", "discretized-logistic", "--width", "4", "--blocks", "1",
                        "--latent-dim", "4", "--batch-size", "10", "--epochs", "2",
                        "--eval-every", "3", "--validation-images", "10", "--eval-images",
                        "20", "--iwae-images", "4", "--iwae-samples", "2", "--quiet",
                        "--out", str(run)])
    if code != 0:
        raise SystemExit(code)
    return run


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="*", help="run folders of pyro-lvae train")
    p.add_argument("--data-root", default="data")
    p.add_argument("--samples", type=int, default=100, help="importance samples per image")
    p.add_argument("--images", type=int, default=None, help="test images (default: all)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seconds-per-step", type=float, default=None,
                   help="one step's seconds for the time axis (default: measured on one core)")
    p.add_argument("--out", default=None, help="folder for bits.json and bits.png "
                                               "(default: the first run's)")
    p.add_argument("--smoke", action="store_true", help="a tiny run on random images")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        runs = [Path(r) for r in args.runs]
        if args.smoke:
            runs, args.data_root, args.samples = [_smoke(Path(tmp))], tmp, 2
        if not runs:
            p.error("give run folders, or --smoke")
        per_step = {r.name: (args.seconds_per_step or step_seconds(r, args.data_root))
                    for r in runs}
        curves = {r.name: curve(r, per_step[r.name]) for r in runs}
        scores = {r.name: score(r, args.data_root, args.samples, args.images, args.device)
                  for r in runs}
        out = Path(args.out) if args.out else runs[0]
        out.mkdir(parents=True, exist_ok=True)
        result = {"curves": curves, "test": scores, "anchors": ANCHORS}
        (out / "bits.json").write_text(json.dumps(result, indent=1))
        save_figure(figure(curves, scores), out / "bits.png")
        for name, s in scores.items():
            print(f"{name}: {s['weights']} on {s['images']} test images: ELBO "
                  f"{s['elbo_bits_per_dim']:.3f} bits/dim, IWAE ({s['iwae_samples']} samples) "
                  f"{s['iwae_bits_per_dim']:.3f} bits/dim; Bit-Swap 3.28")
    return result


if __name__ == "__main__":
    main()
