"""Figures (matplotlib, drawn on ``Figure`` objects: no pyplot state, no display needed).

- :func:`points_figure`: the paper's Figure 4 layout for 2D data: reconstructions drawn over the
  data (left), generated samples beside decoder means (right), and optionally the learned sigma
  along the data against the true noise level.
- :func:`training_figure`: loss parts and sigma over training for several runs.
- :func:`theory_figure`, :func:`sphere_figure`: Theorem 1 and the sphere study.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from .. import observations

__all__ = ["points_figure", "training_figure", "theory_figure", "sphere_figure",
           "manifold_study_figures", "collapse_figure", "image_grid_figure", "sigma_map_figure",
           "smooth"]

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


def _plain_log_ticks(axis) -> None:
    """Label a log axis with plain numbers (0.25, 1, 2) instead of powers of ten."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


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


def _heldout_curves(ax, h: Any, name: str) -> None:
    """The held-out loss (-ELBO per point) of a run evaluated during training (markers on the
    loss panel): the model's, and the averaged model's, where the history has them."""
    for column, style, what in (("heldout_elbo", "o-", "held-out"),
                                ("heldout_elbo_averaged", "s--", "held-out, averaged")):
        try:
            values = np.asarray(h[column], dtype=float)
        except (KeyError, IndexError):
            continue
        rows = np.isfinite(values)
        if rows.any():
            ax.plot(np.asarray(h["step"])[rows], -values[rows], style, ms=3, lw=1,
                    label=f"{name} ({what})")


def training_figure(histories: Mapping[str, Any], window: int = 50,
                    parts: Sequence[str] = ("loss", "reconstruction", "kl")) -> Figure:
    """Loss parts (per point, smoothed) and sigma over training, one line per run; the
    held-out loss (-ELBO per point) on the loss panel where the run evaluated one."""
    fig = Figure(figsize=(4.0 * (len(parts) + 1), 3.6), layout="constrained")
    axes = fig.subplots(1, len(parts) + 1)
    for name, h in histories.items():
        step = np.asarray(h["step"])
        for ax, part in zip(axes[:-1], parts, strict=True):
            ax.plot(step, smooth(h[part], window), lw=1, label=name)
        _heldout_curves(axes[0], h, name)
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
    if any("held-out" in label for label in axes[0].get_legend_handles_labels()[1]):
        axes[0].legend(fontsize=7, frameon=False)
    return fig


def theory_figure(dim: int = 2, radius: float = 1.0,
                  dims_for_curves: Sequence[int] = (2, 3, 8, 100, 1000)) -> Figure:
    """The paper's Figure 2: the objective L(r) over (r, sigma) for data on a sphere, with the
    optimal radius r*(sigma) and the critical scale sigma_c; and r*/R against sigma/sigma_c for
    several dimensions."""
    from .. import theory

    sigma_c = theory.critical_sigma(radius, dim)
    sigma = np.logspace(np.log10(sigma_c / 20), np.log10(sigma_c * 4), 300)
    r = np.linspace(0, 1.25 * radius, 301)
    L = theory.objective(r[None, :], sigma[:, None], radius, dim)
    rel = np.clip(L - L.max(axis=1, keepdims=True), -8, 0)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    mesh = ax.pcolormesh(r, sigma, rel, shading="auto", cmap="viridis")
    fig.colorbar(mesh, ax=ax, label="L(r) - max_r L(r)   (nats, clipped at -8)")
    ax.plot(theory.optimal_radius(sigma, radius, dim), sigma, "w-", lw=2, label="r*(sigma)")
    ax.axhline(sigma_c, color="r", ls="--", lw=1.5, label=f"sigma_c = R/sqrt(d) = {sigma_c:.3g}")
    ax.axvline(radius, color="w", ls=":", lw=1, label="data radius R")
    ax.set_yscale("log")
    ax.set_xlabel("radius r of the decoder's sphere")
    ax.set_ylabel("sigma")
    ax.set_title(f"objective on the sphere, d = {dim}, R = {radius:g}")
    ax.legend(loc="lower right", fontsize=8)
    ratio = np.logspace(-2, np.log10(3), 300)
    for d in dims_for_curves:
        s = ratio * theory.critical_sigma(radius, d)
        ax2.plot(ratio, theory.optimal_radius(s, radius, d) / radius, lw=1.5, label=f"d = {d}")
    ax2.axvline(1.0, color="r", ls="--", lw=1)
    ax2.set_xscale("log")
    _plain_log_ticks(ax2.xaxis)
    ax2.set_xlabel("sigma / sigma_c")
    ax2.set_ylabel("r* / R")
    ax2.set_title("r* / R: collapse at sigma_c for every d")
    ax2.legend(fontsize=8)
    return fig


def sphere_figure(dim: int, radius: float, results: Sequence[Mapping[str, Any]]) -> Figure:
    """Measured radius of trained VAEs against the theory's r*, and LS-VAE's sigma over
    training, for one dimension of the sphere study."""
    from .. import theory

    sigma_c = theory.critical_sigma(radius, dim)
    fig = Figure(figsize=(13, 4), layout="constrained")
    ax, ax_sigma, ax_kl = fig.subplots(1, 3)
    ratio = np.logspace(np.log10(0.15), np.log10(3), 300)
    ax.plot(ratio, theory.optimal_radius(ratio * sigma_c, radius, dim) / radius, "k-", lw=1.5,
            label="theory r*/R")
    fixed = [r for r in results if not observations.describe(r["obs"]).learned]
    ax.plot([r["ratio"] for r in fixed], [r["prior_radius"] / radius for r in fixed], "o",
            c=MEAN, label="decoder means over the prior")
    ax.plot([r["ratio"] for r in fixed], [r["reconstruction_radius"] / radius for r in fixed],
            "x", c=DATA, label="reconstructions")
    learned = [r for r in results if observations.describe(r["obs"]).learned]
    colors = {"1": "tab:red", "linear:1000:0.5:1": "tab:green"}
    for r in learned:
        c = colors.get(r["beta"], "tab:purple")
        ax.plot(r["ratio"], r["prior_radius"] / radius, "*", ms=12, c=c)
        ax_sigma.plot(r["trace_step"], np.asarray(r["trace_sigma"]) / sigma_c, c=c, lw=1,
                      label=f"LS-VAE, beta {r['beta']}, seed {r['seed']}")
        ax_kl.plot(r["trace_step"], r["trace_kl"], c=c, lw=1)
    ax.plot([], [], "*", c="gray", ms=10, label="LS-VAE at its final sigma")
    ax.axvline(1.0, color="r", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xticks([0.25, 0.5, 1, 2])
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel("sigma / sigma_c")
    ax.set_ylabel("radius / R")
    ax.set_title(f"sphere, d = {dim}: measured radius against r*")
    ax.legend(fontsize=7)
    ax_sigma.axhline(1.0, color="r", ls="--", lw=1, label="sigma_c")
    ax_sigma.set_yscale("log")
    _plain_log_ticks(ax_sigma.yaxis)
    ax_sigma.set_xlabel("step")
    ax_sigma.set_ylabel("sigma / sigma_c")
    ax_sigma.set_title("LS-VAE: learned sigma over training")
    ax_sigma.legend(fontsize=7)
    ax_kl.set_xlabel("step")
    ax_kl.set_ylabel("KL term (nats / point)")
    ax_kl.set_title("LS-VAE: KL over training (0 = collapsed)")
    return fig


def manifold_study_figures(results: Sequence[Mapping[str, Any]]) -> dict[str, Figure]:
    """Figures of :mod:`pyro_lvae.experiments.studies.manifold`: reconstructions and generations
    per variant (seed 0), loss parts for a fixed and a learned sigma, LS-VAE's sigma over
    training, and the ELBO of every seed per variant."""
    by_variant: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        by_variant.setdefault(r["variant"], []).append(r)
    order = list(by_variant)
    figs: dict[str, Figure] = {}
    rows = [{"title": v, "data": f["data"], "reconstructions": f["rec"], "samples": f["samples"],
             "means": f["means"]}
            for v in order for r in by_variant[v] if r["seed"] == 0 and (f := r.get("figure"))]
    if rows:
        figs["variants.png"] = points_figure(rows)
    seed0 = {v: r for v in order for r in by_variant[v] if r["seed"] == 0}
    fixed = sorted((v for v in seed0 if v.startswith("F-VAE")),
                   key=lambda v: abs(np.log(float(v.split("=")[1]) / 0.05)))
    pair = {v: seed0[v]["trace"] for v in fixed[:1] + [v for v in ("LS-VAE",) if v in seed0]}
    if pair:
        figs["training.png"] = training_figure(pair, window=20)
    ls = by_variant.get("LS-VAE", [])
    if ls:
        fig = Figure(figsize=(11, 4), layout="constrained")
        ax, ax_loss = fig.subplots(1, 2)
        for r in ls:
            t = r["trace"]
            ax.plot(t["step"], t["sigma"], lw=1, label=f"seed {r['seed']}")
            ax_loss.plot(t["step"], smooth(-np.asarray(t["loss"]), 20), lw=1)
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
        ax.set_xlabel("step")
        ax.set_title("LS-VAE: learned sigma over training")
        ax.legend(fontsize=7, ncol=2)
        ax_loss.set_xlabel("step")
        ax_loss.set_title("LS-VAE: training ELBO per point (smoothed)")
        ax_loss.set_ylim(np.nanpercentile(-np.concatenate([np.asarray(r["trace"]["loss"])
                                                           for r in ls]), [1, 100]))
        figs["sigma.png"] = fig
    fig = Figure(figsize=(max(6, 0.8 * len(order)), 4), layout="constrained")
    ax = fig.subplots()
    for i, v in enumerate(order):
        values = [r["elbo"] for r in by_variant[v]]
        ax.plot(np.full(len(values), i) + np.linspace(-0.15, 0.15, len(values)), values, "o",
                ms=4)
        ax.plot([i - 0.3, i + 0.3], [np.mean(values)] * 2, "k-", lw=1)
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(order, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("held-out ELBO (nats / point)")
    ax.set_title("every seed (dots) and the mean (bar) of each variant")
    figs["seeds.png"] = fig
    return figs


def collapse_figure(results: Sequence[Mapping[str, Any]], title: str) -> Figure:
    """KL and sigma over training for each setting of the collapse study (one curve): a
    column per setting, LS-VAE in blue, LV-VAE in orange, one line per seed."""
    settings = list(dict.fromkeys(r["setting"] for r in results))
    fig = Figure(figsize=(3.2 * len(settings), 6), layout="constrained")
    axes = fig.subplots(2, len(settings), sharex=True, sharey="row", squeeze=False)
    colors = {"LS-VAE": DATA, "LV-VAE": MEAN}
    for j, setting in enumerate(settings):
        seen = set()
        for r in results:
            if r["setting"] != setting:
                continue
            name = observations.describe(r["variant"]).label
            label = name if r["variant"] not in seen else None
            seen.add(r["variant"])
            color = colors.get(name, "tab:purple")
            axes[0, j].plot(r["trace_step"], r["trace_kl"], c=color, lw=1, label=label)
            axes[1, j].plot(r["trace_step"], r["trace_sigma"], c=color, lw=1)
        axes[0, j].set_title(setting)
        axes[1, j].set_xlabel("step")
        axes[1, j].set_yscale("log")
    axes[0, 0].set_ylabel("KL per point (smoothed)")
    axes[1, 0].set_ylabel("sigma (mean)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"collapsed start on {title}")
    return fig


def image_grid_figure(rows: Sequence[tuple[str, Any]], title: str = "",
                      columns: int = 16) -> Figure:
    """Rows of images: each row is ``(label, tensor (n, C, H, W) in [0, 1])``; the first
    ``columns`` images of each row are shown side by side."""
    fig = Figure(figsize=(columns * 0.75, len(rows) * 0.9 + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(rows), 1))
    for ax, (label, images) in zip(axes, rows, strict=True):
        images = _np(images)[:columns].clip(0, 1)
        n, c, h, w = images.shape
        strip = np.ones((h, columns * (w + 1) - 1, c))
        for i in range(n):
            strip[:, i * (w + 1): i * (w + 1) + w] = images[i].transpose(1, 2, 0)
        ax.imshow(strip.squeeze(-1) if c == 1 else strip, cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def sigma_map_figure(sigma: Any, data_std: Any, title: str = "") -> Figure:
    """The model's mean sigma per pixel beside the data's standard deviation per pixel (log
    colour scales): constant pixels are where a learned per-pixel sigma meets its floor."""
    from matplotlib.colors import LogNorm

    sigma, data_std = _np(sigma), _np(data_std)
    fig = Figure(figsize=(8, 3.6), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    for ax, img, name in ((ax1, sigma, "model sigma per pixel (mean over images)"),
                          (ax2, data_std, "data standard deviation per pixel")):
        img = img.mean(0) if img.ndim == 3 else img
        positive = img[img > 0]
        low = float(positive.min()) if positive.size else 1e-3
        m = ax.imshow(np.maximum(img, low), norm=LogNorm(vmin=low, vmax=max(float(img.max()),
                                                                            low * 10)),
                      cmap="magma")
        fig.colorbar(m, ax=ax, fraction=0.046)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
