"""Official DIFFormer checkpoints (``<dataset>-difformer.pkl``, plain state dicts) → exported models.

The official keys (``fcs.0``, ``fcs.1``, ``bns.0..L``, ``convs.<l>.Wq/Wk[/Wv]``) are ours, so the mapping is 1:1.
Shapes fix the architecture (input, hidden and output widths, layers, heads, ``use_weight``); the switches
that leave no trace in the weights (kernel, α, LayerNorm use, residual, graph branch, graph weight, source term)
come from the preset the checkpoint was trained with (the released ones: ``proteins-s``, ``pokec-s``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffcore.errors import CheckpointError

from difformer.config import ModelConfig
from difformer.models import EXPORT_NAME, DIFFormer


def architecture_from_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``in_channels``, ``hidden_channels``, ``out_channels``, ``num_layers``, ``num_heads``, ``use_weight``."""
    need = ("fcs.0.weight", "fcs.1.weight", "convs.0.Wq.weight")
    missing = [k for k in need if k not in state]
    if missing:
        raise CheckpointError(f"not a DIFFormer state dict: missing {', '.join(missing)} "
                              f"(found {', '.join(list(state)[:6])}{', …' if len(state) > 6 else ''})")
    hidden, in_channels = state["fcs.0.weight"].shape
    layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("convs."))
    return {"in_channels": int(in_channels), "hidden_channels": int(hidden),
            "out_channels": int(state["fcs.1.weight"].shape[0]), "num_layers": layers,
            "num_heads": int(state["convs.0.Wq.weight"].shape[0]) // int(hidden),
            "use_weight": "convs.0.Wv.weight" in state}


def convert_official_state_dict(state: Mapping[str, torch.Tensor], model: ModelConfig) -> DIFFormer:
    """A :class:`DIFFormer` holding the official ``state`` (loaded strictly); ``model`` gives the switches.

    The architecture read off the tensors overrides ``model``'s width/depth/heads/``use_weight``. The model takes
    the checkpoint's floating dtype, so float64 weights are not rounded to float32 on the way in.
    """
    arch = architecture_from_state_dict(state)
    switches = dataclasses.replace(model, hidden_channels=arch["hidden_channels"], num_layers=arch["num_layers"],
                                   num_heads=arch["num_heads"], use_weight=arch["use_weight"])
    net = DIFFormer(**switches.kwargs(arch["in_channels"], arch["out_channels"]))
    if state["fcs.0.weight"].is_floating_point():
        net = net.to(state["fcs.0.weight"].dtype)
    expected = net.state_dict()
    unexpected = sorted(set(state) - set(expected))
    lacking = sorted(set(expected) - set(state))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    if unexpected or lacking or shapes:
        problems = [f"unexpected {', '.join(unexpected[:5])}" if unexpected else "",
                    f"missing {', '.join(lacking[:5])}" if lacking else "",
                    f"shape mismatch {', '.join(shapes[:3])}" if shapes else ""]
        raise CheckpointError(f"the state dict does not match DIFFormer: {'; '.join(p for p in problems if p)}")
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    return net


def convert_checkpoint(source: str | Path, output: str | Path, model: ModelConfig, preset: str) -> dict[str, Any]:
    """Read ``source`` (weights only), build the model, export it to ``output``; returns a summary."""
    from diffcore.checkpoint import export_model, read_legacy_state_dict

    state = read_legacy_state_dict(source)
    net = convert_official_state_dict(state, model)
    export_model(net, output, name=EXPORT_NAME, config=net.config, package="difformer",
                 extra={"converted_from": str(source), "preset": preset})
    return {**{k: v for k, v in net.config.items() if k in ("in_channels", "hidden_channels", "out_channels",
                                                            "num_layers", "kernel", "use_weight")},
            "params": sum(p.numel() for p in net.parameters()), "tensors": len(state), "output": str(output)}
