"""Datasets and the paper's augmentation (spec §6): CIFAR-10/100, the offline CIFAR-10 subset, image folders.

Training: RandomCrop(32, padding 4, zero fill) + horizontal flip, then normalisation (CIFAR-10 statistics,
also for CIFAR-100, as the original does; ``norm_stats="cifar100"`` switches). Test: normalisation only.
An image folder ``DIR`` (``DIR/train/<class>/*`` and ``DIR/val/<class>/*`` or ``DIR/test/...``) is read
with torchvision's ``ImageFolder``; CIFAR-sized models get the CIFAR pipeline (images resized to 32),
ImageNet models RandomResizedCrop(224) + flip for training and Resize(256) + CenterCrop(224) for testing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffcore.data import ImageArrays, ImageDataset, class_balanced_split, load_images
from diffcore.errors import DataError
from torch.utils.data import Dataset
from torchvision.transforms import v2

from dianet.models import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD
from dianet.names import DATASETS

NORM_STATS = {
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
}


@dataclass
class Splits:
    """``val`` (None without ``val_split``): training images held out, with the test pipeline."""

    train: Dataset
    test: Dataset
    num_classes: int
    classes: list[str]
    val: Dataset | None = None


def transforms(norm_stats: str, train: bool, image_size: int = 32, folder: bool = False) -> v2.Compose:
    """The augmentation (``train``) or test pipeline; ``image_size`` 224 selects the ImageNet recipe."""
    mean, std = NORM_STATS[norm_stats]
    steps: list = [v2.ToImage()]
    if image_size > 32:
        steps += [v2.RandomResizedCrop(image_size), v2.RandomHorizontalFlip()] if train else \
                 [v2.Resize(round(image_size / 0.875)), v2.CenterCrop(image_size)]
    else:
        if folder:
            steps += [v2.Resize(image_size), v2.CenterCrop(image_size)]
        if train:
            steps += [v2.RandomCrop(image_size, padding=4), v2.RandomHorizontalFlip()]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(steps)


def _first(arrays: ImageArrays, limit: int | None) -> ImageArrays:
    if limit is None:
        return arrays
    if limit < 1:
        raise DataError(f"a split limit must be positive, got {limit}")
    return ImageArrays(arrays.images[:limit], arrays.labels[:limit], arrays.classes)


def _image_folder(root: Path, split: str, transform) -> Dataset:
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(root / split), transform=transform)
    except (FileNotFoundError, OSError) as err:
        raise DataError(f"image folder {root / split} is unusable ({err}); expected {root}/{split}/<class>/<image>") \
            from None


def check_dataset(dataset: str) -> None:
    """A :class:`DataError` unless ``dataset`` is a known name or an existing folder."""
    if dataset not in DATASETS and not Path(dataset).expanduser().is_dir():
        raise DataError(f"dataset {dataset!r} is neither one of {', '.join(DATASETS)} nor an image folder "
                        "(DIR/train/<class>/*, DIR/val/<class>/*)")


def held_out(labels: np.ndarray, size: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: ``size`` images held out, ``size / num_classes`` of every class, drawn with a fixed
    seed (0), so every seed of a protocol selects on the same images."""
    if size % num_classes:
        raise DataError(f"--val-split {size} must be a multiple of the {num_classes} classes (class-balanced)")
    val, train = class_balanced_split(labels, [size // num_classes], np.random.RandomState(0))
    return np.sort(train), np.sort(val)


def load_splits(dataset: str, data_root: str | None, norm_stats: str, image_size: int = 32,
                train_limit: int | None = None, test_limit: int | None = None, need_train: bool = True,
                val_split: int = 0) -> Splits:
    """Train, test (and with ``val_split`` > 0 validation) datasets of ``dataset`` (a name of :data:`DATASETS` or
    an image-folder path). ``train_limit`` keeps the first N training images, before the validation split."""
    if dataset in DATASETS:
        num_classes = DATASETS[dataset]
        test_arrays = _first(load_images(dataset, data_root, train=False), test_limit)
        train_arrays = _first(load_images(dataset, data_root, train=True), train_limit) if need_train else test_arrays
        val = None
        if val_split:
            keep, out = held_out(_check_split(train_arrays.labels, val_split), val_split, num_classes)
            val = ImageDataset(ImageArrays(train_arrays.images[out], train_arrays.labels[out], train_arrays.classes),
                               transforms(norm_stats, False, image_size))
            train_arrays = ImageArrays(train_arrays.images[keep], train_arrays.labels[keep], train_arrays.classes)
        return Splits(ImageDataset(train_arrays, transforms(norm_stats, True, image_size)),
                      ImageDataset(test_arrays, transforms(norm_stats, False, image_size)),
                      num_classes, list(test_arrays.classes), val)
    check_dataset(dataset)
    root = Path(dataset).expanduser()
    test_split = next((s for s in ("val", "test") if (root / s).is_dir()), None)
    if test_split is None or (need_train and not (root / "train").is_dir()):
        raise DataError(f"image folder {root} needs train/ and val/ (or test/) subfolders of class folders")
    test = _image_folder(root, test_split, transforms(norm_stats, False, image_size, folder=True))
    train = _image_folder(root, "train", transforms(norm_stats, True, image_size, folder=True)) if need_train else test
    if need_train and train.classes != test.classes:
        raise DataError(f"{root}/train and {root}/{test_split} have different class folders")
    classes = list(test.classes)
    if test_limit is not None:
        test = torch.utils.data.Subset(test, range(min(test_limit, len(test))))
    if not need_train:
        return Splits(train, test, len(classes), classes)
    labels = np.asarray(train.targets[:train_limit])
    keep, val = np.arange(len(labels)), None
    if val_split:
        keep, out = held_out(_check_split(labels, val_split), val_split, len(classes))
        plain = _image_folder(root, "train", transforms(norm_stats, False, image_size, folder=True))
        val = torch.utils.data.Subset(plain, out.tolist())
    if train_limit is not None or val_split:
        train = torch.utils.data.Subset(train, keep.tolist())
    return Splits(train, test, len(classes), classes, val)


def _check_split(labels: np.ndarray, val_split: int) -> np.ndarray:
    if val_split >= len(labels):
        raise DataError(f"--val-split {val_split} holds out every training image (there are {len(labels)}); "
                        "choose fewer")
    return labels
