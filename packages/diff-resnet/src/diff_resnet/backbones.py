"""Feature backbones of Diff-ResNet's few-shot pipeline (§3.5), pre-trained on the base classes.

Paper: T. Wang, Z. Dou, C. Bao, Z. Shi, "Diffusion Mechanism in Residual Neural Network: Theory and
Applications", IEEE TPAMI 46(2):667–680, 2024 (``fewshot/backbone/network/`` of the official code).

* :class:`ResNet18` — ResNet-18 for 84×84 inputs: a 3×3 stride-1 stem and **no max-pool**, four stages of
  two BasicBlocks (64, 128, 256, 512 channels; strides 1, 2, 2, 2; 1×1 conv + BN projection shortcuts),
  global average pooling → 512-d feature → ``fc``.
* :class:`WideResNet` — WRN-28-10: 3×3 stem (16 ch, bias), three groups of four pre-activation wide blocks
  (160, 320, 640 ch; strides 1, 2, 2; conv bias; dropout 0), final BN with PyTorch momentum 0.9 (quirk 15:
  its running statistics are nearly those of the last batch; kept for checkpoint compatibility) + ReLU,
  global average pooling → 640-d feature → ``linear``.
* :class:`Conv4` — four (conv 3×3, BN, ReLU, max-pool 2) blocks and global average pooling: a small
  backbone at native resolution (28×28 MNIST, 32×32 CIFAR-10) for the CPU stand-ins. Not from the paper.

Initialisation (:meth:`reset_parameters`): PyTorch's defaults, then Kaiming-normal (fan_out, ReLU) conv
weights; BN γ = 1, β = 0. Module names follow the original's state-dict keys, so
:func:`convert_legacy_state_dict` only strips DataParallel's ``module.`` prefix. ``forward(x)`` returns
logits; ``forward(x, return_feature=True)`` returns ``(feature, logits)``.

Shapes: ``x`` ``[B, C, H, W]`` → logits ``[B, num_classes]``, feature ``[B, feature_dim]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffcore.checkpoint import read_legacy_state_dict, register_model
from diffcore.errors import CheckpointError
from torch import nn

#: CLI name → registry name of each backbone.
BACKBONES = {"resnet18": "diff_resnet.ResNet18", "wrn28_10": "diff_resnet.WideResNet", "conv4": "diff_resnet.Conv4"}


class _Backbone(nn.Module):
    """Shared parts: JSON-able ``config``, initialisation, the (feature, logits) forward."""

    feature_dim: int

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.BatchNorm2d | nn.Linear):
                module.reset_parameters()
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def classify(self, feature: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, return_feature: bool = False):
        feature = self.features(x)
        logits = self.classify(feature)
        return (feature, logits) if return_feature else logits

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, in_channels={self.in_channels}, feature_dim={self.feature_dim}"


class BasicBlock(nn.Module):
    """ResNet BasicBlock: conv-BN-ReLU-conv-BN plus the (projected) input, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


@register_model("diff_resnet.ResNet18")
class ResNet18(_Backbone):
    """ResNet-18 for 84×84 few-shot images, without the max-pool (§3.5); 512-d features."""

    feature_dim = 512

    def __init__(self, num_classes: int = 64, in_channels: int = 3):
        super().__init__()
        self.num_classes, self.in_channels = num_classes, in_channels
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        widths, strides, in_planes = (64, 128, 256, 512), (1, 2, 2, 2), 64
        for index, (planes, stride) in enumerate(zip(widths, strides, strict=True), start=1):
            stage = nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes))
            setattr(self, f"layer{index}", stage)
            in_planes = planes
        self.fc = nn.Linear(512, num_classes)
        self.reset_parameters()

    @property
    def config(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "in_channels": self.in_channels}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))

    def classify(self, feature: torch.Tensor) -> torch.Tensor:
        return self.fc(feature)


class WideBlock(nn.Module):
    """Pre-activation wide block: BN-ReLU-conv-(dropout)-BN-ReLU-conv (stride on the second conv) + shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, 1, 1, bias=True)
        self.dropout = nn.Dropout(dropout)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dropout(self.conv1(F.relu(self.bn1(x))))
        return self.conv2(F.relu(self.bn2(out))) + self.shortcut(x)


@register_model("diff_resnet.WideResNet")
class WideResNet(_Backbone):
    """WRN-depth-widen (default WRN-28-10, dropout 0) as in §3.5; ``64·widen``-d features (640)."""

    def __init__(self, num_classes: int = 64, in_channels: int = 3, depth: int = 28, widen: int = 10,
                 dropout: float = 0.0):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        self.num_classes, self.in_channels, self.depth, self.widen, self.dropout = (
            num_classes, in_channels, depth, widen, dropout)
        blocks = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.feature_dim = widths[-1]
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=True)
        in_planes = 16
        for index, (planes, stride) in enumerate(zip(widths, (1, 2, 2), strict=True), start=1):
            group = []
            for block_stride in [stride] + [1] * (blocks - 1):
                group.append(WideBlock(in_planes, planes, block_stride, dropout))
                in_planes = planes
            setattr(self, f"layer{index}", nn.Sequential(*group))
        self.bn1 = nn.BatchNorm2d(in_planes, momentum=0.9)  # quirk 15, as the original
        self.linear = nn.Linear(in_planes, num_classes)
        self.reset_parameters()

    @property
    def config(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "in_channels": self.in_channels, "depth": self.depth,
                "widen": self.widen, "dropout": self.dropout}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return F.relu(self.bn1(x)).mean(dim=(2, 3))

    def classify(self, feature: torch.Tensor) -> torch.Tensor:
        return self.linear(feature)


@register_model("diff_resnet.Conv4")
class Conv4(_Backbone):
    """Four (conv 3×3 → BN → ReLU → max-pool 2) blocks of ``width`` channels, global average pool.

    A native-resolution backbone for the 28×28 / 32×32 stand-ins (not from the paper); ``width``-d features.
    """

    def __init__(self, num_classes: int = 5, in_channels: int = 3, width: int = 64):
        super().__init__()
        self.num_classes, self.in_channels, self.width = num_classes, in_channels, width
        self.feature_dim = width
        blocks, channels = [], in_channels
        for _ in range(4):
            blocks += [nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                       nn.MaxPool2d(2)]
            channels = width
        self.encoder = nn.Sequential(*blocks)
        self.fc = nn.Linear(width, num_classes)
        self.reset_parameters()

    @property
    def config(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "in_channels": self.in_channels, "width": self.width}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).mean(dim=(2, 3))

    def classify(self, feature: torch.Tensor) -> torch.Tensor:
        return self.fc(feature)


def build_backbone(name: str, num_classes: int, in_channels: int = 3, **kwargs: Any) -> _Backbone:
    """``resnet18`` | ``wrn28_10`` | ``conv4`` (extra kwargs: ``width`` for conv4)."""
    if name == "resnet18":
        return ResNet18(num_classes, in_channels)
    if name == "wrn28_10":
        return WideResNet(num_classes, in_channels)
    if name == "conv4":
        return Conv4(num_classes, in_channels, **kwargs)
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


def convert_legacy_state_dict(path: str | Path, model: nn.Module) -> nn.Module:
    """Load an original ``saved_models/<dataset>_<backbone>.pt`` (a DataParallel state dict) into ``model``.

    Read by :func:`diffcore.checkpoint.read_legacy_state_dict` (``torch.load(weights_only=True)``, so no
    pickled code runs; a ``state_dict`` entry is unwrapped and DataParallel's ``module.`` prefix stripped,
    quirk 13); the keys and shapes must then match ``model`` exactly. Raises :class:`CheckpointError` otherwise.
    """
    state = read_legacy_state_dict(path)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    shapes = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{path} does not match {type(model).__name__}({model.extra_repr()}): missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, shape mismatches {shapes[:3]}; check --backbone and --dataset"
        )
    model.load_state_dict(state, strict=True)
    return model
