"""Weights of the official code (David-cripto/DiffClassification, HEAD 05c3f81) in our models (spec §3.1, §5).

Two official state-dict layouts map onto ours; the architecture is read off the tensors and the result is
loaded strictly, so a tensor that has no place is an error, never dropped silently:

* ``MyUnet`` (``diffclassification/unet.py``) → :class:`~diffclassify.models.MyUNet` with
  ``time_table="original"`` and the checkpoint's own frozen table. The keys are ours, except two tensors the
  committed forward never reads, which are left out: ``y_embed.weight`` (``is_y_cond`` is False) and
  ``b_out.2.ln.*`` (the last block is built with a LayerNorm that ``normalize=False`` never applies). A
  ``DDPM`` state dict (``scripts/mnist_train.py`` saves ``ddpm.state_dict()``: ``model.*``, ``ema.*``,
  ``betas``, ``clip_x0``, ``shape``) is accepted too: its EMA weights by default, as the original's
  ``DDPM.from_pretrained`` loads them.
* ``ConvVAE`` (``diffclassification/vae_mnist.py``) → :class:`~diffclassify.models.MnistConvVAE`: the
  Sequential slots ``encoder.{0,2,4,7,9}`` are conv1, conv2, conv3, enc_fc1, enc_fc2 and
  ``decoder.{0,2,5,7,9}`` are dec_fc1, dec_fc2, deconv1, deconv2, deconv3 (the other slots are activations).

A model trained by the official code saw the original forward process (variance 1 − √ᾱ_t): extract its
features with that process (``forward_variance="original"``) to reproduce the original's features.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from diffcore.errors import CheckpointError

from diffclassify.models import MnistConvVAE, MyUNet

#: Tensors of the official MyUnet that its forward never reads (see the module docstring).
UNUSED_UNET_KEYS = ("y_embed.weight", "b_out.2.ln.weight", "b_out.2.ln.bias")
VAE_KEYS = {"encoder.0": "conv1", "encoder.2": "conv2", "encoder.4": "conv3", "encoder.7": "enc_fc1",
            "encoder.9": "enc_fc2", "decoder.0": "dec_fc1", "decoder.2": "dec_fc2", "decoder.5": "deconv1",
            "decoder.7": "deconv2", "decoder.9": "deconv3"}


def _load(model: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    try:
        model.load_state_dict(dict(state), strict=True)
    except RuntimeError as err:
        detail = "; ".join(line.strip() for line in str(err).splitlines()[1:])[:400]
        raise CheckpointError(f"the official {what} state dict does not fit {type(model).__name__}: {detail}") \
            from None


def unet_weights(state: Mapping[str, torch.Tensor], weights: Literal["ema", "online"] = "ema"
                 ) -> dict[str, torch.Tensor]:
    """The ``MyUnet`` tensors of ``state``: a bare ``MyUnet`` state dict, or a ``DDPM`` one's ``ema.*``
    (``weights="ema"``) or ``model.*`` (``"online"``) entries with the prefix removed."""
    prefix = {"ema": "ema.", "online": "model."}[weights]
    if any(key.startswith(prefix) for key in state):
        return {key.removeprefix(prefix): value for key, value in state.items() if key.startswith(prefix)}
    return dict(state)


def unet_from_official(state: Mapping[str, torch.Tensor], weights: Literal["ema", "online"] = "ema") -> MyUNet:
    """Our :class:`MyUNet` holding the official ``MyUnet`` (or ``DDPM``) weights, in the state's dtype.

    Widths, image size, channels, time dimension and number of steps are read off the tensors.
    """
    state = unet_weights(state, weights)
    if "time_embed.weight" not in state or "b1.0.conv1.weight" not in state:
        raise CheckpointError("not an official MyUnet state dict: no time_embed.weight / b1.0.conv1.weight")
    table = state["time_embed.weight"]
    widths = [state[f"{stage}.0.conv1.weight"].shape[0] for stage in ("b1", "b2", "b3")]
    model = MyUNet(image_size=state["b1.0.ln.weight"].shape[-1], in_channels=state["te1.0.weight"].shape[0],
                   widths=widths, time_dim=table.shape[1], num_steps=table.shape[0], time_table="original")
    ours = {key: value for key, value in state.items() if key not in UNUSED_UNET_KEYS}
    _load(model.to(table.dtype), ours, "MyUnet")
    return model


def mnist_vae_from_official(state: Mapping[str, torch.Tensor]) -> MnistConvVAE:
    """Our :class:`MnistConvVAE` holding the official ``ConvVAE`` weights, in the state's dtype.

    Latent size, hidden width, channels and image size are read off the tensors.
    """
    ours = {}
    for key, value in state.items():
        module, leaf = key.rsplit(".", 1)
        if module not in VAE_KEYS:
            raise CheckpointError(f"not an official ConvVAE state dict: unexpected key {key!r}")
        ours[f"{VAE_KEYS[module]}.{leaf}"] = value
    if "enc_fc1.weight" not in ours or "enc_fc2.weight" not in ours:
        raise CheckpointError("not an official ConvVAE state dict: no encoder.7 / encoder.9 Linear layers")
    hidden, flat = ours["enc_fc1.weight"].shape
    side = round((flat / 128) ** 0.5)
    model = MnistConvVAE(image_size=4 * side, in_channels=ours["conv1.weight"].shape[1],
                         latent_dim=ours["enc_fc2.weight"].shape[0] // 2, hidden=hidden)
    _load(model.to(ours["enc_fc1.weight"].dtype), ours, "ConvVAE")
    return model
