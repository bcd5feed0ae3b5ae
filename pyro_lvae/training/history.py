"""The per-step record of a training run: :class:`History`."""

from __future__ import annotations

import csv
import os
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..io import write_csv

__all__ = ["History", "PendingRows"]


class History:
    """Per-step training record. Losses are per data point, in nats.

    Columns: ``step``, ``loss`` (= ``reconstruction + beta * kl``), ``reconstruction``
    (``-log p(x|z)``), ``kl`` (``log q(z|x) - log p(z)``, the one-draw estimate), ``beta``, and
    the observation scale's ``sigma`` (mean over batch and dimensions), ``sigma_min`` and
    ``sigma_max`` (NaN for observation models without a scale). ``reconstruction`` and ``kl``
    are NaN where the ELBO's loss is not ``reconstruction + beta * kl`` (``RenyiELBO``,
    enumerated sites) or cannot be read from its traces (the JIT ELBOs).

    With a held-out set (``fit(..., heldout=...)``), ``heldout_elbo`` is the held-out ELBO per
    point (nats) of the model after the steps where it was computed, and
    ``heldout_elbo_averaged`` that of the averaged model (``fit(..., average=...)``); both are
    NaN at the other steps (:meth:`heldout` gives the evaluated rows only). With
    ``clip_grad_norm``, ``grad_norm`` is the total gradient norm of each step before clipping
    (of the summed loss, not per point). Files written before these columns existed load with
    them NaN.
    """

    COLUMNS = ("step", "loss", "reconstruction", "kl", "beta", "sigma", "sigma_min", "sigma_max",
               "heldout_elbo", "heldout_elbo_averaged", "grad_norm")
    #: columns that :meth:`extend` and old files may leave out (NaN)
    OPTIONAL = ("heldout_elbo", "heldout_elbo_averaged", "grad_norm")

    def __init__(self) -> None:
        #: the loss that trained the run: ``"DirectELBO"`` or ``"pyro <ELBO class>"``
        #: (set by :func:`~pyro_lvae.fit`; not saved with the history)
        self.objective: str | None = None
        #: the averaged model (a :class:`~pyro_lvae.VAE`) of a run with ``average=``, set by
        #: :func:`~pyro_lvae.fit` (the checkpoint holds it); else ``None``
        self.averaged: Any = None
        #: ``{"step", "elbo"}`` of the best evaluated model of a run with ``heldout=`` (the
        #: one in ``best.pt``); else ``None``
        self.best: dict[str, float] | None = None
        # one growable buffer per column (capacity doubles): 64 bytes a step, a few objects
        self._buffers = {c: np.zeros(0, dtype=np.int64 if c == "step" else np.float64)
                         for c in self.COLUMNS}
        self._length = 0

    def extend(self, columns: dict[str, Any]) -> None:
        """Append rows given as one array (or list) per column (the :attr:`OPTIONAL` ones may
        be left out: NaN)."""
        values = {c: np.asarray(columns[c]).reshape(-1) for c in columns}
        lengths = {len(v) for v in values.values()}
        required = set(self.COLUMNS) - set(self.OPTIONAL)
        if len(lengths) != 1 or not required <= set(values) <= set(self.COLUMNS):
            raise ValueError("History.extend needs every column, all of the same length")
        n = lengths.pop()
        for c in self.OPTIONAL:
            values.setdefault(c, np.full(n, np.nan))
        end = self._length + n
        if end > len(self._buffers["step"]):
            capacity = max(end, 2 * len(self._buffers["step"]), 1024)
            for c, buf in self._buffers.items():
                grown = np.zeros(capacity, dtype=buf.dtype)
                grown[: self._length] = buf[: self._length]
                self._buffers[c] = grown
        for c in self.COLUMNS:
            self._buffers[c][self._length: end] = values[c]
        self._length = end

    def __getitem__(self, column: str) -> np.ndarray:
        if column not in self._buffers:
            raise KeyError(f"no column {column!r}; columns are {', '.join(self.COLUMNS)}")
        return self._buffers[column][: self._length].copy()

    def __len__(self) -> int:
        return self._length

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The columns as tensors (for checkpoints)."""
        return {c: torch.from_numpy(self[c]) for c in self.COLUMNS}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> History:
        """The history saved by :meth:`state_dict`."""
        h = cls()
        h.extend({c: np.asarray(state[c]) for c in cls.COLUMNS if c in state})
        return h

    def record(self, column: str, value: float) -> None:
        """Set ``column`` of the last row (the held-out ELBO of the model after that step)."""
        if column not in self.OPTIONAL or not self._length:
            raise ValueError(f"History.record sets an optional column of the last row, not "
                             f"{column!r}")
        self._buffers[column][self._length - 1] = value

    def heldout(self) -> dict[str, np.ndarray]:
        """The rows with a held-out evaluation: ``step``, ``heldout_elbo`` and
        ``heldout_elbo_averaged``."""
        columns = ("heldout_elbo", "heldout_elbo_averaged")
        rows = np.isfinite(self[columns[0]]) | np.isfinite(self[columns[1]])
        return {c: self[c][rows] for c in ("step", *columns)}

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write the history as CSV (atomically); an optional column only if it holds a
        value."""
        names = [c for c in self.COLUMNS
                 if c not in self.OPTIONAL or np.isfinite(self[c]).any()]
        columns = {c: self[c].tolist() for c in names}
        write_csv([dict(zip(names, row, strict=True))
                   for row in zip(*columns.values(), strict=True)], path)

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> History:
        """Read a history written by :meth:`to_csv`."""
        try:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
        except OSError as e:
            raise CheckpointError(f"cannot read history {path}: {e.strerror or e}") from None
        required = [c for c in cls.COLUMNS if c not in cls.OPTIONAL]
        if not rows or not set(required) <= set(rows[0]):
            raise CheckpointError(
                f"{path} is not a pyro-lvae history (expected columns {', '.join(required)})"
            )
        h = cls()
        try:
            h.extend({c: [float(r[c]) for r in rows] for c in cls.COLUMNS if c in rows[0]})
        except (TypeError, ValueError):
            raise CheckpointError(f"{path} has a missing or non-numeric value in a pyro-lvae "
                                  f"history column") from None
        return h

    def __repr__(self) -> str:
        if not len(self):
            return "History(empty)"
        return (f"History(steps={len(self)}, loss={self['loss'][-1]:.4g}, "
                f"sigma={self['sigma'][-1]:.4g})")


class PendingRows:
    """The rows of the steps since the last check, kept on the device (no host synchronisation
    per step) until :meth:`read` takes them all at once."""

    DEVICE_COLUMNS = ("loss", "reconstruction", "kl", "sigma", "sigma_min", "sigma_max")

    def __init__(self, device: torch.device, first: int) -> None:
        self.nan = torch.tensor(float("nan"), device=device)
        self.restart(first)

    def restart(self, first: int) -> None:
        """Forget the pending rows; the next one is step ``first``."""
        self.first = first
        self.values: dict[str, list[torch.Tensor]] = {c: [] for c in self.DEVICE_COLUMNS}
        self.betas: list[float] = []

    def add(self, loss: torch.Tensor, reconstruction: torch.Tensor, kl: torch.Tensor,
            n: int, beta: float, sigma: tuple[torch.Tensor, ...] | None,
            grad_norm: torch.Tensor | None = None) -> None:
        """One step's sums over a batch of ``n`` points (recorded per point), sigma's
        ``(mean, min, max)`` (``None``: NaN) and the gradient norm before clipping (if
        clipped)."""
        values = (loss / n, reconstruction / n, kl / n) + (sigma or (self.nan,) * 3)
        for column, value in zip(self.DEVICE_COLUMNS, values, strict=True):
            self.values[column].append(value)
        if grad_norm is not None:
            self.values.setdefault("grad_norm", []).append(grad_norm.detach())
        self.betas.append(float(beta))

    def read(self, reduce: Any = None) -> dict[str, torch.Tensor]:
        """The pending rows on the host (float64), reduced across ranks by ``reduce``."""
        rows = {k: torch.stack(v) for k, v in self.values.items()}
        if reduce is not None:
            rows = reduce(rows)
        return {k: v.to("cpu", torch.float64) for k, v in rows.items()}

    def complete(self, rows: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """``rows`` with the ``beta`` and ``step`` columns, as numpy arrays."""
        rows = dict(rows, beta=torch.tensor(self.betas, dtype=torch.float64),
                    step=torch.arange(self.first, self.first + len(self.betas)))
        return {k: v.numpy() for k, v in rows.items()}
