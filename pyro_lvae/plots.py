"""Figures (matplotlib, drawn on ``Figure`` objects: no pyplot state, no display needed).

- :func:`points_figure`: the paper's Figure 4 layout for 2D data: reconstructions drawn over the
  data (left), generated samples beside decoder means (right), and optionally the learned sigma
  along the data against the true noise level.
- :func:`training_figure`: loss parts and sigma over training for several runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = ["points_figure", "training_figure", "smooth"]

DATA = "#1f77b4"
MEAN = "#ff7f0e"
SAMPLE = "#2ca02c"


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Moving average (NaN-aware at the edges) used to make noisy loss curves readable."""
    y = np.asarray(y, dtype=float)
    if window <= 1 or y.size < window:
        return y
    kernel = np.ones(window)
    valid = np.isfinite(y)
    num = np.convolve(np.where(valid, y, 0.0), kernel, mode="same")
    den = np.convolve(valid.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def points_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """The paper's Figure 4 layout for 2D data, one row per model.

    Each row is a mapping with ``title``; ``data`` and ``reconstructions`` (``(n, 2)``: the
    decoder mean at the posterior mean, drawn over the data); ``samples`` and ``means``
    (``(m, 2)``: draws of p(x|z) and its means for z from the prior); and optionally
    ``sigma_along = (position, sigma)`` with ``noise_along = (position, true noise std)`` (a
    line, drawn in the given order) for a third panel showing the model's sigma along the data.
    """
    panels = 3 if any("sigma_along" in r for r in rows) else 2
    fig = Figure(figsize=(4.2 * panels, 3.6 * len(rows)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), panels))
    for row, ax in zip(rows, axes, strict=True):
        data, rec = _np(row["data"]), _np(row["reconstructions"])
        smp, mu = _np(row["samples"]), _np(row["means"])
        ax[0].scatter(data[:, 0], data[:, 1], s=2, c=DATA, alpha=0.5, label="data")
        ax[0].scatter(rec[:, 0], rec[:, 1], s=2, c=MEAN, alpha=0.6, label="reconstruction")
        ax[1].scatter(data[:, 0], data[:, 1], s=2, c="lightgray", alpha=0.5, label="data")
        ax[1].scatter(smp[:, 0], smp[:, 1], s=2, c=SAMPLE, alpha=0.6, label="sample of p(x|z)")
        ax[1].scatter(mu[:, 0], mu[:, 1], s=2, c=MEAN, alpha=0.6, label="mean of p(x|z)")
        ax[0].set_title(f"{row['title']}: reconstruction", fontsize=10)
        ax[1].set_title(f"{row['title']}: generation", fontsize=10)
        lim_x = (data[:, 0].min() - 0.5, data[:, 0].max() + 0.5)
        lim_y = (data[:, 1].min() - 0.8, data[:, 1].max() + 0.8)
        for a in ax[:2]:
            a.set_xlim(*lim_x)
            a.set_ylim(*lim_y)
            a.legend(loc="upper center", fontsize=7, markerscale=4, ncol=3, frameon=False)
        if panels == 3 and "sigma_along" in row:
            pos, sig = (_np(a) for a in row["sigma_along"])
            ax[2].plot(pos, sig, ".", ms=2, c=MEAN, label="model sigma")
            if "noise_along" in row:
                npos, nstd = (_np(a) for a in row["noise_along"])
                ax[2].plot(npos, nstd, "-", c="k", lw=1, label="true noise std")
            ax[2].set_yscale("log")
            ax[2].set_xlabel("x1 (position along the curve)")
            ax[2].set_title(f"{row['title']}: sigma along the data", fontsize=10)
            ax[2].legend(fontsize=7, frameon=False)
        elif panels == 3:
            ax[2].set_axis_off()
    return fig


def training_figure(histories: Mapping[str, Any], window: int = 50,
                    parts: Sequence[str] = ("loss", "reconstruction", "kl")) -> Figure:
    """Loss parts (per point, smoothed) and sigma over training, one line per run."""
    fig = Figure(figsize=(4.0 * (len(parts) + 1), 3.6), layout="constrained")
    axes = fig.subplots(1, len(parts) + 1)
    for name, h in histories.items():
        step = np.asarray(h["step"])
        for ax, part in zip(axes[:-1], parts, strict=True):
            ax.plot(step, smooth(h[part], window), lw=1, label=name)
        axes[-1].plot(step, np.asarray(h["sigma"]), lw=1, label=name)
    titles = {"loss": "loss (nats / point)", "reconstruction": "reconstruction -log p(x|z)",
              "kl": "KL term"}
    for ax, part in zip(axes[:-1], parts, strict=True):
        ax.set_title(titles.get(part, part))
        ax.set_xlabel("step")
    axes[0].set_yscale("symlog", linthresh=1.0)
    axes[1].set_yscale("symlog", linthresh=1.0)
    axes[-1].set_yscale("log")
    axes[-1].set_title("sigma (mean over dimensions)")
    axes[-1].set_xlabel("step")
    axes[-1].legend(fontsize=7, frameon=False)
    return fig
