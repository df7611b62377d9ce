"""One device resolver for every package: the device asked for if it exists here, else a one-line error.

``auto`` means this process's GPU when one is visible (``LOCAL_RANK`` under ``accelerate launch``/``torchrun``),
else the CPU. ``cuda`` under a launcher likewise means the process's own GPU, so a command spread over processes
never puts every rank on ``cuda:0``. Imports torch lazily: config validation (torch-free elsewhere) may call
:func:`check_device`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from diffcore.config import require
from diffcore.errors import ConfigError

if TYPE_CHECKING:
    import torch


def check_device(device: str) -> None:
    """``device`` must be ``auto`` or a torch device string whose device exists on this machine."""
    if device == "auto":
        return
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"device={device!r} is not a torch device ({err}); use auto, cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count()
        require(count > 0, f"device={device!r} but no CUDA GPU is visible here; run on the CPU (device cpu)")
        require(parsed.index is None or parsed.index < count,
                f"device={device!r} but only {count} CUDA device(s) are visible (cuda:0…cuda:{count - 1})")
    elif parsed.type == "mps":
        require(torch.backends.mps.is_available(), f"device={device!r} but MPS is not available here; use cpu")
    else:
        require(parsed.type == "cpu", f"device={device!r} is not supported; use auto, cpu or cuda")


def resolve_device(device: str = "auto") -> torch.device:
    """The :class:`torch.device` this process computes on, after :func:`check_device`.

    ``auto`` → ``cuda`` if a GPU is visible, else ``cpu``; a bare ``cuda`` → ``cuda:LOCAL_RANK`` (0 without a
    launcher); ``cuda:N``, ``cpu`` and ``mps`` as given.
    """
    import torch

    check_device(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(device)
