"""Protocol runs spread over processes: each process takes a contiguous share, rank 0 gathers.

The graph protocol (100 splits × 20 inits of independent runs) and the few-shot evaluation (10,000
independent episodes) are embarrassingly parallel. Under ``accelerate launch -m diff_resnet ...`` or
``torchrun``, process r of W takes items ``[r·n/W, (r+1)·n/W)`` (``RANK`` and ``WORLD_SIZE`` from the
launcher) and :func:`gather_lists` concatenates the results in rank order over a gloo group, so the gathered
list is the one a single process computes, with or without GPUs. The commands that are not Accelerate-aware
refuse a multi-process launch (:func:`single_process`). Imports no torch at module level: the CLI uses it.
"""

from __future__ import annotations

import atexit
import functools
from typing import Any

from diffcore.cli import processes
from diffcore.errors import ConfigError


def world_size() -> int:
    """Processes of the launch (1 without a launcher)."""
    return processes()[1]


def single_process(command: str) -> None:
    """Refuse a multi-process launch for a command that would only repeat the same work in every process."""
    if world_size() > 1:
        raise ConfigError(f"{command} is not Accelerate-aware (every process would do the same work): run it "
                          "without accelerate launch / torchrun")


@functools.cache
def _gloo_group() -> Any:
    """A gloo process group for gathering Python objects (none without a launcher).

    ``torch.distributed`` is initialised from the launcher's environment (``env://``) when nobody has done so
    yet; when Accelerate already set up a group (NCCL on GPUs), a separate gloo group carries the few
    kilobytes of results, so no tensor has to live on a particular GPU. Called by every process at the same
    points, as ``new_group`` requires.
    """
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
        atexit.register(_destroy_if_initialised)  # after an error (diffcore.cli.Group ends the rest)
        return dist.group.WORLD
    return dist.new_group(backend="gloo")


def _destroy_if_initialised() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def process_share(count: int) -> range:
    """This process's contiguous block of ``range(count)`` (the whole range in a single process)."""
    rank, world = processes()
    return range(rank * count // world, (rank + 1) * count // world)


def gather_lists(local: list[Any]) -> list[Any]:
    """Every process's ``local`` list (picklable items), concatenated in rank order, on every process."""
    if world_size() == 1:
        return list(local)
    import torch.distributed as dist

    group = _gloo_group()
    gathered: list[list[Any] | None] = [None] * world_size()
    dist.all_gather_object(gathered, list(local), group=group)
    return [item for part in gathered for item in part]

