"""Images and the few-shot splits (spec §6, §11).

Datasets: the core's named loaders (``mnist``, ``cifar10``, ``cifar10-subset``, ``digits``, ``cifar100``) or an
image folder ``DIR`` with ``DIR/train/<class>/*.png`` and ``DIR/test/<class>/*.png`` (the core's
:func:`~diffcore.data.load_image_folder`: PNG or JPEG of one size; one channel when every file is greyscale, else
RGB). Images stay uint8 ``[N, H, W, C]`` until a model needs them (:func:`to_unit` → [0, 1], :func:`to_signed` →
[−1, 1]).

Splits are index arrays into one split of a dataset, chosen from labels alone:

* :func:`first_per_class` — the first ``s`` images of every class in dataset order (the original's
  ``split_dataset``: deterministic and class-balanced);
* :func:`next_per_class` — the ``n`` images of every class that follow the first ``s`` (the original's
  "test" set taken from the training split, ``--test-source train-next``);
* :func:`random_per_class` — ``s`` images per class drawn with a generator (``--split random``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffcore.data import IMAGE_DATASETS, ImageArrays
from diffcore.errors import DataError


@dataclass(frozen=True)
class ImageSpec:
    """What a model needs to know about a dataset's images."""

    channels: int
    size: int
    num_classes: int


def is_named(dataset: str) -> bool:
    return dataset in IMAGE_DATASETS


def dataset_name(dataset: str) -> str:
    """A short name for run directories and file headers: the name itself, or the folder's absolute path."""
    return dataset if is_named(dataset) else str(Path(dataset).expanduser().resolve())


def image_spec(arrays: ImageArrays) -> ImageSpec:
    _, h, w, c = arrays.images.shape
    if h != w:
        raise DataError(f"images must be square, got {h}×{w}")
    return ImageSpec(channels=c, size=h, num_classes=len(arrays.classes))


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, H, W, C]`` → float ``[N, C, H, W]`` in [0, 1]."""
    return images.permute(0, 3, 1, 2).float().div_(255.0)


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, H, W, C]`` → float ``[N, C, H, W]`` in [−1, 1] (normalise with mean 0.5, std 0.5)."""
    return to_unit(images).mul_(2.0).sub_(1.0)


def class_counts(labels: torch.Tensor | np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(labels), minlength=num_classes)


def first_per_class(labels: torch.Tensor | np.ndarray, per_class: int, start: int = 0) -> np.ndarray:
    """Positions of images ``start … start + per_class − 1`` of every class, in dataset order, class-major.

    Raises :class:`DataError` when a class has fewer than ``start + per_class`` images.
    """
    labels = np.asarray(labels)
    chosen = []
    for c in range(int(labels.max()) + 1 if len(labels) else 0):
        members = np.flatnonzero(labels == c)
        if len(members) < start + per_class:
            raise DataError(f"class {c} has {len(members)} images, fewer than the {start + per_class} needed")
        chosen.append(members[start:start + per_class])
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)


def next_per_class(labels: torch.Tensor | np.ndarray, after: int, count: int) -> np.ndarray:
    """The ``count`` images of every class that follow its first ``after`` (``--test-source train-next``)."""
    return first_per_class(labels, count, start=after)


def random_per_class(labels: torch.Tensor | np.ndarray, per_class: int, generator: np.random.Generator) -> np.ndarray:
    """``per_class`` images of every class drawn without replacement, sorted within each class."""
    labels = np.asarray(labels)
    chosen = []
    for c in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise DataError(f"class {c} has {len(members)} images, fewer than the {per_class} requested")
        chosen.append(np.sort(generator.choice(members, per_class, replace=False)))
    return np.concatenate(chosen)
