"""Data-parallel training with PyTorch's own engine: ``torch.distributed`` and
``DistributedDataParallel``, launched by ``torchrun`` (locally or across machines).

Inside a process group (``torchrun`` sets the environment; :func:`init_from_env` joins it),
:func:`pyro_lvae.fit` trains data-parallel:

- the loss module wraps the VAE in ``DistributedDataParallel``, which broadcasts rank 0's
  weights at the start and averages gradients during ``backward``: every parameter, the learned
  sigma included, is a module parameter and stays identical on every rank;
- each rank draws its own data: a sampler gets a generator seeded per rank; a tensor data set
  is shuffled identically on every rank and each rank takes its own slice of every global batch
  (``batch_size`` is per rank; the global batch is ``world_size * batch_size``); no two ranks
  see the same rows in a step;
- each rank has its own model-noise seed (:func:`rank_seed`); schedules are functions of the
  step, so beta and a scheduled sigma are the same on every rank;
- the per-step losses and sigma are reduced across ranks (means; min and max) at each check,
  before they are recorded, checked for NaN or logged;
- rank 0 alone writes checkpoints (atomically), holding every rank's random state: resuming with
  the same number of processes continues exactly; with another number, each rank is reseeded
  from the seed, the step and its rank.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ..errors import ConfigError

__all__ = ["rank_info", "rank_seed", "is_distributed", "init_from_env", "reduce_rows",
           "gather_objects", "check_launch", "torchrun_argv"]


def is_distributed() -> bool:
    """Whether this process is in an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_info() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside a process group."""
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_seed(seed: int, rank: int) -> int:
    """The model-noise seed of ``rank`` for a run seeded with ``seed`` (rank 0 keeps ``seed``)."""
    if rank == 0:
        return seed
    # below 2**32: pyro.set_rng_seed also seeds numpy
    return int(np.random.SeedSequence([seed, rank, 0xD1D]).generate_state(1, np.uint32)[0])


def init_from_env(device: str = "auto") -> torch.device:
    """Join the process group that ``torchrun`` describes in the environment (``nccl`` on
    CUDA, ``gloo`` on the CPU) and return this process's device."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ConfigError("not started by torchrun: RANK and WORLD_SIZE are not set")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda"):
        raise ConfigError(f"distributed training runs on cpu or cuda, not {device!r}")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")


def reduce_rows(rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Means of the per-step losses and sigma across ranks; min and max of sigma's extremes."""
    if not is_distributed():
        return rows
    world = dist.get_world_size()
    means = [k for k in rows if k not in ("sigma_min", "sigma_max")]
    stacked = torch.stack([rows[k] for k in means])
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    out = {k: v / world for k, v in zip(means, stacked, strict=True)}
    for key, op in (("sigma_min", dist.ReduceOp.MIN), ("sigma_max", dist.ReduceOp.MAX)):
        if key in rows:
            value = rows[key].clone()
            dist.all_reduce(value, op=op)
            out[key] = value
    return out


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (on every rank); ``[obj]`` outside a process group."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def check_launch(devices: int, num_nodes: int, node_rank: int) -> None:
    """Refuse impossible process counts and machine indices (before anything starts)."""
    if devices < 1 or num_nodes < 1:
        raise ConfigError(f"Expected --devices >= 1 and --num-nodes >= 1 but got {devices}, "
                          f"{num_nodes}")
    if not 0 <= node_rank < num_nodes:
        raise ConfigError(f"Expected 0 <= --node-rank < --num-nodes but got {node_rank}")


def torchrun_argv(devices: int, num_nodes: int, node_rank: int, master_addr: str,
                  master_port: int, command: list[str]) -> list[str]:
    """``torchrun`` arguments that start ``python -m pyro_lvae.cli <command>`` on ``devices``
    processes per machine, over ``num_nodes`` machines."""
    check_launch(devices, num_nodes, node_rank)
    argv = [f"--nproc_per_node={devices}", f"--nnodes={num_nodes}"]
    if num_nodes == 1:
        argv += ["--standalone"]
    else:
        argv += [f"--node_rank={node_rank}", f"--master_addr={master_addr}",
                 f"--master_port={master_port}"]
    return argv + ["-m", "pyro_lvae.cli", *command]
