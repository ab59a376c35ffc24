"""torchrun helpers: process group set-up, rank queries and small collectives.

Everything works without ``torch.distributed`` initialised (one process), so training and
evaluation code calls these unconditionally.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.distributed as dist

__all__ = [
    "init_from_env",
    "is_distributed",
    "rank",
    "local_rank",
    "world_size",
    "is_main",
    "barrier",
    "main_first",
    "gather_lists",
    "broadcast_object",
    "all_true",
    "mean_across",
]


def init_from_env(device: str = "auto") -> torch.device:
    """Joins the process group torchrun describes (``WORLD_SIZE`` > 1); returns this rank's device.

    NCCL on GPUs, gloo on CPUs. Without torchrun it returns the device and does nothing else.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend=backend)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank())
    return device


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Local rank 0 runs the block first (downloads, conversions), the other ranks after it."""
    if local_rank() != 0:
        barrier()
    yield
    if local_rank() == 0:
        barrier()


def gather_lists(items: list) -> list:
    """Concatenation of every rank's list, on rank 0 (others get an empty list)."""
    if not is_distributed():
        return items
    gathered: list = [None] * world_size() if is_main() else None
    dist.gather_object(items, gathered, dst=0)
    return [x for part in gathered for x in part] if is_main() else []


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    out: list = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_true(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` holds on every rank."""
    if not is_distributed():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item() > 0)


def mean_across(values: torch.Tensor) -> torch.Tensor:
    """Element-wise mean of ``values`` over ranks."""
    if not is_distributed():
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / world_size()
