"""Few-shot configs, datasets and presets (Wang et al., TPAMI 2024, §4.3; official code ``fewshot/``).

Imports neither torch nor numpy: the CLI reads these to build ``--help``. The backbone recipe, which
embeds the core's ``TrainConfig``, is :class:`diff_resnet.fewshot_backbone.BackboneConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from diffcore.config import Presets
from diffcore.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class FewShotDataset:
    """Where a few-shot dataset's images come from and how they are transformed.

    ``kind="folder"``: an image folder with CSV splits, ``<root>/images/<filename>`` and
    ``<root>/split/{train,val,test}.csv`` (header ``filename,label``, then one row per image); train = base
    classes, val = validation classes (backbone selection), test = novel classes. ``kind="standin"``: a
    10-class image set loaded by :func:`diffcore.data.load_images` (``source``), with fixed class splits
    ``base_classes`` / ``novel_classes`` of its training images and no validation classes.
    Evaluation transform: Resize(``eval_resize``) → CenterCrop(``image_size``) (folders) or the images as
    they are (stand-ins), then normalisation with ``mean``/``std``.
    """

    name: str
    title: str
    kind: Literal["folder", "standin"]
    image_size: int
    epochs: int
    eval_resize: int | None = None
    channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    augment: Literal["imagenet", "crop-flip", "crop"] = "imagenet"
    folder: str = ""
    source: str = ""
    base_classes: tuple[int, ...] = ()
    novel_classes: tuple[int, ...] = ()
    num_base_classes: int | None = None

    @property
    def has_val(self) -> bool:
        return self.kind == "folder"


def _folder(name: str, title: str, folder: str, epochs: int, base: int | None, eval_resize: int = 96) -> FewShotDataset:
    return FewShotDataset(name, title, "folder", image_size=84, epochs=epochs, eval_resize=eval_resize, folder=folder,
                          num_base_classes=base)


#: Named datasets: the paper's three (§8; layout of the original's ``fewshot/data/<name>/``) and two stand-ins.
FEWSHOT_DATASETS: dict[str, FewShotDataset] = {
    "mini": _folder("mini", "miniImageNet", "mini", epochs=100, base=64),
    "tiered": _folder("tiered", "tieredImageNet", "tiered", epochs=100, base=351),
    "cub": _folder("cub", "CUB-200-2011", "cub", epochs=400, base=100, eval_resize=120),
    "mnist": FewShotDataset("mnist", "MNIST (stand-in: base 0–4, novel 5–9)", "standin", image_size=28, epochs=6,
                            channels=1, mean=(0.1307,), std=(0.3081,), augment="crop", source="mnist",
                            base_classes=(0, 1, 2, 3, 4), novel_classes=(5, 6, 7, 8, 9), num_base_classes=5),
    "cifar10-subset": FewShotDataset(
        "cifar10-subset", "CIFAR-10 15k subset (stand-in: base 0–4, novel 5–9)", "standin", image_size=32, epochs=15,
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), augment="crop-flip", source="cifar10-subset",
        base_classes=(0, 1, 2, 3, 4), novel_classes=(5, 6, 7, 8, 9), num_base_classes=5),
}


def fewshot_dataset(name: str) -> FewShotDataset:
    """A named dataset, or a folder path laid out like miniImageNet (84×84, Resize(96), 100 epochs)."""
    if name in FEWSHOT_DATASETS:
        return FEWSHOT_DATASETS[name]
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"--dataset {name!r} is neither one of {', '.join(FEWSHOT_DATASETS)} nor an existing folder "
            "(a folder needs images/ and split/{train,val,test}.csv)"
        )
    return _folder(str(path.resolve()), f"image folder {path}", "", epochs=100, base=None)


@dataclass(frozen=True)
class ExtractConfig:
    """Feature extraction (§4.3b): novel-split features and the base-class mean, eval transform, cached.

    ``checkpoint`` is an exported backbone folder (``model.safetensors`` + ``config.json``); ``dataset``
    defaults to the one it was trained on. ``device`` is a torch device string or ``auto``.
    """

    checkpoint: str = ""
    dataset: str = ""
    batch_size: int = 1000
    num_workers: int = 0
    device: str = "auto"


@dataclass(frozen=True)
class FewShotConfig:
    """Transductive episodic evaluation (§4.3c–d, §4.3f; ``fewshot/train.py``).

    Each of ``episodes`` ``way``-way ``shot``-shot tasks with ``query`` queries per class is drawn from
    episode i's own seed (derived from ``seed`` and i), and so is its network's initialisation.
    ``method``: ``simple`` (SimpleShot: centring + L2 normalisation, nearest support mean), ``laplacian``
    (+ cross-domain shift, rectified prototypes, query kNN graph with ``laplacian_knn`` neighbours, λ =
    ``lamda``, up to ``laplacian_iters`` bound updates until the relative energy change < ``laplacian_tol``)
    or ``diffusion`` (+ the §3.4 weights with ranks ``n_top``/``sigma``, a fresh residual head with
    ``layers`` diffusion steps of ``step_size``, trained ``epochs`` full-batch SGD steps with MultiStepLR at
    ``⌊m·epochs⌋`` for m in ``milestones``; ``alpha`` weighs the prototype loss, 0 = off).
    ``rectify_scale`` multiplies the cosine similarities of prototype rectification (10 in the original).
    ``batch_episodes`` episodes are trained together as stacked parameters (``batched=False`` runs the
    one-at-a-time reference: same episodes, same results up to rounding); ``device`` as in torch.
    """

    method: Literal["simple", "laplacian", "diffusion"] = "diffusion"
    way: int = 5
    shot: int = 1
    query: int = 15
    episodes: int = 10_000
    seed: int = 1
    step_size: float = 0.5
    layers: int = 6
    n_top: int = 8
    sigma: int = 4
    lamda: float = 0.5
    alpha: float = 0.0
    epochs: int = 100
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[float, ...] = (0.5, 0.75)
    rectify_scale: float = 10.0
    laplacian_knn: int = 2
    laplacian_iters: int = 20
    laplacian_tol: float = 1e-6
    batch_episodes: int = 100
    batched: bool = True
    device: str = "cpu"


FEWSHOT_PRESETS: Presets[FewShotConfig] = Presets({
    "mini-resnet18-1shot": (FewShotConfig(method="diffusion", shot=1, step_size=0.5, layers=6, n_top=8, sigma=4),
                            "README few-shot command (the other settings are train.py's defaults)"),
    "mini-resnet18-1shot-v2021": (FewShotConfig(method="diffusion", shot=1, step_size=0.5, layers=5, n_top=8,
                                                sigma=4), "2021 README command (layer_num 5)"),
})
