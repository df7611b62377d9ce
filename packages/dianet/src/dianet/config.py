"""Configs and the paper's training recipes (spec §6: gbup-group/DIANet ``run_code.py`` on bearpaw's ``cifar.py``).

Torch-free, so the CLI can resolve and print configs without importing it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from diffcore.config import Presets

Cell = Literal["dia_lstm", "lstm", "shared_se"]
Share = Literal["stage", "none"]
Attn = Literal["dia", "se"]

#: Registered model families (the DIA model; ``<name>_base`` and ``<name>_se`` are its plain and SE twins).
FAMILIES = ("dia_resnet164", "dia_preresnet164", "dia_wrn52_4", "dia_resnext101_8x32d", "dia_resnet50")
VARIANTS = ("", "_base", "_se")
MODEL_NAMES = tuple(f + v for f in FAMILIES for v in VARIANTS)
DATASETS = {"cifar10": 10, "cifar100": 100, "cifar10-subset": 10}


def family(arch: str) -> str:
    """``dia_resnet164_se`` → ``dia_resnet164`` (the name its recipe is filed under)."""
    for suffix in ("_base", "_se"):
        if arch.endswith(suffix) and arch.removesuffix(suffix) in FAMILIES:
            return arch.removesuffix(suffix)
    return arch


@dataclass(frozen=True)
class ModelOptions:
    """Overrides of the registered architecture (None keeps the model's own value); see ``DIAResNet``.

    ``layers=2,2,2`` with ``dia_resnet164`` gives the spec's CPU-sized depth-20 bottleneck net.
    """

    cell: Cell | None = None
    share: Share | None = None
    reduction: int | None = None
    layers: tuple[int, ...] | None = None
    widths: tuple[int, ...] | None = None
    block_dropout: float | None = None
    extra_bn: bool | None = None
    dia_bias_init: Literal["default", "zero"] | None = None
    zero_init_last: bool | None = None

    def kwargs(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class TrainRunConfig:
    """One ``dianet train`` run: model, data, SGD + step schedule, and the loop settings.

    ``batch_size`` is the global batch of one step (split over processes by Accelerate);
    ``schedule`` lists the 0-based epochs at whose start the LR is multiplied by ``gamma``.
    ``train_limit``/``test_limit`` keep only the first N images of a split (short runs).
    """

    arch: str = "dia_resnet164"
    dataset: str = "cifar100"
    model: ModelOptions = field(default_factory=ModelOptions)
    epochs: int = 180
    schedule: tuple[int, ...] = (60, 120)
    gamma: float = 0.1
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    batch_size: int = 128
    eval_batch_size: int = 100
    grad_accum_steps: int = 1
    max_grad_norm: float | None = None
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    channels_last: bool = False
    compile: bool = False
    norm_stats: Literal["cifar10", "cifar100", "imagenet"] = "cifar10"
    train_limit: int | None = None
    test_limit: int | None = None
    num_workers: int = 4
    seed: int = 0
    progress: bool = True


def _cifar(arch: str, epochs: int, schedule: tuple[int, ...], gamma: float, wd: float) -> TrainRunConfig:
    return TrainRunConfig(arch=arch, epochs=epochs, schedule=schedule, gamma=gamma, weight_decay=wd)


RECIPES: Presets[TrainRunConfig] = Presets({
    "dia_resnet164": (_cifar("dia_resnet164", 180, (60, 120), 0.1, 1e-4),
                      "run_code.py: -a dia_resnet --depth 164 --epochs 180 --schedule 60 120 --wd 1e-4 --gamma 0.1"),
    "dia_preresnet164": (_cifar("dia_preresnet164", 164, (81, 122), 0.1, 1e-4),
                         "run_code.py: -a dia_preresnet --depth 164 --epochs 164 --schedule 81 122 --wd 1e-4"),
    "dia_wrn52_4": (_cifar("dia_wrn52_4", 200, (80, 120, 160), 0.2, 5e-4),
                    "run_code.py: -a dia_wrn --depth 52 --widen-factor 4 --drop 0.3 --epochs 200 "
                    "--schedule 80 120 160 --wd 5e-4 --gamma 0.2"),
    "dia_resnext101_8x32d": (_cifar("dia_resnext101_8x32d", 300, (150, 225), 0.1, 5e-4),
                             "run_code.py: -a dia_resnext --depth 101 --cardinality 8 --widen-factor 4 "
                             "--epochs 300 --schedule 150 225 --wd 5e-4 --gamma 0.1"),
    "dia_resnet50": (TrainRunConfig(arch="dia_resnet50", dataset="", epochs=90, schedule=(30, 60),
                                    batch_size=256, eval_batch_size=256, norm_stats="imagenet", num_workers=8),
                     "no official ImageNet recipe: torchvision's ResNet-50 recipe (spec §6)"),
    "dia_resnet50-ean": (TrainRunConfig(arch="dia_resnet50", dataset="", epochs=120, schedule=(30, 60, 90),
                                        batch_size=256, eval_batch_size=256, norm_stats="imagenet", num_workers=8),
                         "the authors' EAN code: 120 epochs, LR × 0.1 every 30"),
})


@dataclass(frozen=True)
class EvalConfig:
    """``dianet eval``: test accuracy of an exported model on a dataset's test split."""

    checkpoint: str = ""
    dataset: str = "cifar100"
    eval_batch_size: int = 100
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    channels_last: bool = False
    norm_stats: Literal["cifar10", "cifar100", "imagenet"] = "cifar10"
    test_limit: int | None = None
    num_workers: int = 4
    seed: int = 0
