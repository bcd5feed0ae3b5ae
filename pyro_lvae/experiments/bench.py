"""Speed: pyro-lvae's training step against a hand-written PyTorch step doing the same work.

For each case the same networks (copies of one initialisation), the same loss (the full Normal
log-density of the data and the one-draw KL estimate, summed), the same optimiser (Adam) and the
same data work (fresh points of the artificial problem, or uint8 images dequantised per batch)
run in one process:

- ``reference``: a hand-written loop in plain PyTorch (no Pyro);
- ``pyro-lvae``: :func:`pyro_lvae.fit`'s default path (history, schedules and checks included);
- ``pyro SVI``: ``pyro.infer.SVI`` with ``Trace_ELBO`` and ``pyro.optim.Adam``, for context.

With ``ablation=True``, the steps between the two are timed too, to show what each change buys:
``traced ELBO + torch Adam`` (the ELBO through Pyro's ``trace``/``replay`` handlers, one torch
optimiser, validation off) and ``pyro SVI, validation on`` (Pyro's default).

Repetitions alternate between the contestants, so that a change in the machine's load touches
all of them; the ratio is of medians.
"""

from __future__ import annotations

import copy
import gc
import logging
import math
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any

import pyro
import torch

from .. import observations
from ..datasets import Dequantize, manifold2d
from ..errors import ConfigError
from ..objective import elbo_terms
from ..observations import LearnedVectorScale
from ..training import Checks, ProgressBar, fit, resolve_device
from ..vae import VAE, conv_vae, mlp_vae

__all__ = ["Case", "CASES", "run_case", "run", "markdown"]

LOG_2PI = math.log(2 * math.pi)


@dataclass
class Case:
    name: str
    kind: str  # "mlp" or "conv"
    obs: str  # a learned kind of pyro_lvae.observations: learned-scalar or learned-vector
    batch_size: int
    steps: int  # per repetition


CASES = [
    Case("artificial 2D, residual MLP 4x200, LS-VAE", "mlp", "learned-scalar", 100, 300),
    Case("artificial 2D, residual MLP 4x200, LV-VAE", "mlp", "learned-vector", 100, 300),
    Case("Fashion-MNIST size, conv ResNet, LV-VAE, batch 128", "conv", "learned-vector", 128, 10),
    Case("Fashion-MNIST size, conv ResNet, LV-VAE, batch 512", "conv", "learned-vector", 512, 4),
]


def _build(case: Case, small: bool = False) -> VAE:
    """The paper's sizes (``small``: tiny networks, for tests)."""
    obs = observations.build(case.obs, init_scale=1.0, min_scale=1e-3)
    if case.kind == "mlp":
        return mlp_vae(2, 2, obs, hidden=8 if small else 200, blocks=1 if small else 4,
                       standardize=False)
    if small:
        return conv_vae((1, 28, 28), 4, obs, width=4, convs=3, blocks=1)
    return conv_vae((1, 28, 28), 256, obs, width=32, convs=3, blocks=4)


class _Reference(torch.nn.Module):
    """The same model written by hand: networks, sigma and loss in plain PyTorch."""

    def __init__(self, vae: VAE) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(vae.guide.encoder.net)
        self.decoder = copy.deepcopy(vae.model.decoder)
        self.latent_dim = vae.latent_dim
        obs = vae.observation
        self.vector = isinstance(obs, LearnedVectorScale)
        self.min_scale = obs.min_scale
        if self.vector:
            self.offset = math.log(math.expm1(obs.init_scale - obs.min_scale))
        else:
            self.log_sigma = torch.nn.Parameter(
                obs.scale_unconstrained.detach().clone())  # sigma = min + exp(log_sigma)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        loc, raw = self.encoder(x).split(self.latent_dim, dim=-1)
        scale = torch.nn.functional.softplus(raw) + 1e-4
        eps = torch.randn_like(loc)
        z = loc + scale * eps
        out = self.decoder(z)
        if self.vector:
            mu, raw_sigma = out.chunk(2, dim=1)
            sigma = self.min_scale + torch.nn.functional.softplus(raw_sigma + self.offset)
        else:
            mu, sigma = out, self.min_scale + self.log_sigma.exp()
        rec = (0.5 * ((x - mu) / sigma) ** 2 + torch.log(sigma) + 0.5 * LOG_2PI).sum()
        kl = (0.5 * z**2 - 0.5 * eps**2 - torch.log(scale)).sum()  # log q(z|x) - log p(z)
        return rec + kl


def _data(case: Case, device: torch.device):
    """A function returning a fresh batch (the data work both loops do every step)."""
    if case.kind == "mlp":
        gen = torch.Generator().manual_seed(1)
        return lambda: manifold2d(case.batch_size, generator=gen).to(device), manifold2d, None
    images = torch.randint(0, 256, (4096, 1, 28, 28), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1)).to(device)
    deq = Dequantize()
    gen = torch.Generator().manual_seed(2)

    def batch():
        idx = torch.randint(0, len(images), (case.batch_size,), generator=gen).to(device)
        return deq(images[idx], gen)

    return batch, images, deq


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


#: how a repetition is timed: wall-clock seconds, or the process's CPU seconds (``cpu``: on
#: one thread, so that time the host gives to other machines' jobs does not count)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def run_case(case: Case, device: str = "auto", repetitions: int = 5, svi: bool = True,
             small: bool = False, ablation: bool = False, clock: str = "wall") -> dict[str, Any]:
    """Seconds per step of each contestant (one entry per repetition), on ``clock``."""
    timer = CLOCKS[clock]
    device = resolve_device(device)
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    vae = _build(case, small).to(device)
    ref = _Reference(vae).to(device)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    batch, data, transform = _data(case, device)
    svi_vae = copy.deepcopy(vae) if svi else None  # a copy has param-store names of its own
    if svi:
        svi_runner = pyro.infer.SVI(svi_vae.model, svi_vae.guide,
                                    pyro.optim.Adam({"lr": 1e-3}), pyro.infer.Trace_ELBO())

    def reference(n: int) -> None:
        for _ in range(n):
            loss = ref.loss(batch())
            ref_opt.zero_grad(set_to_none=True)
            loss.backward()
            ref_opt.step()

    # one optimiser for all of a contestant's repetitions, as in one long run (fit would
    # otherwise start a fresh Adam per repetition, and fresh and aged ones ran at different
    # speeds on a 2-core CPU)
    ours_opt = torch.optim.Adam(vae.parameters(), lr=1e-3)

    def ours(n: int) -> None:
        fit(vae, data, steps=n, batch_size=case.batch_size, optimizer=ours_opt, device=device,
            transform=transform, tools=[ProgressBar(False), Checks(every=min(100, n))])

    def plain_svi(n: int) -> None:
        with pyro.validation_enabled(False):
            for _ in range(n):
                svi_runner.step(batch())

    contestants = {"reference": reference, "pyro-lvae": ours}
    if svi:
        contestants["pyro SVI"] = plain_svi
    if ablation:
        traced_vae = copy.deepcopy(vae)
        traced_opt = torch.optim.Adam(traced_vae.parameters(), lr=1e-3)

        def traced(n: int) -> None:
            with pyro.validation_enabled(False):
                for _ in range(n):
                    loss = elbo_terms(traced_vae.model, traced_vae.guide, batch()).loss
                    traced_opt.zero_grad(set_to_none=True)
                    loss.backward()
                    traced_opt.step()

        def validated_svi(n: int) -> None:
            with pyro.validation_enabled(True):
                for _ in range(n):
                    svi_runner.step(batch())

        contestants["traced ELBO + torch Adam"] = traced
        contestants["pyro SVI, validation on"] = validated_svi
    for f in contestants.values():  # warm-up: allocators, lazy initialisation
        f(max(2, case.steps // 5))
    times: dict[str, list[float]] = {k: [] for k in contestants}
    for _ in range(repetitions):
        for name, f in contestants.items():
            gc.collect()  # each starts on a clean heap: no collection of another's garbage
            _sync(device)
            t0 = timer()
            f(case.steps)
            _sync(device)
            times[name].append((timer() - t0) / case.steps)
    return {"case": case.name, "batch_size": case.batch_size, "steps": case.steps,
            "repetitions": repetitions, "device": str(device), "seconds": times,
            "clock": clock}


def run(device: str = "auto", repetitions: int = 5, quick: bool = False,
        report=print, ablation: bool = False, clock: str = "wall") -> list[dict[str, Any]]:
    """Every case of :data:`CASES`; ``clock="cpu"`` times CPU seconds on one thread."""
    if clock not in CLOCKS:
        raise ConfigError(f"unknown clock {clock!r}; expected one of {', '.join(CLOCKS)}")
    threads = torch.get_num_threads()
    if clock == "cpu":
        torch.set_num_threads(1)
    training_log = logging.getLogger("pyro_lvae.training")
    level = training_log.level
    training_log.setLevel(logging.ERROR)  # short timed runs end early, often "collapsed"
    try:
        return _run_cases(device, repetitions, quick, report, ablation, clock)
    finally:
        torch.set_num_threads(threads)
        training_log.setLevel(level)


def _run_cases(device, repetitions, quick, report, ablation, clock) -> list[dict[str, Any]]:
    results = []
    for case in CASES:
        if quick:
            case = Case(case.name, case.kind, case.obs, case.batch_size,
                        max(2, case.steps // 5))
        r = run_case(case, device, repetitions=2 if quick else repetitions,
                     ablation=ablation, clock=clock)
        report(_line(r))
        results.append(r)
    return results


def _line(r: dict[str, Any]) -> str:
    med = {k: statistics.median(v) for k, v in r["seconds"].items()}
    ratio = med["pyro-lvae"] / med["reference"]
    return (f"{r['case']}: reference {1 / med['reference']:.1f} steps/s, pyro-lvae "
            f"{1 / med['pyro-lvae']:.1f} steps/s, ratio {ratio:.3f}")


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| case | device | reference steps/s | pyro-lvae steps/s | pyro-lvae samples/s | "
             "time ratio pyro-lvae / reference (median, range) | plain Pyro SVI ratio |",
             "|---|---|---:|---:|---:|---|---:|"]
    for r in results:
        s = r["seconds"]
        med = {k: statistics.median(v) for k, v in s.items()}
        ratios = [a / b for a, b in zip(s["pyro-lvae"], s["reference"], strict=True)]
        svi = f"{med['pyro SVI'] / med['reference']:.2f}" if "pyro SVI" in med else "-"
        lines.append(
            f"| {r['case']} | {r['device']} | {1 / med['reference']:.2f} | "
            f"{1 / med['pyro-lvae']:.2f} | {r['batch_size'] / med['pyro-lvae']:.0f} | "
            f"{med['pyro-lvae'] / med['reference']:.3f} ({min(ratios):.3f} to "
            f"{max(ratios):.3f}) | {svi} |")
    extra = [k for k in results[0]["seconds"] if k not in ("reference", "pyro-lvae",
                                                           "pyro SVI")]
    if extra:
        lines += ["", "| case | " + " | ".join(f"{k} ratio" for k in extra) + " |",
                  "|---|" + "---:|" * len(extra)]
        for r in results:
            med = {k: statistics.median(v) for k, v in r["seconds"].items()}
            lines.append(f"| {r['case']} | " + " | ".join(
                f"{med[k] / med['reference']:.2f}" for k in extra) + " |")
    clock = results[0].get("clock", "wall")
    threads = 1 if clock == "cpu" else torch.get_num_threads()
    env = (f"torch {torch.__version__}, pyro-ppl {pyro.__version__}, Python "
           f"{platform.python_version()}, {threads} thread{'s' * (threads > 1)}, "
           f"{'process CPU' if clock == 'cpu' else 'wall-clock'} time")
    return "\n".join(lines) + f"\n\n{env}; {results[0]['repetitions']} alternating repetitions.\n"
