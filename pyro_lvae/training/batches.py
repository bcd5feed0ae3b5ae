"""Where a training run's batches come from: a tensor (shuffled epochs, resumable, sliced per
rank), a sampler drawing fresh data, or an iterable such as a ``DataLoader``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..vae import VAE

__all__ = ["Batches", "TensorBatches", "SamplerBatches", "LoaderBatches", "make_batches",
           "data_seed"]


class Batches:
    """A source of training batches: ``batches()`` returns the next one. Sources with a
    position to resume from override the state methods; the others have none."""

    def __call__(self) -> torch.Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The position in the data, saved in checkpoints (empty for fresh draws)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a position saved by :meth:`state_dict`."""


class TensorBatches(Batches):
    """Minibatches of a fixed data set: shuffled epochs, resumable. With several ranks, every
    rank shuffles alike (``generator`` seeded alike) and takes its own slice of each global
    batch of ``world * batch_size`` rows."""

    def __init__(self, data: torch.Tensor, batch_size: int, generator: torch.Generator,
                 rank: int = 0, world: int = 1) -> None:
        if world * batch_size > data.shape[0] and world > 1:
            raise DataError(f"{world} processes x batch size {batch_size} is more than the "
                            f"{data.shape[0]} rows of data; lower the batch size")
        self.data = data
        self.batch_size = min(batch_size, data.shape[0])
        self.generator = generator
        self.rank, self.world = rank, world
        self.perm = torch.zeros(0, dtype=torch.long)
        self.pos = 0

    def __call__(self) -> torch.Tensor:
        step = self.world * self.batch_size
        if self.pos + step > self.perm.numel():
            self.perm = torch.randperm(self.data.shape[0], generator=self.generator)
            self.pos = 0
        start = self.pos + self.rank * self.batch_size
        idx = self.perm[start: start + self.batch_size]
        self.pos += step
        return self.data[idx.to(self.data.device)]

    def state_dict(self) -> dict[str, Any]:
        return {"perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.perm, self.pos = state["perm"], int(state["pos"])


class SamplerBatches(Batches):
    """Fresh data from a sampler ``f(batch_size, generator=...)`` at every step."""

    def __init__(self, sampler: Callable, batch_size: int, generator: torch.Generator,
                 device: torch.device, dtype: torch.dtype) -> None:
        self.sampler, self.batch_size, self.generator = sampler, batch_size, generator
        self.device, self.dtype = device, dtype

    def __call__(self) -> torch.Tensor:
        x = self.sampler(self.batch_size, generator=self.generator)
        return torch.as_tensor(x).to(device=self.device, dtype=self.dtype)


class LoaderBatches(Batches):
    """Batches from an iterable (a DataLoader): restarted when exhausted; ``(x, y)`` -> ``x``."""

    def __init__(self, loader: Iterable, device: torch.device) -> None:
        self.loader, self.device = loader, device
        self.epoch = 0
        self.it = iter(loader)

    def __call__(self) -> torch.Tensor:
        try:
            batch = next(self.it)
        except StopIteration:
            self.epoch += 1
            sampler = getattr(self.loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):  # a DistributedSampler reshuffles per epoch
                sampler.set_epoch(self.epoch)
            self.it = iter(self.loader)
            try:
                batch = next(self.it)
            except StopIteration:
                raise DataError("the data loader yields no batches") from None
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        if not isinstance(batch, torch.Tensor):
            raise DataError(f"the data loader yielded a {type(batch).__name__}; expected tensors "
                            f"(or (x, y) tuples of tensors)")
        return batch.to(self.device, non_blocking=True)


def make_batches(data: Any, vae: VAE, batch_size: int, generator: torch.Generator,
                 device: torch.device, transform: Callable | None = None,
                 shuffle_generator: torch.Generator | None = None, rank: int = 0,
                 world: int = 1) -> TensorBatches | SamplerBatches | LoaderBatches:
    """The batches of ``data`` (a tensor or numpy array, a sampler, or an iterable), checked
    (tensors whole, unless a ``transform`` will make them floats) and on ``device``."""
    dtype = vae.dtype
    if isinstance(data, np.ndarray):
        if not np.issubdtype(data.dtype, np.floating):
            raise DataError(
                f"Expected floating-point data but got a numpy array of {data.dtype}; convert "
                f"it with data.astype('float32')"
            )
        data = torch.as_tensor(data, dtype=dtype)
    if isinstance(data, torch.Tensor):
        shuffle = shuffle_generator or generator
        if transform is not None:  # raw data (uint8 images): the transformed batches are checked
            return TensorBatches(data.to(device), batch_size, shuffle, rank, world)
        if data.is_floating_point():  # float64 tables train a float32 model without fuss
            data = data.to(device=device, dtype=dtype)
        vae.model.check_data(data, finite=True)
        vae.observation.check_support(data)
        return TensorBatches(data, batch_size, shuffle, rank, world)
    if isinstance(data, (str, bytes, os.PathLike)):
        raise DataError(
            f"Expected data, not the file name {str(data)!r}: load it first (for instance "
            f"torch.load, numpy.load or numpy.loadtxt) and pass the array"
        )
    if callable(data):
        return SamplerBatches(data, batch_size, generator, device, dtype)
    if isinstance(data, Iterable):
        if world > 1 and not hasattr(getattr(data, "sampler", None), "set_epoch"):
            raise ConfigError("with several processes a DataLoader needs a DistributedSampler "
                              "(each rank must draw different batches)")
        return LoaderBatches(data, device)
    raise DataError(
        f"Expected data to be a tensor, a numpy array, a sampler f(n, generator=...) or an "
        f"iterable of batches but got {type(data).__name__}"
    )


def data_seed(seed: int | None) -> int:
    """The data stream's seed, derived from ``seed`` but never equal to it: with one seed for
    both, torch's global generator (the model's noise) and the data generator produce the same
    numbers in lockstep, and a model can read its data off its own noise."""
    if seed is None:
        return int(torch.randint(2**62, ()).item())
    return int(np.random.SeedSequence([seed, 0x5EED]).generate_state(1, np.uint64)[0] >> 1)
