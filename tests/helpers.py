"""Shared test helpers."""

import hashlib
import inspect

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


def folder_digest(folder):
    """Every file under ``folder`` (in subfolders and hidden ones too) and its SHA-256: equal
    digests before and after a refused command mean nothing in the folder changed."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def public_names(module):
    """A module's public names: its ``__all__``, or else the classes and functions it defines
    whose names do not start with an underscore."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items() if not n.startswith("_")
                 and (inspect.isclass(v) or inspect.isfunction(v))
                 and getattr(v, "__module__", None) == module.__name__]
    return list(names)


def leave_process_group():
    """The end of a worker's work under ``torch.distributed``: free what still holds the
    process group (a DDP wrapper in a reference cycle), wait for every rank, destroy the
    group, and leave the process without the interpreter's finalisation. A rank that tears
    its group down while another still works, or whose interpreter finalises while gloo's
    threads still hold tensors, can abort (``terminate called without an active exception``,
    SIGABRT) after its work is done and saved."""
    import gc
    import os
    import sys

    import torch.distributed as dist

    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
