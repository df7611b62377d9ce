"""Images: whole splits in memory as uint8 ``[N, H, W, C]`` (:class:`ImageArrays`), from a named dataset or a folder.

Named datasets (:data:`IMAGE_DATASETS`): MNIST (torchvision's ``MNIST/raw`` or the offline ``images/mnist`` IDX
files), CIFAR-10/100 (torchvision's layout), the offline CIFAR-10 15k/1k subset (its own name, ``cifar10-subset``)
and scikit-learn's embedded 8×8 digits. Image folders (``DIR/train/<class>/*.png``, :func:`load_image_folder`)
bring a user's own images to every command that takes ``--dataset DIR``.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffcore.data.paths import data_root, first_existing, not_found, require_extra
from diffcore.errors import DataError


@dataclass
class ImageArrays:
    """A whole image split in memory: ``images`` uint8 ``[N, H, W, C]``, ``labels`` int64 ``[N]``."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def select_classes(self, classes: Sequence[int]) -> ImageArrays:
        """Keep only the given classes, relabelled 0…len(classes)−1 in the given order."""
        keep = torch.isin(self.labels, torch.tensor(list(classes)))
        remap = torch.full((int(self.labels.max()) + 1,), -1, dtype=torch.long)
        remap[torch.tensor(list(classes))] = torch.arange(len(classes))
        return ImageArrays(self.images[keep], remap[self.labels[keep]], [self.classes[c] for c in classes])


class ImageDataset(torch.utils.data.Dataset):
    """``ImageArrays`` as a map-style dataset yielding ``(transform(image CHW uint8), label)``."""

    def __init__(self, arrays: ImageArrays, transform=None):
        self.arrays = arrays
        self.transform = transform

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int):
        image = self.arrays.images[i].permute(2, 0, 1)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.arrays.labels[i]


IMAGE_DATASETS = ("mnist", "cifar10", "cifar100", "cifar10-subset", "digits")


def load_images(name: str, root: str | Path | None = None, train: bool = True, download: bool = True) -> ImageArrays:
    """One split of ``mnist``, ``cifar10``, ``cifar100``, ``cifar10-subset`` (15k/1k) or ``digits`` (embedded)."""
    if name == "mnist":
        return load_mnist(root, train, download)
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, root, train, download)
    if name == "cifar10-subset":
        return load_cifar10_subset(root, train)
    if name == "digits":
        return load_digits(train)
    raise DataError(f"unknown image dataset {name!r}; choose one of {', '.join(IMAGE_DATASETS)}")


MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally ``.gz``): magic, dims as big-endian uint32, then uint8 data."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not a uint8 IDX file")
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: {data.size} values for shape {dims}")
    return data.reshape(dims)


def load_mnist(root: str | Path | None = None, train: bool = True, download: bool = True) -> ImageArrays:
    """MNIST from torchvision's ``MNIST/raw`` or the offline ``images/mnist`` IDX files (plain or ``.gz``)."""
    root = data_root(root)
    images_name, labels_name = MNIST_FILES[train]
    candidates = [root / "MNIST" / "raw", root / "images" / "mnist", root / "mnist"]
    for folder in candidates:
        for suffix in ("", ".gz"):
            if (folder / f"{images_name}{suffix}").exists() and (folder / f"{labels_name}{suffix}").exists():
                images = read_idx(folder / f"{images_name}{suffix}")
                labels = read_idx(folder / f"{labels_name}{suffix}")
                return ImageArrays(
                    torch.from_numpy(images.copy())[..., None], torch.from_numpy(labels.astype(np.int64)),
                    [str(i) for i in range(10)],
                )
    if download:
        try:
            from torchvision.datasets import MNIST

            MNIST(str(root), train=train, download=True)
            return load_mnist(root, train, download=False)
        except (OSError, RuntimeError):
            pass
    raise not_found(f"MNIST {images_name} and {labels_name}", root, candidates)


def load_cifar(name: str = "cifar10", root: str | Path | None = None, train: bool = True,
               download: bool = True) -> ImageArrays:
    """CIFAR-10/100 in torchvision's layout (``cifar-10-batches-py`` / ``cifar-100-python`` under the root)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls, folder = (CIFAR10, "cifar-10-batches-py") if name == "cifar10" else (CIFAR100, "cifar-100-python")
    root = data_root(root)
    for base in (root, root / "images" / name):
        if (base / folder).is_dir():
            dataset = cls(str(base), train=train, download=False)
            break
    else:
        try:
            if not download:
                raise OSError("download disabled")
            dataset = cls(str(root), train=train, download=True)
        except (OSError, RuntimeError) as err:
            raise not_found(
                f"{name} ({folder}/; download failed: {err})", root, [root / folder, root / "images" / name / folder],
                hint=" (or use the offline 15k/1k subset as --dataset cifar10-subset)" if name == "cifar10" else "",
            ) from None
    return ImageArrays(
        torch.from_numpy(np.ascontiguousarray(dataset.data)), torch.tensor(dataset.targets, dtype=torch.long),
        list(dataset.classes),
    )


def load_cifar10_subset(root: str | Path | None = None, train: bool = True, download: bool = False) -> ImageArrays:
    """The offline CIFAR-10 subset (first 15,000 train / first 1,000 test images), ``cifar10_subset.npz``.

    Its own dataset name, never a stand-in for full CIFAR-10. It has no download (``download`` is ignored).
    """
    root = data_root(root)
    candidates = [root / "images" / "cifar10", root / "cifar10", root]
    folder = first_existing(candidates, ["cifar10_subset.npz"])
    if folder is None:
        raise not_found("cifar10_subset.npz", root, [c / "cifar10_subset.npz" for c in candidates])
    split = "train" if train else "test"
    with np.load(folder / "cifar10_subset.npz") as f:
        images, labels, classes = f[f"x_{split}"], f[f"y_{split}"], [str(c) for c in f["class_names"]]
    return ImageArrays(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)), classes)


def load_digits(train: bool = True, test_fraction: float = 0.25, seed: int = 0) -> ImageArrays:
    """scikit-learn's embedded 8×8 digits (1,797 images, 16 grey levels scaled to 0–255), a fixed split."""
    require_extra("sklearn", "sklearn")
    from sklearn.datasets import load_digits as sk_digits

    digits = sk_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    order = np.random.RandomState(seed).permutation(len(images))
    n_test = round(test_fraction * len(images))
    index = order[n_test:] if train else order[:n_test]
    return ImageArrays(
        torch.from_numpy(images[index]), torch.from_numpy(digits.target[index].astype(np.int64)),
        [str(i) for i in range(10)],
    )


# -------------------------------------------------------------------------------------------- image folders
#
# An image folder holds ``DIR/train/<class>/<image>`` and ``DIR/test/<class>/<image>``. Images are PNG or JPEG
# files (``.png``, ``.jpg``, ``.jpeg``, any case) anywhere below a class folder, taken in torchvision
# ``ImageFolder``'s order (folders sorted, then names sorted); other files and hidden ones are skipped. The classes
# are the sorted names of a split's non-hidden subfolders and must be the same in ``train/`` and ``test/``.
# The splits read together must hold images of one size. Channels follow the files: when every image is a
# greyscale file (grey, or grey + alpha) the splits load as one channel; otherwise every image loads as RGB, the
# greyscale ones repeated over the three channels. Palette images are expanded to their colours, alpha is dropped,
# CMYK JPEGs are converted to RGB, 16-bit PNGs keep their high byte.

IMAGE_FILE_SUFFIXES = (".png", ".jpg", ".jpeg")
FOLDER_SPLITS = ("train", "test")


def _class_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_below(folder: Path) -> list[Path]:
    return [Path(top) / name for top, _, names in sorted(os.walk(folder, followlinks=True)) for name in sorted(names)
            if name.lower().endswith(IMAGE_FILE_SUFFIXES) and not name.startswith(".")]


def _index_folder(root: Path, splits: Sequence[str]) -> tuple[list[str], dict[str, tuple[list[Path], list[int]]]]:
    """Class names and, for every split, its image files and their labels; a layout error is a DataError."""
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist: expected {root}/train/<class>/<image>.png")
    for split in splits:
        if not (root / split).is_dir():
            raise DataError(f"image folder {root} has no {split}/ subfolder: expected "
                            f"{root / split}/<class>/<image>.png")
    reference = splits[0]
    classes = _class_names(root / reference)
    if not classes:
        raise DataError(f"{root / reference} has no class folders: put the images of each class in "
                        f"{root / reference}/<class>/")
    for split in dict.fromkeys([*splits, *FOLDER_SPLITS]):
        others = _class_names(root / split) if (root / split).is_dir() else classes
        if others != classes:
            only_here, only_there = sorted(set(classes) - set(others)), sorted(set(others) - set(classes))
            raise DataError(f"the class folders of {root / reference} and {root / split} differ (only in {reference}: "
                            f"{', '.join(only_here) or 'none'}; only in {split}: {', '.join(only_there) or 'none'}); "
                            "give both splits the same class folders")
    index = {}
    for split in splits:
        files, labels = [], []
        for label, name in enumerate(classes):
            found = _images_below(root / split / name)
            if not found:
                raise DataError(f"class folder {root / split / name} holds no .png/.jpg/.jpeg image; add images or "
                                "remove the folder")
            files += found
            labels += [label] * len(found)
        index[split] = (files, labels)
    return classes, index


def check_image_folder(root: str | Path, splits: Sequence[str] = FOLDER_SPLITS) -> list[str]:
    """The class names of image folder ``root`` after checking its layout (rules above) without decoding an image.

    A :class:`DataError` names what is wrong: ``root`` or one of ``splits`` missing, no class folders, class folders
    that differ between ``train/`` and ``test/``, a class folder without a PNG or JPEG image.
    """
    return _index_folder(Path(root).expanduser(), splits)[0]


def _is_palette_png(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(26)
    return head[:8] == b"\x89PNG\r\n\x1a\n" and head[25] == 3  # IHDR colour type 3: indices into a palette


def _decode(path: Path) -> torch.Tensor:
    """One image file as uint8 ``[1, H, W]`` (a greyscale file) or ``[3, H, W]`` (RGB)."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        image = decode_image(str(path), mode=ImageReadMode.UNCHANGED)
        # UNCHANGED gives a palette PNG's indices and 4 channels for RGBA or CMYK: torchvision converts those to RGB
        if image.shape[0] == 4 or (image.shape[0] <= 2 and _is_palette_png(path)):
            image = decode_image(str(path), mode=ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"cannot read image {path} ({reason}); re-save it as PNG or JPEG, or remove it") from None
    if image.dtype == torch.uint16:  # 16-bit PNG: keep the high byte
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    return image[:1] if image.shape[0] <= 2 else image


def load_image_folder(root: str | Path, splits: Sequence[str] = FOLDER_SPLITS) -> tuple[ImageArrays, ...]:
    """The ``splits`` of image folder ``root`` (layout and channel rules above), one :class:`ImageArrays` each.

    The splits are read together, so they share one image size and one channel count. A :class:`DataError` (one
    line, naming the file or folder) reports a layout error (:func:`check_image_folder`), an unreadable image, or
    an image whose size differs from the first one's.
    """
    root = Path(root).expanduser()
    classes, index = _index_folder(root, splits)
    decoded, first = {}, None
    for split, (files, _) in index.items():
        decoded[split] = []
        for path in files:
            image = _decode(path)
            if first is None:
                first = (path, image.shape[1:])
            elif image.shape[1:] != first[1]:
                raise DataError(f"{path} is {image.shape[1]}×{image.shape[2]} but {first[0]} is "
                                f"{first[1][0]}×{first[1][1]}: the images of {root} must have one size; resize them")
            decoded[split].append(image)
    channels = max(image.shape[0] for images in decoded.values() for image in images)  # 1 only if all are grey
    return tuple(
        ImageArrays(torch.stack([image.expand(channels, -1, -1) for image in images]).permute(0, 2, 3, 1).contiguous(),
                    torch.tensor(index[split][1], dtype=torch.long), list(classes))
        for split, images in decoded.items()
    )


def load_image_splits(dataset: str, root: str | Path | None = None, splits: Sequence[str] = FOLDER_SPLITS,
                      download: bool = True) -> tuple[ImageArrays, ...]:
    """The ``splits`` (``train``, ``test``) of ``dataset``: a name of :data:`IMAGE_DATASETS` (looked up under the
    data root ``root``) or an image folder (:func:`load_image_folder`) — what a ``--dataset NAME|DIR`` option takes."""
    if dataset in IMAGE_DATASETS:
        return tuple(load_images(dataset, root, train=split == "train", download=download) for split in splits)
    if Path(dataset).expanduser().is_dir():
        return load_image_folder(dataset, splits)
    raise DataError(f"dataset {dataset!r} is neither one of {', '.join(IMAGE_DATASETS)} nor an image folder "
                    "(DIR/train/<class>/*.png, DIR/test/<class>/*.png)")
