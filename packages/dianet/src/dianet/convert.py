"""Convert checkpoints of the official code (gbup-group/DIANet on bearpaw's ``cifar.py``) to our layout.

The official ``checkpoint.pth.tar`` / ``model_best.pth.tar`` is ``{"state_dict": ..., "epoch", "acc", ...}``
saved from ``nn.DataParallel`` (keys prefixed ``module.``). Its stages are ``layerK`` (ResNet, PreResNet),
``blockK`` (WRN) or ``stage_K`` (ResNeXt), each ``{ModuleList.i.<block>, lstm.w_ih.0.seq.{0,2},
lstm.w_hh.0.seq.{0,2}}``. Ours: ``layerK.blocks.i.<block>`` and ``layerK.attn.0.{ih,hh}.{fc1,fc2}``; the
family, depth, widths, cardinality, reduction and class count are read off the tensors. The ``.pth`` is
read by the core's :func:`~diffcore.checkpoint.read_legacy_state_dict` (``torch.load(weights_only=True)``: no
code from the file runs; ``state_dict`` unwrapped, ``module.`` stripped).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffcore.checkpoint import export_model, read_checkpoint_config, read_legacy_state_dict
from diffcore.errors import CheckpointError, ConfigError

from dianet.models import ARCHS, EXPORT_NAME, DIAResNet

STAGE = re.compile(r"^(?:layer|block|stage_)(\d+)\.(ModuleList|lstm)\.(.+)$")
CELL = re.compile(r"^(w_ih|w_hh)\.0\.seq\.([02])\.(weight|bias)$")
CELL_NAMES = {"w_ih": "ih", "w_hh": "hh", "0": "fc1", "2": "fc2"}

#: Per family: renamed top-level modules and renamed block submodules (module path before the tensor name).
TOP = {
    "dia_resnet164": {},
    "dia_preresnet164": {"bn": "norm.0"},
    "dia_wrn52_4": {"bn1": "norm.0"},
    "dia_resnext101_8x32d": {"conv_1_3x3": "conv1", "bn_1": "bn1", "classifier": "fc"},
}
BLOCK = {
    "dia_resnet164": {},
    "dia_preresnet164": {"bn_additional": "bn_out", "downsample.0": "downsample"},
    "dia_wrn52_4": {"bn_additional": "bn_out", "convShortcut": "shortcut"},
    "dia_resnext101_8x32d": {
        "conv_reduce": "conv1", "bn_reduce": "bn1", "conv_conv": "conv2", "bn": "bn2", "conv_expand": "conv3",
        "bn_expand": "bn3", "shortcut.shortcut_conv": "downsample.0", "shortcut.shortcut_bn": "downsample.1",
    },
}


def detect_family(state: Mapping[str, Any]) -> str:
    """Which official model file produced ``state`` (keys without the ``module.`` prefix)."""
    if any(k.startswith("stage_1.") for k in state):
        return "dia_resnext101_8x32d"
    if any(k.startswith("block1.") for k in state):
        return "dia_wrn52_4"
    if not any(k.startswith("layer1.") for k in state):
        raise CheckpointError("not an official DIANet state dict: no layer1./block1./stage_1. keys")
    if "bn.weight" in state:
        return "dia_preresnet164"
    if not any(k.startswith("layer1.ModuleList.0.conv3.") for k in state):
        raise CheckpointError("official DIA-ResNet with BasicBlock: its gate multiplies the wrong tensor "
                              "(spec §8), so its weights have no equivalent here")
    return "dia_resnet164"


def official_cell_key(key: str, prefix: str = "") -> str:
    """Key of the official one-layer ``LSTMCell`` (``w_ih.0.seq.2.bias``) → ours in :class:`~dianet.layers.DIALSTMCell`
    (``ih.fc2.bias``): ``w_ih``/``w_hh`` are the input/hidden MLPs, ``seq.0``/``seq.2`` their two Linear layers.
    ``prefix`` (the cell's path in a model) only completes the key an error names."""
    cell = CELL.match(key)
    if cell is None:
        raise CheckpointError(f"{prefix}{key}: only one-layer DIA-LSTM cells (w_ih.0 / w_hh.0) are supported")
    mlp, layer, leaf = cell.groups()
    return f"{CELL_NAMES[mlp]}.{CELL_NAMES[layer]}.{leaf}"


def _rename(key: str, family: str) -> str:
    match = STAGE.match(key)
    if match is None:
        module, leaf = key.rsplit(".", 1)
        return f"{TOP[family].get(module, module)}.{leaf}"
    stage, kind, rest = match.groups()
    if kind == "lstm":
        return f"layer{stage}.attn.0.{official_cell_key(rest, prefix=key.removesuffix(rest))}"
    index, tail = rest.split(".", 1)
    module, leaf = tail.rsplit(".", 1)
    return f"layer{stage}.blocks.{index}.{BLOCK[family].get(module, module)}.{leaf}"


@dataclass
class Converted:
    state_dict: dict[str, torch.Tensor]
    family: str
    kwargs: dict[str, Any]  # DIAResNet kwargs of the architecture the checkpoint describes


def convert_official_state_dict(state: Mapping[str, torch.Tensor]) -> Converted:
    """Official state dict (with or without ``module.``) → our state dict, its family and DIAResNet kwargs."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    family = detect_family(state)
    ours = {_rename(k, family): v for k, v in state.items()}
    return Converted(ours, family, {**ARCHS[family], **_infer_shape(ours, family)})


def _infer_shape(ours: Mapping[str, torch.Tensor], family: str) -> dict[str, Any]:
    stages = sorted({int(m.group(1)) for k in ours if (m := re.match(r"layer(\d+)\.blocks\.", k))})
    layers = [len({k.split(".")[2] for k in ours if k.startswith(f"layer{s}.blocks.")}) for s in stages]
    last_conv = "conv2" if family == "dia_wrn52_4" else "conv3"
    widths = [ours[f"layer{s}.blocks.0.{last_conv}.weight"].shape[0] for s in stages]
    hidden = ours["layer1.attn.0.ih.fc1.weight"].shape[0]
    kwargs: dict[str, Any] = dict(layers=tuple(layers), widths=tuple(widths), stem_width=ours["conv1.weight"].shape[0],
                                  num_classes=ours["fc.weight"].shape[0], reduction=widths[0] // hidden)
    if family == "dia_resnext101_8x32d":
        inner, per_group = ours["layer1.blocks.0.conv2.weight"].shape[:2]
        kwargs.update(cardinality=inner // per_group, expansion=widths[0] // per_group)
    return kwargs


def check_output(output: str | Path, overwrite: bool = False) -> None:
    """``OUTPUT`` must be new or empty, or (with ``overwrite``) hold an exported model: a conversion never
    replaces a folder of other files."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"{output} is a file; give a folder for the converted model")
    if output.is_dir() and any(output.iterdir()):
        if not overwrite:
            raise ConfigError(f"{output} is not empty; pass --overwrite to replace the model in it, or choose a new "
                              "folder")
        read_checkpoint_config(output)  # only an exported model folder may be replaced


def convert_checkpoint(path: str | Path, output_dir: str | Path) -> dict[str, Any]:
    """Read an official checkpoint, load it strictly into the matching :class:`DIAResNet`, export it."""
    converted = convert_official_state_dict(read_legacy_state_dict(path))
    ours, kwargs = converted.state_dict, converted.kwargs
    model = DIAResNet(**kwargs)
    for key, value in model.state_dict().items():  # checkpoints from PyTorch < 0.4.1 lack the BN counters
        if key.endswith("num_batches_tracked") and key not in ours:
            ours[key] = torch.zeros_like(value)
    try:
        model.load_state_dict(ours, strict=True)
    except RuntimeError as err:
        detail = "; ".join(line.strip() for line in str(err).splitlines()[1:])[:400]
        raise CheckpointError(f"{path} does not match the {converted.family} it looks like: {detail}") from None
    export_model(model, output_dir, name=EXPORT_NAME, config=model.config, package="dianet",
                 extra={"arch": converted.family, "converted_from": str(path)})
    return {"arch": converted.family, "layers": list(kwargs["layers"]), "widths": list(kwargs["widths"]),
            "num_classes": kwargs["num_classes"], "params": sum(p.numel() for p in model.parameters()),
            "tensors": len(ours), "output": str(output_dir)}
