"""Where training runs: the ``torchrun`` process group (NCCL on GPUs, gloo on CPU), this rank's device, DDP.

One process is a world of one: every helper here is then a no-op or the identity, so the training loop reads the
same either way.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from msvit_edge.errors import MsvitEdgeError


def init_distributed() -> tuple[int, int]:
    """(rank, world size), joining the ``torchrun`` process group when there is more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def is_main_process() -> bool:
    """True in a single process and in rank 0 under ``torchrun`` (which sets RANK): the one that logs and writes."""
    return int(os.environ.get("RANK", "0")) == 0


def resolve_device(name: str, rank: int = 0) -> torch.device:
    """A ``--device`` value (auto, cpu, cuda, cuda:N) as a device this PyTorch has; auto: this rank's GPU or the CPU."""
    if name == "auto":
        name = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MsvitEdgeError(f"--device {name}: not a device (expected auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MsvitEdgeError(f"--device {name}: no CUDA GPU is available to this PyTorch")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise MsvitEdgeError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def wrap(module: nn.Module, device: torch.device, world: int) -> nn.Module:
    """``module`` under DistributedDataParallel when there are several processes; itself otherwise."""
    if world == 1:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def barrier(world: int) -> None:
    """Wait for every process (nothing to wait for in one)."""
    if world > 1:
        dist.barrier()


def shut_down(world: int) -> None:
    """Leave the process group that ``init_distributed`` joined."""
    if world > 1:
        dist.destroy_process_group()
