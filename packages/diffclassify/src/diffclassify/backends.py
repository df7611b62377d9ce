"""Optional backend: a diffusers ``UNet2DModel`` as the DDPM feature source (spec §4, §14).

A user who has a diffusers UNet folder — e.g. the public ``google/ddpm-cifar10-32`` (35.7 M parameters, the
DDAE setting) downloaded on a machine with a network — passes it to ``extract --model DIR --dataset ...``:
its ``config.json`` (``_class_name: UNet2DModel``) and weights are read by ``UNet2DModel.from_pretrained``, and
the noise schedule by ``DDPMScheduler`` from ``scheduler_config.json`` beside it (or the folder above, the
pipeline layout), else the linear 1e-4 → 0.02 schedule of 1000 steps. Taps are forward hooks on
``up_blocks[i]`` (``up0`` … ``up{n−1}``, coarse to fine), globally pooled — where DDAE reads its features.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from diffcore.errors import CheckpointError
from torch import nn

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def is_diffusers_unet(folder: Path) -> bool:
    try:
        return json.loads((folder / "config.json").read_text()).get("_class_name") == "UNet2DModel"
    except (OSError, json.JSONDecodeError):
        return False


class DiffusersUNet(nn.Module):
    """ε̂ = unet(x_t, t).sample, with pooled ``up_blocks`` activations as feature taps.

    Shapes: ``x`` ``[N, C, s, s]`` in [−1, 1], ``t`` ``[N]`` integer steps → ``[N, C, s, s]``.
    """

    label_conditioned = False

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet
        self.DEFAULT_TAPS = tuple(self.feature_dims())

    def feature_dims(self) -> dict[str, int]:
        widths = list(reversed(self.unet.config.block_out_channels))
        return {f"up{i}": widths[i] for i in range(len(self.unet.up_blocks))}

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t).sample

    def features(self, x: torch.Tensor, t: torch.Tensor, taps: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        taps = tuple(taps or self.DEFAULT_TAPS)
        dims = self.feature_dims()
        unknown = [name for name in taps if name not in dims]
        if unknown:
            raise ValueError(f"unknown block {', '.join(map(repr, unknown))} for UNet2DModel; "
                             f"valid blocks: {', '.join(dims)}")
        acts: dict[str, torch.Tensor] = {}
        hooks = [self.unet.up_blocks[int(name[2:])].register_forward_hook(
            lambda _m, _i, out, name=name: acts.__setitem__(name, out)) for name in taps]
        try:
            self.unet(x, t)
        finally:
            for hook in hooks:
                hook.remove()
        return {name: acts[name] for name in taps}


def load_diffusers(folder: Path, device: str | torch.device = "cpu") -> tuple[DiffusersUNet, dict[str, Any], str]:
    """``(model, diffclassify info, weights sha256)`` of a diffusers UNet folder."""
    from diffcore.io import file_sha256
    from diffusers import DDPMScheduler, UNet2DModel

    weights = next((folder / name for name in WEIGHT_FILES if (folder / name).exists()), None)
    if weights is None:
        raise CheckpointError(f"{folder} has a UNet2DModel config.json but no {' or '.join(WEIGHT_FILES)}")
    try:
        unet = UNet2DModel.from_pretrained(str(folder))
    except (OSError, ValueError, RuntimeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"cannot load the diffusers UNet in {folder} ({first})") from None
    if getattr(unet.config, "num_class_embeds", None) or getattr(unet.config, "class_embed_type", None):
        raise CheckpointError(f"{folder} is a class-conditional UNet2DModel; the features must come from an "
                              "unconditional one")
    scheduler_dir = next((d for d in (folder, folder.parent, folder.parent / "scheduler")
                          if (d / "scheduler_config.json").exists()), None)
    scheduler = DDPMScheduler.from_pretrained(str(scheduler_dir)) if scheduler_dir else DDPMScheduler()
    cfg = scheduler.config
    info = {"kind": "ddpm", "dataset": "", "backend": "diffusers",
            "image": {"channels": unet.config.in_channels, "size": unet.config.sample_size},
            "process": {"type": "discrete", "num_steps": cfg.num_train_timesteps, "beta_start": cfg.beta_start,
                        "beta_end": cfg.beta_end, "beta_schedule": cfg.beta_schedule, "exact_betas": True,
                        "forward_variance": "standard"}}
    return DiffusersUNet(unet).to(device).eval(), info, file_sha256(weights)
