"""A small image classifier the project trains itself, whose penultimate layer gives the
features of the studies' Fréchet distance.

The Fréchet Inception Distance (Heusel et al. 2017) compares Gaussians fitted to the features
of a network trained to classify images: close feature statistics mean images that a
classifier finds alike. Inception's weights cannot be downloaded here, and Inception is made
for 299x299 photographs, not 8x8 digits; so each image set gets its own small classifier,
trained on the set's training images and labels: an MLP over the flat pixels,
``D -> hidden -> features -> classes`` with ReLUs, trained with Adam and cross-entropy for a
fixed number of epochs from a fixed seed, in float32 on the CPU with one thread, so that it is
the same network on every call for the same image set and settings (:func:`train_classifier`).
Its held-out accuracy is reported beside the distances. The features are the ``features``
activations (after the ReLU) of the penultimate layer.

The distances measured in these features are therefore **not comparable with published FIDs**
(other network, other images, other sample sizes), only with each other: the same classifier,
the same held-out images, equally many generations.

:func:`classifier_for` reads a saved classifier back (a ``.pt`` file named after the image set
and a digest of its settings) or trains and saves one, so a resumed study reuses it.

**References**

- M. Heusel, H. Ramsauer, T. Unterthiner, B. Nessler, S. Hochreiter. *GANs Trained by a Two
  Time-Scale Update Rule Converge to a Local Nash Equilibrium*. NIPS 2017.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ...io import atomic_save
from .imagesets import ImageSplit

__all__ = ["ClassifierSettings", "FeatureClassifier", "train_classifier", "classifier_for"]


@dataclass(frozen=True)
class ClassifierSettings:
    """How the feature classifier is built and trained: layer widths, epochs, batch size,
    Adam's learning rate and the seed."""

    hidden: int = 256
    features: int = 64
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0

    def digest(self, name: str, split: ImageSplit) -> str:
        """A short hash of these settings, the image set's name and its sizes."""
        text = json.dumps([name, asdict(self), list(split.train.shape), list(split.test.shape)])
        return hashlib.sha256(text.encode()).hexdigest()[:12]


class FeatureClassifier(nn.Module):
    """An MLP classifier of flat images whose penultimate activations are the features.

    :param int dims: values per image
    :param int classes: number of classes
    :param ClassifierSettings settings: the layer widths
    """

    def __init__(self, dims: int, classes: int, settings: ClassifierSettings) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dims, settings.hidden), nn.ReLU(),
                                  nn.Linear(settings.hidden, settings.features), nn.ReLU())
        self.head = nn.Linear(settings.features, classes)
        #: accuracy on the held-out images of the split it was trained on
        self.accuracy = float("nan")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of flat images ``x``."""
        return self.head(self.body(x))

    @torch.no_grad()
    def features(self, x: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
        """The penultimate activations of flat images ``x``, ``(N, features)``, on the CPU."""
        x = x.detach().float().cpu()
        return torch.cat([self.body(chunk) for chunk in x.split(batch_size)])

    @torch.no_grad()
    def score(self, x: torch.Tensor, labels: torch.Tensor) -> float:
        """The share of ``x`` classified as ``labels``."""
        predicted = self.head(self.features(x)).argmax(-1)
        return float((predicted == labels.cpu()).float().mean())


def train_classifier(split: ImageSplit, settings: ClassifierSettings | None = None
                     ) -> FeatureClassifier:
    """Train a :class:`FeatureClassifier` on ``split``'s training images and labels
    (deterministic: a fixed seed, one CPU thread) and set its held-out ``accuracy``.

    :param ImageSplit split: the image set
    :param ClassifierSettings settings: widths and training (default :class:`ClassifierSettings`)
    """
    settings = settings or ClassifierSettings()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(settings.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)  # the layers' initial weights
            net = FeatureClassifier(split.dims, int(split.train_labels.max()) + 1, settings)
        x, y = split.train.float().cpu(), split.train_labels.cpu()
        opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
        for _ in range(settings.epochs):
            for batch in torch.randperm(len(x), generator=g).split(settings.batch_size):
                opt.zero_grad()
                nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    net.eval()
    net.accuracy = net.score(split.test, split.test_labels)
    return net


def classifier_for(name: str, split: ImageSplit, folder: str | Path | None = None,
                   settings: ClassifierSettings | None = None) -> FeatureClassifier:
    """The feature classifier of image set ``name``: read back from
    ``folder/classifier-NAME-DIGEST.pt`` when that file exists (``DIGEST``:
    :meth:`ClassifierSettings.digest`), else trained (:func:`train_classifier`) and, with a
    ``folder``, saved there.

    :param str name: the image set's name (part of the file name and the digest)
    :param ImageSplit split: its images
    :param folder: where classifiers are kept (``None``: train, keep nothing)
    :param ClassifierSettings settings: widths and training
    """
    settings = settings or ClassifierSettings()
    path = (None if folder is None
            else Path(folder) / f"classifier-{name}-{settings.digest(name, split)}.pt")
    if path is not None and path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        net = FeatureClassifier(split.dims, saved["classes"], settings)
        net.load_state_dict(saved["state"])
        net.accuracy = float(saved["accuracy"])
        return net.eval()
    net = train_classifier(split, settings)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save({"state": net.state_dict(), "classes": net.head.out_features,
                     "accuracy": net.accuracy}, path)
    return net
