"""Shared test helpers."""

import torch


class PoisonOnce(torch.optim.Adam):
    """Adam that writes NaN into the parameters at its ``at``-th step (a divergence that no
    loss recorded before the next check can show)."""

    def __init__(self, params, at, lr=1e-3):
        super().__init__(params, lr=lr)
        self.at, self.calls = at, 0

    def step(self, closure=None):
        super().step(closure)
        self.calls += 1
        if self.calls == self.at:
            with torch.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        p.fill_(float("nan"))
