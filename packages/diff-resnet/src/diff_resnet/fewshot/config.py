"""Few-shot configs, datasets and presets (Wang et al., TPAMI 2024, §4.3; official code ``fewshot/``).

Imports neither torch nor numpy: the CLI reads these to build ``--help``. The backbone recipe, which
embeds the core's ``TrainConfig``, is :class:`diff_resnet.fewshot.backbone.BackboneConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from diffcore.config import Presets, require
from diffcore.device import check_device
from diffcore.errors import ConfigError

from diff_resnet.config import (
    require_milestones,
    require_momentum,
    require_non_negative,
    require_positive,
    require_seed,
)

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

    def check(self) -> None:
        require(bool(self.checkpoint), "--checkpoint is required: an exported backbone folder")
        require(self.batch_size >= 1, f"--batch-size must be ≥ 1, got {self.batch_size}")
        require(self.num_workers >= 0, f"--workers must be ≥ 0, got {self.num_workers}")
        check_device(self.device)


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

    The ablation of the paper's Table 2 (§4.3e, ``fewshot/ablation.py``): ``raw_features`` skips centring,
    normalisation, the cross-domain shift and rectification, and ``mu`` > 0 adds the Laplacian-smoothness
    loss ``μ Σ_ij W′_ij ‖z_i − z_j‖²`` on the logits of all N points (the graph as a loss term, the
    alternative to diffusion inside the network).
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
    mu: float = 0.0
    raw_features: bool = False
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

    @property
    def num_points(self) -> int:
        """N = way · (shot + query): the points of one episode."""
        return self.way * (self.shot + self.query)

    def check(self) -> None:
        require(self.way >= 2, f"--way must be ≥ 2, got {self.way}")
        require(self.shot >= 1 and self.query >= 1, f"--shot and --query must be ≥ 1, got {self.shot} and {self.query}")
        require(self.episodes >= 1, f"--episodes must be ≥ 1, got {self.episodes}")
        require(self.batch_episodes >= 1, f"--batch-episodes must be ≥ 1, got {self.batch_episodes}")
        require_seed(self.seed)
        require_positive("--step-size", self.step_size)
        require(self.layers >= 0, f"--layers (diffusion steps T) must be ≥ 0, got {self.layers}")
        n = self.num_points
        require(2 <= self.n_top <= n and 2 <= self.sigma <= n,
                f"--n-top and --sigma are ranks (self = 1st) and must lie in [2, {n}] for the N = {n} points of an "
                f"episode, got {self.n_top} and {self.sigma}")
        require_non_negative("--lamda", self.lamda)
        require_non_negative("--alpha", self.alpha)
        require_non_negative("--mu", self.mu)
        require(not (self.raw_features and self.method == "laplacian"),
                "the raw-feature ablation has no rectified prototypes: use method simple or diffusion")
        require(not (self.raw_features and self.alpha > 0),
                "--alpha needs rectified prototypes, which the raw-feature ablation does not compute; set alpha=0")
        require(self.epochs >= 1, f"epochs must be ≥ 1, got {self.epochs}")
        require_positive("lr", self.lr)
        require_momentum(self.momentum)
        require_non_negative("weight_decay", self.weight_decay)
        require_milestones(self.milestones)
        require_positive("rectify_scale", self.rectify_scale)
        require(1 <= self.laplacian_knn < self.way * self.query,
                f"laplacian_knn must lie in [1, {self.way * self.query - 1}] (other queries), got {self.laplacian_knn}")
        require(self.laplacian_iters >= 0, f"laplacian_iters must be ≥ 0, got {self.laplacian_iters}")
        require_positive("laplacian_tol", self.laplacian_tol)
        check_device(self.device)


FEWSHOT_PRESETS: Presets[FewShotConfig] = Presets({
    "mini-resnet18-1shot": (FewShotConfig(method="diffusion", shot=1, step_size=0.5, layers=6, n_top=8, sigma=4),
                            "README few-shot command (the other settings are train.py's defaults)"),
    "mini-resnet18-1shot-v2021": (FewShotConfig(method="diffusion", shot=1, step_size=0.5, layers=5, n_top=8,
                                                sigma=4), "2021 README command (layer_num 5)"),
})

#: The ablation of Table 2 (``fewshot/ablation.py``): raw features, 1000 episodes; the CLI requires
#: --n-top, --sigma, --step-size and --layers (the script has no defaults for them).
ABLATION_BASE = FewShotConfig(method="diffusion", episodes=1000, raw_features=True)
