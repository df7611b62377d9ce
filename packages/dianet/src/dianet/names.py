"""Names the CLI needs before a command runs (choices, preset names), torch-free so ``dianet --help`` stays fast."""

from __future__ import annotations

from typing import Literal

Cell = Literal["dia_lstm", "lstm", "shared_se"]
Share = Literal["stage", "none"]
Attn = Literal["dia", "se"]

#: Registered model families (the DIA model; ``<name>_base`` and ``<name>_se`` are its plain and SE twins).
FAMILIES = ("dia_resnet164", "dia_preresnet164", "dia_wrn52_4", "dia_resnext101_8x32d", "dia_resnet50")
VARIANTS = ("", "_base", "_se")
MODEL_NAMES = tuple(f + v for f in FAMILIES for v in VARIANTS)
#: ``dianet.config.RECIPES``: one recipe per family, plus the authors' EAN recipe for ResNet-50.
RECIPE_NAMES = (*FAMILIES, "dia_resnet50-ean")
DATASETS = {"cifar10": 10, "cifar100": 100, "cifar10-subset": 10}
#: Named width presets (spec §8) accepted by ``model.widths`` beside explicit widths (see ``dianet.models``).
WIDTH_PRESETS = ("dianet", "bearpaw")
#: ``--select-on`` → the Trainer's ``monitor``: test accuracy as the original, or the accuracy on the
#: ``val_split`` images held out from the training set.
SELECT_ON = {"test": "test_acc", "val": "val_acc"}


def family(arch: str) -> str:
    """``dia_resnet164_se`` → ``dia_resnet164`` (the name its recipe is filed under)."""
    for suffix in ("_base", "_se"):
        if arch.endswith(suffix) and arch.removesuffix(suffix) in FAMILIES:
            return arch.removesuffix(suffix)
    return arch
