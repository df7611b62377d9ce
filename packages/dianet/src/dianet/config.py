"""Configs and the paper's training recipes (spec §6: gbup-group/DIANet ``run_code.py`` on bearpaw's ``cifar.py``).

A ``dianet train`` config embeds the core's :class:`~diffcore.train.TrainConfig` as ``train`` (which imports
torch); the names the CLI needs before a command runs live in the torch-free :mod:`dianet.names`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from diffcore.config import Presets, require
from diffcore.train import TrainConfig

from dianet.names import MODEL_NAMES, SELECT_ON, WIDTH_PRESETS, Cell


@dataclass(frozen=True)
class ModelOptions:
    """Overrides of the registered architecture (None keeps the model's own value); see ``DIAResNet``.

    ``layers=2,2,2`` with ``dia_resnet164`` gives the spec's CPU-sized depth-20 bottleneck net. ``widths`` is
    comma-separated stage widths (``64,128,256``) or a named preset: ``dianet`` (the official DIANet files,
    the default) or ``bearpaw`` (bearpaw/pytorch-classification's; differs for ResNeXt: stem 64 | 256,
    512, 1024); a preset also sets the stem width unless ``stem_width`` is given. ``dia_bias_init="official"``
    reproduces the official init loops (attention biases zero in WRN/ResNeXt, spec §8). ``share="auto"`` keeps the
    model's own (one unit per stage for DIA, one per block for SE); it is no None because ``--set model.share=none``
    must mean one unit per block, and an optional field reads ``none`` as None.
    """

    cell: Cell | None = None
    share: Literal["auto", "stage", "none"] = "auto"
    reduction: int | None = None
    num_layers: int | None = None
    layers: tuple[int, ...] | None = None
    widths: str | None = None
    stem_width: int | None = None
    cardinality: int | None = None
    block_dropout: float | None = None
    extra_bn: bool | None = None
    dia_bias_init: Literal["default", "official"] | None = None
    zero_init_last: bool | None = None

    def check(self) -> None:
        require(self.reduction is None or self.reduction >= 1, f"model.reduction must be ≥ 1, got {self.reduction}")
        require(self.num_layers is None or self.num_layers >= 1, f"model.num_layers must be ≥ 1, got {self.num_layers}")
        require(self.layers is None or (len(self.layers) > 0 and min(self.layers) >= 1),
                f"model.layers needs one positive block count per stage, got {self.layers}")
        require(self.stem_width is None or self.stem_width >= 1, f"model.stem_width must be ≥ 1, got {self.stem_width}")
        require(self.cardinality is None or self.cardinality >= 1,
                f"model.cardinality must be ≥ 1, got {self.cardinality}")
        require(self.block_dropout is None or 0 <= self.block_dropout < 1,
                f"model.block_dropout must lie in [0, 1), got {self.block_dropout}")
        self.stage_widths()

    def stage_widths(self) -> str | tuple[int, ...] | None:
        """``widths`` as the model takes it: a preset name or a tuple of positive ints."""
        if self.widths is None or self.widths in WIDTH_PRESETS:
            return self.widths
        try:
            widths = tuple(int(w) for w in self.widths.replace(" ", "").split(","))
        except ValueError:
            widths = ()
        require(len(widths) > 0 and min(widths) >= 1,
                f"model.widths={self.widths!r} is neither comma-separated positive stage widths (e.g. 64,128,256) "
                f"nor a named preset ({', '.join(WIDTH_PRESETS)})")
        return widths

    def kwargs(self) -> dict:
        """The timm/``DIAResNet`` keyword arguments of the options given."""
        given = {k: v for k, v in dataclasses.asdict(self).items() if v is not None and (k, v) != ("share", "auto")}
        if "widths" in given:
            given["widths"] = self.stage_widths()
        return given


def _loop(epochs: int, batch_size: int = 128, eval_batch_size: int = 100, num_workers: int = 4) -> TrainConfig:
    """The Trainer settings of the recipes: global batch, test every epoch, best epoch by test accuracy."""
    return TrainConfig(epochs=epochs, batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers,
                       monitor="test_acc", monitor_mode="max")


@dataclass(frozen=True)
class TrainRunConfig:
    """One ``dianet train`` command: model, data, SGD + step schedule, the protocol, and the loop (``train``).

    ``train`` is the core's :class:`~diffcore.train.TrainConfig` (epochs, global ``batch_size`` split over
    processes by Accelerate, ``mixed_precision``, ``seed``, workers, ...); ``train.monitor`` is the selection
    metric (``test_acc``, or ``val_acc`` with ``--select-on val``), which picks the weights of ``model_best/``.
    ``schedule`` lists the 0-based epochs at whose start the LR is multiplied by ``gamma``.
    ``train_limit``/``test_limit`` keep only the first N images of a split (short runs); ``val_split`` holds N
    training images out (class-balanced, the same images for every seed) as a validation split.
    ``snapshot_epochs``: 0-based epochs after which the weights are also exported (the original keeps epoch 50).
    ``seeds``: runs with seeds ``train.seed``, ``train.seed + 1``, ... (the paper's protocol: 5).
    """

    arch: str = "dia_resnet164"
    dataset: str = "cifar100"
    model: ModelOptions = field(default_factory=ModelOptions)
    schedule: tuple[int, ...] = (60, 120)
    gamma: float = 0.1
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    channels_last: bool = False
    compile: bool = False
    norm_stats: Literal["cifar10", "cifar100", "imagenet"] = "cifar10"
    train_limit: int | None = None
    test_limit: int | None = None
    val_split: int = 0
    snapshot_epochs: tuple[int, ...] = (50,)
    seeds: int = 1
    train: TrainConfig = field(default_factory=lambda: _loop(180))

    def check(self) -> None:
        require(self.arch in MODEL_NAMES, f"unknown arch {self.arch!r}; choose one of {', '.join(MODEL_NAMES)}")
        require(bool(self.dataset),
                f"{self.arch} has no default dataset: pass --dataset DIR (an ImageNet-style folder)")
        require(list(self.schedule) == sorted(set(self.schedule)) and all(e >= 1 for e in self.schedule),
                f"schedule must list increasing positive epochs (0-based, e.g. 60,120), got "
                f"{','.join(map(str, self.schedule))}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(self.gamma > 0, f"gamma must be > 0, got {self.gamma}")
        require(self.weight_decay >= 0, f"weight decay must be ≥ 0, got {self.weight_decay}")
        require(0 <= self.momentum < 1, f"momentum must lie in [0, 1), got {self.momentum}")
        for name in ("train_limit", "test_limit"):
            value = getattr(self, name)
            require(value is None or value >= 1, f"{name} must be ≥ 1 (or None for all images), got {value}")
        require(self.val_split >= 0, f"val_split must be ≥ 0 images, got {self.val_split}")
        require(all(e >= 0 for e in self.snapshot_epochs), f"snapshot_epochs are 0-based, got {self.snapshot_epochs}")
        require(self.seeds >= 1, f"seeds must be ≥ 1 runs, got {self.seeds}")
        train = self.train
        require(train.monitor in SELECT_ON.values() and train.monitor_mode == "max",
                f"train.monitor must be test_acc or val_acc with monitor_mode max (use --select-on test|val), got "
                f"{train.monitor} ({train.monitor_mode})")
        require(train.monitor != "val_acc" or self.val_split > 0,
                "--select-on val needs a validation split: add --val-split N (e.g. 5000 training images)")
        require(not train.restore_best, "leave train.restore_best false: model/ keeps the last epoch's weights and "
                                        "model_best/ the selected epoch's")
        require(train.save_every == 1, "train.save_every must be 1: the best and snapshot weights are exported "
                                       "with each epoch's saved state")
        require(train.eval_start < train.epochs, f"train.eval_start={train.eval_start} skips every evaluation of "
                                                 f"the {train.epochs} epochs")
        require(train.scheduler_interval == "epoch", "train.scheduler_interval must be epoch: the schedule counts "
                                                     "epochs")


def _cifar(arch: str, epochs: int, schedule: tuple[int, ...], gamma: float, wd: float) -> TrainRunConfig:
    return TrainRunConfig(arch=arch, schedule=schedule, gamma=gamma, weight_decay=wd, train=_loop(epochs))


RECIPES: Presets[TrainRunConfig] = Presets({  # keys: dianet.names.RECIPE_NAMES
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
    "dia_resnet50": (TrainRunConfig(arch="dia_resnet50", dataset="", schedule=(30, 60), norm_stats="imagenet",
                                    train=_loop(90, batch_size=256, eval_batch_size=256, num_workers=8)),
                     "no official ImageNet recipe: torchvision's ResNet-50 recipe (spec §6)"),
    "dia_resnet50-ean": (TrainRunConfig(arch="dia_resnet50", dataset="", schedule=(30, 60, 90), norm_stats="imagenet",
                                        train=_loop(120, batch_size=256, eval_batch_size=256, num_workers=8)),
                         "the authors' EAN code: 120 epochs, LR × 0.1 every 30"),
})


@dataclass(frozen=True)
class EvalConfig:
    """``dianet eval``: test accuracy of an exported model on a dataset's test split (no training, so no ``train``)."""

    checkpoint: str = ""
    dataset: str = "cifar100"
    eval_batch_size: int = 100
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    channels_last: bool = False
    norm_stats: Literal["cifar10", "cifar100", "imagenet"] = "cifar10"
    test_limit: int | None = None
    num_workers: int = 4
    seed: int = 0

    def check(self) -> None:
        require(self.eval_batch_size >= 1, f"eval_batch_size must be ≥ 1, got {self.eval_batch_size}")
        require(self.num_workers >= 0, f"num_workers must be ≥ 0, got {self.num_workers}")
        require(self.test_limit is None or self.test_limit >= 1,
                f"test_limit must be ≥ 1 (or None for all images), got {self.test_limit}")
        if self.mixed_precision == "fp16":
            import torch

            require(torch.cuda.is_available(), "mixed_precision=fp16 needs a CUDA GPU; use bf16 on the CPU, or no")
