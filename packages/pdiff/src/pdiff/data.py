"""The host's data: train / held-out validation / test splits kept as uint8 in memory, prepared per batch.

Images stay uint8 ``(N, C, H, W)``; :meth:`HostData.prepare` turns a batch into normalised floats at the host's
input size (resize, grey → RGB for 3-channel hosts), so 224-px timm hosts never hold a float copy of a dataset.
Normalisation uses the per-channel mean/std of the training split (the originals use the same statistics,
hard-coded). ``val_size`` training images (a fixed permutation, seed 0) are held out to select "best" models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffcore.data import ImageArrays, load_image_splits
from diffcore.errors import ConfigError

from pdiff.config import HostConfig
from pdiff.models import host_input


@dataclass
class HostData:
    """Splits as ``(images uint8 (N, C, H, W), labels (N,))`` and how to prepare a batch for the host."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    num_classes: int
    in_chans: int
    image_size: int
    mean: torch.Tensor
    std: torch.Tensor

    def prepare(self, images: torch.Tensor, augment: bool = False, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        """uint8 ``(B, C, H, W)`` → float ``(B, in_chans, S, S)``, normalised; ``augment``: crop (pad 4) + flip."""
        x = images.float().div_(255)
        if augment:
            x = random_crop_flip(x, generator)
        x = (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)
        if x.shape[1] != self.in_chans:
            x = x.expand(-1, self.in_chans, -1, -1)
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return x


def random_crop_flip(x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 4) -> torch.Tensor:
    """Per-sample random crop (zero padding ``pad``) and horizontal flip of a batch ``(B, C, H, W)``, vectorised."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    rows = (dy[:, None] + torch.arange(h)).to(x.device)  # (B, H)
    cols = dx[:, None] + torch.arange(w)
    cols = torch.where(flip[:, None], cols.flip(1), cols).to(x.device)  # (B, W)
    index = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


def _to_chw(arrays: ImageArrays) -> tuple[torch.Tensor, torch.Tensor]:
    return arrays.images.permute(0, 3, 1, 2).contiguous(), arrays.labels


def check_dataset(dataset: str, data_root: str | None = None, val_size: int | None = None) -> None:
    """Fail early (before a run directory is written) when ``dataset`` is unknown, its files are missing or
    unreadable, or the validation hold-out ``val_size`` would leave no training images."""
    train, _ = load_image_splits(dataset, data_root, download=False)
    if val_size is not None:
        _check_val_size(val_size, len(train), dataset)


def _check_val_size(val_size: int, train_size: int, dataset: str) -> None:
    if val_size >= train_size:
        raise ConfigError(f"host.val_size={val_size} leaves no training images ({train_size} in {dataset}); "
                          "lower it")


def load_host_data(config: HostConfig, data_root: str | None = None) -> HostData:
    """The splits of ``config.dataset``: a name of :data:`diffcore.data.IMAGE_DATASETS` or an image folder DIR
    with ``DIR/train/<class>/`` and ``DIR/test/<class>/`` (:func:`diffcore.data.load_image_folder`: PNG/JPEG of one
    size; one channel when every file is greyscale, else RGB)."""
    train, test = (_to_chw(split) for split in load_image_splits(config.dataset, data_root))
    num_classes = int(train[1].max()) + 1
    _check_val_size(config.val_size, len(train[1]), config.dataset)
    order = torch.randperm(len(train[1]), generator=torch.Generator().manual_seed(0))
    val_idx, train_idx = order[: config.val_size], order[config.val_size:]
    if config.train_limit:
        train_idx = train_idx[: config.train_limit]
    test_n = config.test_limit or len(test[1])
    train_images = train[0][train_idx]
    pixels = train_images.float().div(255).transpose(0, 1).reshape(train_images.shape[1], -1)
    native, forced = host_input(config.arch)
    return HostData(
        train=(train_images, train[1][train_idx]), val=(train[0][val_idx], train[1][val_idx]),
        test=(test[0][:test_n], test[1][:test_n]), num_classes=num_classes,
        in_chans=forced or train[0].shape[1], image_size=config.image_size or native,
        mean=pixels.mean(1), std=pixels.std(1).clamp_min(1e-3),
    )
