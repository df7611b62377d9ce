"""Few-shot data: image folders with CSV splits, the 10-class stand-ins, transforms and feature files.

Image folders are laid out as the original's ``fewshot/data/<name>/`` (§8)::

    <root>/images/<filename>                       every image (CUB: <class_dir>/<image>.jpg)
    <root>/split/{train,val,test}.csv              "filename,label" rows; train = base, val, test = novel

Labels are class strings (WordNet ids, CUB class numbers) mapped to 0…C−1 in sorted order of the unique
strings, per split. The original always skips the first CSV line as a header; CUB's CSVs have none, so it
drops one image per split — here a first line is skipped only when it reads ``filename,label``.

Feature files (``diff-resnet fewshot extract`` writes them; bring your own from any backbone) are
safetensors with three tensors and optional string metadata:

=============  ===============  =====================================================================
key            shape / dtype    meaning
=============  ===============  =====================================================================
``features``   ``[N, d]`` float  one row per novel-class image (any order)
``labels``     ``[N]`` integer   class of each row (any integers; episodes draw from their groups)
``base_mean``  ``[d]`` float     mean feature of the base-class (training) images, used for centring
=============  ===============  =====================================================================

Metadata (all optional): ``format`` = ``diff-resnet-fewshot-features``, ``dataset``, ``backbone``,
``checkpoint_sha256``, ``classes`` (JSON list of class names indexed by label).
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffcore.data import ImageDataset, cache_dir, data_root, load_images
from diffcore.device import resolve_device
from diffcore.errors import DataError
from diffcore.io import file_sha256
from torch.utils.data import DataLoader, Dataset

from diff_resnet.fewshot.config import ExtractConfig, FewShotDataset, fewshot_dataset

FEATURE_FORMAT = "diff-resnet-fewshot-features"
FEATURE_KEYS = {"features": "[N, d] float", "labels": "[N] integer", "base_mean": "[d] float"}
SPLIT_FILES = {"base": "train.csv", "val": "val.csv", "novel": "test.csv"}
DATA_LINKS = ("the images are behind the download links in the Diff-ResNet README (github.com/shwangtangjun/"
              "Diff-ResNet, fewshot section; the diff-resnet package README shows the layout)")


# -------------------------------------------------------------------------------------- image sets


def read_split_csv(path: Path) -> list[tuple[str, str]]:
    """``(filename, label)`` rows of a split CSV; a first row ``filename,label`` is a header."""
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(cell.strip() for cell in r)]
    if rows and [cell.strip().lower() for cell in rows[0]] == ["filename", "label"]:
        rows = rows[1:]
    bad = next((i for i, r in enumerate(rows) if len(r) != 2), None)
    if bad is not None:
        raise DataError(f"{path}: row {bad + 1} has {len(rows[bad])} fields, expected 'filename,label'")
    if not rows:
        raise DataError(f"{path} lists no images (expected 'filename,label' rows)")
    return [(name.strip(), label.strip()) for name, label in rows]


class SplitFolder(Dataset):
    """One split of an image folder: ``(transform(RGB PIL image), label)`` pairs.

    ``labels`` ``[N]`` int64 (sorted unique class strings → 0…C−1), ``classes`` the strings.
    """

    def __init__(self, root: Path, split_file: str, transform: Any = None):
        rows = read_split_csv(root / "split" / split_file)
        self.classes = sorted({label for _, label in rows})
        index = {name: i for i, name in enumerate(self.classes)}
        self.files = [root / "images" / name for name, _ in rows]
        self.labels = torch.tensor([index[label] for _, label in rows], dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Any, torch.Tensor]:
        from PIL import Image

        try:
            with Image.open(self.files[i]) as image:
                image = image.convert("RGB")
        except OSError as err:
            raise DataError(f"cannot read image {self.files[i]} ({err}); is the images/ folder complete?") from None
        return (self.transform(image) if self.transform is not None else image), self.labels[i]


@dataclass
class ImageSplit:
    """A dataset of ``(image, label)`` pairs with its labels ``[N]`` and class names."""

    dataset: Dataset
    labels: torch.Tensor
    classes: list[str] = field(default_factory=list)


def folder_root(spec: FewShotDataset, root: str | Path | None = None) -> Path:
    """``<data root>/<spec.folder>`` (or the folder given as ``--dataset``), checked for the CSV splits."""
    base = Path(spec.name) if not spec.folder else data_root(root) / spec.folder
    needed = [base / "split" / name for name in SPLIT_FILES.values()]
    if all(p.is_file() for p in needed) and (base / "images").is_dir():
        return base
    where = "--dataset DIR" if not spec.folder else "--data-root DIR (or $DIFFNETS_DATA) to the folder holding " \
        f"{spec.folder}/"
    raise DataError(
        f"{spec.title} not found: expected {base}/split/{{train,val,test}}.csv and {base}/images/; pass {where}; "
        f"{DATA_LINKS}"
    )


def transform(spec: FewShotDataset, train: bool) -> Any:
    """The §4.3 transforms. Folders: train RandomResizedCrop(84) + ColorJitter(0.4, 0.4, 0.4) + flip, eval
    Resize(96 | 120) + CenterCrop(84); stand-ins: train random crop (padding 4, + flip for CIFAR; MNIST
    padding 2, no flip), eval as is. Then float in [0, 1] and per-channel normalisation."""
    from torchvision.transforms import v2

    size = spec.image_size
    if train and spec.augment == "imagenet":
        steps = [v2.RandomResizedCrop(size), v2.ColorJitter(0.4, 0.4, 0.4), v2.RandomHorizontalFlip()]
    elif train:
        steps = [v2.RandomCrop(size, padding=4 if spec.augment == "crop-flip" else 2)]
        steps += [v2.RandomHorizontalFlip()] if spec.augment == "crop-flip" else []
    elif spec.eval_resize is not None:
        steps = [v2.Resize(spec.eval_resize), v2.CenterCrop(size)]
    else:
        steps = []
    return v2.Compose([v2.ToImage(), *steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(spec.mean, spec.std)])


def load_split(spec: FewShotDataset, role: str, root: str | Path | None = None, train: bool = False) -> ImageSplit:
    """``role`` ∈ ``base`` (train.csv / base classes), ``val`` (val.csv), ``novel`` (test.csv / novel classes),
    ``base_test`` (stand-ins: test images of the base classes). ``train`` picks the augmenting transform.

    The stand-ins take base and novel images from their training split (the backbone never sees a
    novel class), relabelled 0…4 in class order.
    """
    if spec.kind == "folder":
        if role not in SPLIT_FILES:
            raise DataError(f"{spec.title} has splits {', '.join(SPLIT_FILES)}, not {role!r}")
        folder = SplitFolder(folder_root(spec, root), SPLIT_FILES[role], transform(spec, train))
        return ImageSplit(folder, folder.labels, folder.classes)
    classes = {"base": spec.base_classes, "base_test": spec.base_classes, "novel": spec.novel_classes}
    if role not in classes:
        raise DataError(f"{spec.title} has no {role!r} split (no validation classes); use base, base_test or novel")
    arrays = load_images(spec.source, root, train=role != "base_test").select_classes(classes[role])
    return ImageSplit(ImageDataset(arrays, transform(spec, train)), arrays.labels, arrays.classes)


# ------------------------------------------------------------------------------------ feature files


@dataclass
class FeatureSet:
    """A validated feature file: ``features`` ``[N, d]`` float32, ``labels`` ``[N]`` int64, ``base_mean`` ``[d]``."""

    features: torch.Tensor
    labels: torch.Tensor
    base_mean: torch.Tensor
    metadata: dict[str, str] = field(default_factory=dict)
    path: str = ""

    def summary(self) -> dict[str, Any]:
        return {"path": self.path, "samples": len(self.labels), "dim": self.features.shape[1],
                "classes": int(self.labels.unique().numel()), "dataset": self.metadata.get("dataset"),
                "backbone": self.metadata.get("backbone"),
                "checkpoint_sha256": self.metadata.get("checkpoint_sha256")}


def _expected() -> str:
    return "expected safetensors keys " + ", ".join(f"{k} {v}" for k, v in FEATURE_KEYS.items())


def save_features(path: str | Path, features: torch.Tensor, labels: torch.Tensor, base_mean: torch.Tensor,
                  metadata: dict[str, str] | None = None) -> Path:
    """Write a feature file (atomically); ``metadata`` values must be strings."""
    from diffcore.io import atomic_path
    from safetensors.torch import save_file

    tensors = {"features": features.float().contiguous(), "labels": labels.long().contiguous(),
               "base_mean": base_mean.float().contiguous()}
    validate_features(tensors, str(path))
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FEATURE_FORMAT, **(metadata or {})})
    return Path(path)


def validate_features(tensors: dict[str, torch.Tensor], where: str) -> None:
    """Raise :class:`DataError` naming the first problem with the keys, shapes, dtypes or values."""
    missing = [k for k in FEATURE_KEYS if k not in tensors]
    if missing:
        raise DataError(f"{where} lacks key(s) {', '.join(missing)} (found {', '.join(sorted(tensors)) or 'none'}); "
                        f"{_expected()}")
    features, labels, base_mean = (tensors[k] for k in FEATURE_KEYS)
    problems = []
    if features.dim() != 2 or not features.is_floating_point():
        problems.append(f"features is {_describe(features)}, expected [N, d] float")
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        problems.append(f"labels is {_describe(labels)}, expected [N] integer")
    if base_mean.dim() != 1 or not base_mean.is_floating_point():
        problems.append(f"base_mean is {_describe(base_mean)}, expected [d] float")
    if not problems and labels.shape[0] != features.shape[0]:
        problems.append(f"labels has {labels.shape[0]} rows but features has {features.shape[0]}")
    if not problems and base_mean.shape[0] != features.shape[1]:
        problems.append(f"base_mean has {base_mean.shape[0]} entries but features are {features.shape[1]}-d")
    if not problems and not (torch.isfinite(features).all() and torch.isfinite(base_mean).all()):
        problems.append("features or base_mean hold NaN/inf values")
    if problems:
        raise DataError(f"{where}: {'; '.join(problems)}")


def _describe(tensor: torch.Tensor) -> str:
    return f"{list(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"


def load_features(path: str | Path) -> FeatureSet:
    """Read and validate a feature file; any problem is a one-line :class:`DataError`."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise DataError(f"feature file {path} does not exist; write one with `diff-resnet fewshot extract` "
                        f"or bring your own ({_expected()})")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            metadata = dict(f.metadata() or {})
    except (SafetensorError, OSError, RuntimeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path} is not a readable safetensors file ({first}); {_expected()}") from None
    validate_features(tensors, str(path))
    return FeatureSet(tensors["features"].float(), tensors["labels"].long(), tensors["base_mean"].float(),
                      metadata, str(path))


# --------------------------------------------------------------------------------------- extraction


def feature_cache_path(spec: FewShotDataset, backbone: str, checkpoint_sha256: str) -> Path:
    """Cache file keyed by the checkpoint's hash, the dataset and its eval transform (quirk 12)."""
    key = json.dumps({"checkpoint": checkpoint_sha256, "dataset": spec.name, "image_size": spec.image_size,
                      "eval_resize": spec.eval_resize, "mean": spec.mean, "std": spec.std, "format": 1},
                     sort_keys=True)
    slug = Path(spec.name).name if not spec.folder else spec.name
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir("diff-resnet", "features") / f"{slug}_{backbone}_{digest}.safetensors"


@torch.no_grad()
def extract_features(model: torch.nn.Module, split: ImageSplit, batch_size: int = 1000, num_workers: int = 0,
                     device: torch.device | str = "cpu", desc: str = "features") -> torch.Tensor:
    """Eval-mode backbone features of every image of ``split``, in order: ``[N, d]`` float32."""
    from tqdm.auto import tqdm

    model.eval().to(device)
    loader = DataLoader(split.dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    chunks = [model(images.to(device), return_feature=True)[0].float().cpu()
              for images, _ in tqdm(loader, desc=desc, unit="batch", disable=None)]
    return torch.cat(chunks)


@dataclass
class ExtractPlan:
    """What :func:`run_extract` will do, checked up front: the cached feature file, or the loaded backbone
    and the image splits to embed (``model`` None when the cache already holds the features)."""

    path: Path
    cached: bool
    spec: FewShotDataset
    backbone: str
    checkpoint_sha256: str
    model: Any = None
    novel: Any = None
    base: Any = None


def plan_extract(config: ExtractConfig, data_root: str | Path | None = None) -> ExtractPlan:
    """Read the checkpoint and find the images (or the cache) before anything is written.

    A missing or unreadable checkpoint is a :class:`~diffcore.errors.CheckpointError`, missing images a
    :class:`DataError`; both name what to fix.
    """
    from diffcore.checkpoint import WEIGHTS_NAME, load_pretrained, read_checkpoint_config

    header = read_checkpoint_config(config.checkpoint)
    dataset = config.dataset or header.get("dataset")
    if not dataset:
        raise DataError(f"{config.checkpoint} does not record its dataset; pass --dataset")
    spec = fewshot_dataset(dataset)
    backbone = header.get("backbone") or header["model"].rsplit(".", 1)[-1]
    checkpoint_sha256 = file_sha256(Path(config.checkpoint) / WEIGHTS_NAME)
    path = feature_cache_path(spec, backbone, checkpoint_sha256)
    plan = ExtractPlan(path, path.is_file(), spec, backbone, checkpoint_sha256)
    if not plan.cached:
        plan.model = load_pretrained(config.checkpoint)
        plan.novel, plan.base = load_split(spec, "novel", data_root), load_split(spec, "base", data_root)
    return plan


def run_extract(config: ExtractConfig, plan: ExtractPlan) -> dict[str, Any]:
    """Features of the novel split and the base mean of an exported backbone, cached by its hash.

    A second run with the same checkpoint, dataset and transform reads the cache instead of the images.
    Returns the results.json dictionary (``features_file``, ``cached``, shapes, hash, seconds).
    """
    import time

    started = time.perf_counter()
    if not plan.cached:
        device = resolve_device(config.device)
        novel, base = plan.novel, plan.base
        novel_features = extract_features(plan.model, novel, config.batch_size, config.num_workers, device,
                                          "novel images")
        base_features = extract_features(plan.model, base, config.batch_size, config.num_workers, device,
                                         "base images")
        save_features(plan.path, novel_features, novel.labels, base_features.double().mean(dim=0), {
            "dataset": plan.spec.name, "backbone": plan.backbone, "checkpoint_sha256": plan.checkpoint_sha256,
            "classes": json.dumps(novel.classes), "base_images": str(len(base.labels)),
        })
    features = load_features(plan.path)
    return {"features_file": str(plan.path), "cached": plan.cached, **features.summary(),
            "base_images": int(features.metadata.get("base_images", 0)) or None,
            "seconds": time.perf_counter() - started}
