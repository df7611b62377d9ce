"""DIANet backbones (CIFAR ResNet-164, PreResNet-164, WRN-52-4, ResNeXt-101 8×32d; ImageNet ResNet-50),
their plain and SE twins from one class, registered with timm and with :mod:`diffcore.checkpoint`.

Huang et al., "DIANet: Dense-and-Implicit Attention Network", AAAI 2020. One :class:`DIAResNet` builds
every model: ``attn="dia"`` (one DIA-LSTM unit per stage, see :mod:`dianet.layers`), ``attn="se"``
(one SE module per block, r = 16) or ``attn=None`` (the baseline), with the same blocks, widths and init.

    import timm, dianet
    model = timm.create_model("dia_resnet164", num_classes=100)       # 1,946,132 parameters
    feats = timm.create_model("dia_wrn52_4", features_only=True)       # stem + one map per stage

Registered names (``dianet models`` lists them with parameter counts): ``dia_resnet164``,
``dia_preresnet164``, ``dia_wrn52_4``, ``dia_resnext101_8x32d``, ``dia_resnet50``, each with a plain twin
``<name>_base`` and an SE twin ``<name>_se``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffcore.checkpoint import register_model as register_exportable
from timm.layers import create_classifier
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn
from torch.utils.checkpoint import checkpoint

from dianet.layers import DIALSTMCell, DIAStage, SEGate
from dianet.names import VARIANTS, Attn, Cell, Share

Block = Literal["basic", "bottleneck", "preact_bottleneck", "wide_basic"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)  # the values bearpaw's cifar.py uses (for CIFAR-100 too)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


def _projection(cin: int, cout: int, stride: int, norm: bool) -> nn.Module | None:
    """1×1 projection shortcut (+ BN for post-activation nets) when the shape changes, else None."""
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout)) if norm else conv1x1(cin, cout, stride)


class BasicBlock(nn.Module):
    """Post-activation basic block: F = BN(conv3×3(ReLU(BN(conv3×3(x))))), S = x or BN(conv1×1(x)).

    DIA with basic blocks is an extension: the official BasicBlock gated the wrong tensor (spec §8).
    Shapes: ``x [B, cin, H, W]`` → ``(F, S)`` each ``[B, cout, H/s, W/s]``.
    """

    post_act = True

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv3x3(cout, cout), nn.BatchNorm2d(cout)
        self.downsample = _projection(cin, cout, stride, norm=True)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return self.bn2(self.conv2(out)), x if self.downsample is None else self.downsample(x)


class Bottleneck(nn.Module):
    """Post-activation bottleneck (ResNet; ResNeXt type C when ``cardinality > 1``), stride in the 3×3 conv.

    planes = cout / expansion, inner width D = cardinality · planes (ResNet-164: 16/32/64; ResNeXt-101
    8×32d: 8 groups of 32/64/128). F = BN(conv1×1(ReLU(BN(gconv3×3(ReLU(BN(conv1×1(x)))))))), S = x or
    BN(conv1×1(x)). Shapes: ``x [B, cin, H, W]`` → ``(F, S)`` each ``[B, cout, H/s, W/s]``.
    """

    post_act = True

    def __init__(self, cin: int, cout: int, stride: int = 1, cardinality: int = 1, expansion: int = 4):
        super().__init__()
        inner = cardinality * (cout // expansion)
        self.conv1, self.bn1 = conv1x1(cin, inner), nn.BatchNorm2d(inner)
        self.conv2, self.bn2 = conv3x3(inner, inner, stride, groups=cardinality), nn.BatchNorm2d(inner)
        self.conv3, self.bn3 = conv1x1(inner, cout), nn.BatchNorm2d(cout)
        self.downsample = _projection(cin, cout, stride, norm=True)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        return self.bn3(self.conv3(out)), x if self.downsample is None else self.downsample(x)


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck (PreResNet): F = [BN](conv1×1(ReLU(BN(conv3×3(ReLU(BN(conv1×1(ReLU(BN(x))))))))),
    S = x or a bare conv1×1 of the raw input. ``extra_bn`` adds the BN(cout) that only the DIA file has.

    Shapes: ``x [B, cin, H, W]`` → ``(F, S)`` each ``[B, cout, H/s, W/s]``.
    """

    post_act = False

    def __init__(self, cin: int, cout: int, stride: int = 1, expansion: int = 4, extra_bn: bool = False):
        super().__init__()
        planes = cout // expansion
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), conv1x1(cin, planes)
        self.bn2, self.conv2 = nn.BatchNorm2d(planes), conv3x3(planes, planes, stride)
        self.bn3, self.conv3 = nn.BatchNorm2d(planes), conv1x1(planes, cout)
        self.bn_out = nn.BatchNorm2d(cout) if extra_bn else None
        self.downsample = _projection(cin, cout, stride, norm=False)

    @property
    def last_bn(self) -> nn.BatchNorm2d | None:
        return self.bn_out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out), inplace=True))
        out = self.conv3(F.relu(self.bn3(out), inplace=True))
        if self.bn_out is not None:
            out = self.bn_out(out)
        return out, x if self.downsample is None else self.downsample(x)


class WideBasic(nn.Module):
    """Wide-ResNet pre-activation block: u = ReLU(BN(x)), F = [BN](conv3×3(Dropout(ReLU(BN(conv3×3_s(u)))))),
    S = x when the shape is kept, else conv1×1_s(u). ``extra_bn`` adds the BN(cout) of the DIA file.

    Shapes: ``x [B, cin, H, W]`` → ``(F, S)`` each ``[B, cout, H/s, W/s]``.
    """

    post_act = False

    def __init__(self, cin: int, cout: int, stride: int = 1, block_dropout: float = 0.0, extra_bn: bool = False):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), conv3x3(cin, cout, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), conv3x3(cout, cout)
        self.dropout = nn.Dropout(block_dropout) if block_dropout > 0 else None
        self.bn_out = nn.BatchNorm2d(cout) if extra_bn else None
        self.shortcut = _projection(cin, cout, stride, norm=False)

    @property
    def last_bn(self) -> nn.BatchNorm2d | None:
        return self.bn_out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(u)), inplace=True)
        if self.dropout is not None:
            out = self.dropout(out)
        out = self.conv2(out)
        if self.bn_out is not None:
            out = self.bn_out(out)
        return out, x if self.shortcut is None else self.shortcut(u)


BLOCKS: dict[str, type[nn.Module]] = {
    "basic": BasicBlock, "bottleneck": Bottleneck, "preact_bottleneck": PreActBottleneck, "wide_basic": WideBasic,
}
#: The block options each block type takes, with their neutral values (anything else given is an error).
BLOCK_OPTIONS = {"cardinality": 1, "expansion": 4, "block_dropout": 0.0, "extra_bn": False}
TAKES = {"basic": (), "bottleneck": ("cardinality", "expansion"), "preact_bottleneck": ("expansion", "extra_bn"),
         "wide_basic": ("block_dropout", "extra_bn")}


#: Registry name under which :func:`diffcore.checkpoint.load_pretrained` rebuilds exported models.
EXPORT_NAME = "dianet.DIAResNet"


@register_exportable(EXPORT_NAME)
class DIAResNet(nn.Module):
    """Residual network whose stages are :class:`~dianet.layers.DIAStage`: DIANet, SE-Net or plain.

    CIFAR stem (``stem="cifar"``): conv3×3(in_chans → stem_width) [+ BN + ReLU for post-activation blocks];
    ImageNet stem: conv7×7/2 + BN + ReLU + max-pool 3×3/2. Stage k has ``layers[k]`` blocks of output width
    ``widths[k]``, stride 1 in the first stage and 2 after (in the first block's 3×3 conv). Pre-activation
    nets end with BN + ReLU (``norm``). Head: global average pool → dropout(``drop_rate``) → Linear.

    Args:
        block: ``basic``, ``bottleneck`` (also ResNeXt with ``cardinality``), ``preact_bottleneck``, ``wide_basic``.
        layers, widths: blocks and output width C per stage (the DIA unit's width is C, derived per stage).
        attn, cell, share, reduction: the attention of every stage (see :class:`~dianet.layers.DIAStage`);
            None picks the paper's choice: ``reduction`` 4 for DIA and 16 for SE, ``share`` "stage" for DIA
            (one unit per stage) and "none" for SE (one module per block, SE-Net).
        num_layers: stacked layers of each DIA-LSTM unit (spec §3.6, :class:`~dianet.layers.DIALSTMCell`).
        cardinality, expansion: bottleneck inner width = cardinality · C / expansion.
        block_dropout: dropout between the two convs of ``wide_basic`` blocks (WRN: 0.3).
        extra_bn: the BN after the branch's last conv that DIA-PreResNet/DIA-WRN add.
        dia_bias_init: ``"default"`` (PyTorch's Linear init for the attention MLPs of every backbone) or
            ``"official"`` — the official files' init loops (spec §8): those of DIA-WRN and DIA-ResNeXt set every
            attention bias to 0, those of DIA-ResNet/PreResNet leave PyTorch's init; so biases are zeroed for
            ``wide_basic`` blocks and grouped bottlenecks (``cardinality > 1``), kept otherwise.
        fc_init: classifier init — ``"default"``, ``"zero_bias"`` (official WRN) or ``"kaiming"`` (official ResNeXt:
            Kaiming-normal weight, zero bias).
        zero_init_last: zero γ of each block's last BN (timm's option; off, since F ≡ 0 starves the gate).

    Shapes: ``x [B, in_chans, H, W]`` → logits ``[B, num_classes]``; ``forward_features`` →
    ``[B, widths[-1], H/s, W/s]`` (s = 4 for CIFAR, 32 for ImageNet).
    """

    def __init__(
        self, block: Block = "bottleneck", layers: Sequence[int] = (18, 18, 18), widths: Sequence[int] = (64, 128, 256),
        stem_width: int = 16, stem: Literal["cifar", "imagenet"] = "cifar", num_classes: int = 100, in_chans: int = 3,
        attn: Attn | None = "dia", cell: Cell = "dia_lstm", share: Share | None = None, reduction: int | None = None,
        num_layers: int = 1, cardinality: int = 1, expansion: int = 4, block_dropout: float = 0.0,
        extra_bn: bool = False, dia_bias_init: Literal["default", "official"] = "default",
        fc_init: Literal["default", "zero_bias", "kaiming"] = "default", zero_init_last: bool = False,
        global_pool: str = "avg", drop_rate: float = 0.0,
    ):
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {', '.join(BLOCKS)}, got {block!r}")
        if len(layers) != len(widths) or not layers or min(layers) < 1:
            raise ValueError(f"layers {tuple(layers)} and widths {tuple(widths)} need one positive entry per stage")
        if block in ("bottleneck", "preact_bottleneck") and any(w % expansion for w in widths):
            raise ValueError(f"bottleneck widths {tuple(widths)} must be multiples of expansion={expansion}")
        if attn not in ("dia", "se", None):
            raise ValueError(f"attn must be 'dia', 'se' or None, got {attn!r}")
        if dia_bias_init not in ("default", "official") or fc_init not in ("default", "zero_bias", "kaiming"):
            raise ValueError(f"unknown init dia_bias_init={dia_bias_init!r} / fc_init={fc_init!r}")
        reduction = reduction if reduction is not None else (16 if attn == "se" else 4)
        share = share or ("none" if attn == "se" else "stage")
        self._config = dict(
            block=block, layers=list(layers), widths=list(widths), stem_width=stem_width, stem=stem,
            num_classes=num_classes, in_chans=in_chans, attn=attn, cell=cell, share=share, reduction=reduction,
            num_layers=num_layers, cardinality=cardinality, expansion=expansion, block_dropout=block_dropout,
            extra_bn=extra_bn, dia_bias_init=dia_bias_init, fc_init=fc_init, zero_init_last=zero_init_last,
            global_pool=global_pool, drop_rate=drop_rate,
        )
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
        self.grad_checkpointing = False
        preact = not BLOCKS[block].post_act
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False)
        elif stem == "cifar":
            self.conv1 = conv3x3(in_chans, stem_width)
        else:
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        has_stem_norm = stem == "imagenet" or not preact
        self.bn1 = nn.BatchNorm2d(stem_width) if has_stem_norm else nn.Identity()
        self.act1 = nn.ReLU(inplace=True) if has_stem_norm else nn.Identity()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()
        self.feature_info = [dict(num_chs=stem_width, reduction=2 if stem == "imagenet" else 1,
                                  module="act1" if has_stem_norm else "conv1")]
        reduction_so_far = 4 if stem == "imagenet" else 1  # after the max-pool
        cin = stem_width
        given = dict(cardinality=cardinality, expansion=expansion, block_dropout=block_dropout, extra_bn=extra_bn)
        unused = [f"{k}={v!r}" for k, v in given.items() if k not in TAKES[block] and v != BLOCK_OPTIONS[k]]
        if unused:
            raise ValueError(f"{', '.join(unused)} does not apply to {block!r} blocks (they take "
                             f"{', '.join(TAKES[block]) or 'no options'})")
        block_kwargs = {k: given[k] for k in TAKES[block]}
        for k, (n, width) in enumerate(zip(layers, widths, strict=True)):
            stride = 1 if k == 0 else 2
            reduction_so_far *= stride
            blocks = [BLOCKS[block](cin if i == 0 else width, width, stride if i == 0 else 1, **block_kwargs)
                      for i in range(n)]
            self.add_module(f"layer{k + 1}", DIAStage(blocks, width, attn, cell, share, reduction, num_layers))
            self.feature_info.append(dict(num_chs=width, reduction=reduction_so_far, module=f"layer{k + 1}"))
            cin = width
        self.num_stages = len(layers)
        self.num_features = self.head_hidden_size = cin
        if preact:
            self.norm = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True))
            self.feature_info[-1]["module"] = "norm"
        else:
            self.norm = nn.Identity()
        self.global_pool, self.fc = create_classifier(cin, num_classes, pool_type=global_pool)
        self.reset_parameters()

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-able) that rebuild this model, classifier included."""
        return dict(self._config)

    @property
    def stages(self) -> list[DIAStage]:
        return [getattr(self, f"layer{k + 1}") for k in range(self.num_stages)]

    def reset_parameters(self) -> None:
        """(Re-)initialise every weight as the official code does (spec §4); idempotent given the RNG state.

        Convs N(0, √(2 / (k²·C_out))), BN γ = 1 and β = 0, attention MLPs and classifier with PyTorch's default
        Linear init, then the ``fc_init`` / ``dia_bias_init`` / ``zero_init_last`` variants.
        """
        cfg = self._config
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear | nn.LSTMCell):
                m.reset_parameters()
        if cfg["fc_init"] == "kaiming":
            nn.init.kaiming_normal_(self.fc.weight)
        if cfg["fc_init"] != "default":
            nn.init.zeros_(self.fc.bias)
        if cfg["dia_bias_init"] == "official" and (cfg["block"] == "wide_basic" or cfg["cardinality"] > 1):
            for stage in self.stages:
                for name, p in stage.attn.named_parameters() if stage.attn is not None else ():
                    if name.endswith("bias"):
                        nn.init.zeros_(p)
        if cfg["zero_init_last"]:
            for stage in self.stages:
                for blk in stage.blocks:
                    if blk.last_bn is not None:
                        nn.init.zeros_(blk.last_bn.weight)

    # ------------------------------------------------------------------------------------ timm interface

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise LR decay: stem, then one group per stage (its unit is shared by
        all its blocks, so stage granularity is the finest that keeps a unit with its blocks)."""
        return dict(stem=r"^conv1|bn1|maxpool", blocks=r"^layer(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage in backward (per stage: the recurrent state cannot cross a flat block list)."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> str | nn.Module:
        return "fc" if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier by a fresh one with ``num_classes`` outputs (0 = pooled features)."""
        pool = global_pool if global_pool is not None else self._config["global_pool"]
        self.num_classes = num_classes
        self._config.update(num_classes=num_classes, global_pool=pool)
        device = self.fc.weight.device if isinstance(self.fc, nn.Linear) else None
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=pool)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        if device is not None:
            self.global_pool.to(device)
            self.fc.to(device)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for stage in self.stages:
            if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
                x = checkpoint(stage, x, use_reentrant=False)
            else:
                x = stage(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def extra_repr(self) -> str:
        c = self._config
        return (f"block={c['block']!r}, layers={tuple(c['layers'])}, widths={tuple(c['widths'])}, attn={c['attn']!r}, "
                f"num_classes={c['num_classes']}")


# ---------------------------------------------------------------------------------------- timm registry


def _cifar_cfg(**kwargs: Any) -> dict[str, Any]:
    return dict(url="", num_classes=100, input_size=(3, 32, 32), pool_size=(8, 8), crop_pct=1.0,
                interpolation="bilinear", mean=CIFAR10_MEAN, std=CIFAR10_STD, first_conv="conv1",
                classifier="fc", **kwargs)


def _imagenet_cfg(**kwargs: Any) -> dict[str, Any]:
    return dict(url="", num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
                interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD, first_conv="conv1",
                classifier="fc", **kwargs)


#: family name → :class:`DIAResNet` kwargs of the DIA model (spec §4). The ``_base`` twin drops attention and
#: the extra BN; the ``_se`` twin uses SE (r = 16, one module per block) and no extra BN.
ARCHS: dict[str, dict[str, Any]] = {
    "dia_resnet164": dict(block="bottleneck", layers=(18, 18, 18), widths=(64, 128, 256), stem_width=16),
    "dia_preresnet164": dict(block="preact_bottleneck", layers=(18, 18, 18), widths=(64, 128, 256), stem_width=16,
                             extra_bn=True),
    "dia_wrn52_4": dict(block="wide_basic", layers=(8, 8, 8), widths=(64, 128, 256), stem_width=16,
                        block_dropout=0.3, extra_bn=True, fc_init="zero_bias"),
    "dia_resnext101_8x32d": dict(block="bottleneck", layers=(11, 11, 11), widths=(128, 256, 512), stem_width=32,
                                 cardinality=8, fc_init="kaiming"),
    "dia_resnet50": dict(block="bottleneck", layers=(3, 4, 6, 3), widths=(256, 512, 1024, 2048), stem_width=64,
                         stem="imagenet", reduction=20),
}


def arch_kwargs(name: str) -> dict[str, Any]:
    """:class:`DIAResNet` kwargs of a registered name (``dia_resnet164``, ``dia_resnet164_base``, ``…_se``)."""
    for base in ARCHS:
        for suffix in VARIANTS:
            if name == base + suffix:
                kwargs = dict(ARCHS[base])
                if suffix:
                    kwargs.pop("reduction", None)
                    kwargs.update(attn="se" if suffix == "_se" else None, extra_bn=False)
                return kwargs
    raise KeyError(f"unknown DIANet model {name!r}; registered: {', '.join(model_names())}")


def model_names() -> list[str]:
    return [base + suffix for base in ARCHS for suffix in VARIANTS]


#: Named widths (spec §8), ``widths="<name>"``: (stem width, stage widths) where they differ from the official
#: DIANet files' (``"dianet"``, the registered default). bearpaw/pytorch-classification's CIFAR ResNeXt is
#: 64 | 256, 512, 1024 (≈ 128 M parameters at depth 101); its ResNet, PreResNet and WRN equal DIANet's.
NAMED_WIDTHS: dict[str, dict[str, tuple[int, tuple[int, ...]]]] = {
    "dianet": {},
    "bearpaw": {"dia_resnext101_8x32d": (64, (256, 512, 1024))},
}


def named_widths(name: str, preset: str) -> tuple[int, tuple[int, ...]]:
    """(stem width, stage widths) of the registered model ``name`` under the named width preset ``preset``."""
    if preset not in NAMED_WIDTHS:
        raise ValueError(f"widths={preset!r} is neither a list of stage widths nor one of the named presets "
                         f"{', '.join(NAMED_WIDTHS)}")
    arch = arch_kwargs(name)
    family = next(base for base in ARCHS if name.startswith(base))
    return NAMED_WIDTHS[preset].get(family, (arch["stem_width"], tuple(arch["widths"])))


def _create(name: str, pretrained: bool = False, **kwargs: Any) -> DIAResNet:
    arch = arch_kwargs(name)
    if isinstance(kwargs.get("widths"), str):  # a named preset sets the stem too, unless stem_width is given
        stem_width, kwargs["widths"] = named_widths(name, kwargs["widths"])
        kwargs.setdefault("stem_width", stem_width)
    feature_cfg = dict(out_indices=tuple(range(len(arch["layers"]) + 1)))
    return build_model_with_cfg(DIAResNet, name, pretrained, feature_cfg=feature_cfg, **{**arch, **kwargs})


default_cfgs = generate_default_cfgs({
    name: _imagenet_cfg() if arch_kwargs(name).get("stem") == "imagenet" else _cifar_cfg() for name in model_names()
})


def _entrypoint(name: str):
    def entry(pretrained: bool = False, **kwargs: Any) -> DIAResNet:
        return _create(name, pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__module__ = __name__
    entry.__doc__ = (f"{name}: :class:`DIAResNet` with {arch_kwargs(name)} (override any of them as kwargs; "
                     f"widths may also name a preset: {', '.join(NAMED_WIDTHS)}).")
    return entry


for _name in model_names():
    globals()[_name] = register_model(_entrypoint(_name))

__all__ = ["DIAResNet", "DIALSTMCell", "DIAStage", "SEGate", "arch_kwargs", "model_names", *model_names()]
