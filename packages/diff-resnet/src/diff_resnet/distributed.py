"""Protocol runs spread over processes: each process takes a contiguous share, rank 0 gathers.

The graph protocol (100 splits × 20 inits of independent runs) and the few-shot evaluation (10,000
independent episodes) are embarrassingly parallel. Under ``accelerate launch -m diff_resnet ...`` or
``torchrun``, process r of W takes items ``[r·n/W, (r+1)·n/W)`` and :func:`gather_lists` concatenates the
results in rank order, so the gathered list is the one a single process computes. Accelerate's
``PartialState`` sets up ``torch.distributed`` from the launcher's environment (gloo on CPUs, NCCL on GPUs);
on a machine without GPUs, launch with ``ACCELERATE_USE_CPU=yes``.
"""

from __future__ import annotations

import os
from typing import Any

import torch


def world_size() -> int:
    """Processes of the launch (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _state() -> Any:
    """Accelerate's process state. Without a GPU (or with ``ACCELERATE_USE_CPU=yes``) it must be asked for CPU
    processes explicitly, or a ``torchrun`` launch is taken for a single process."""
    from accelerate import PartialState

    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "yes", "true") or not torch.cuda.is_available()
    return PartialState(cpu=cpu)


def process_share(count: int) -> range:
    """This process's contiguous block of ``range(count)`` (the whole range in a single process)."""
    world = world_size()
    if world == 1:
        return range(count)
    rank = _state().process_index
    return range(rank * count // world, (rank + 1) * count // world)


def gather_lists(local: list[Any]) -> list[Any]:
    """Every process's ``local`` list (picklable items), concatenated in rank order, on every process."""
    if world_size() == 1:
        return list(local)
    from accelerate.utils import gather_object

    _state()  # initialises the process group
    return list(gather_object(list(local)))


def process_device(device: str) -> torch.device:
    """The device this process computes on: ``cuda`` means this process's own GPU under a launcher."""
    if device == "cuda" and world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(device)
