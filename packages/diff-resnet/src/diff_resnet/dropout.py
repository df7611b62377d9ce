"""Inverted dropout with cheap masks, for the graph model's dropout before every diffusion step (§3.2).

Diff-ResNet's graph model (Wang et al., TPAMI 2024, ``graph/model.py``) applies dropout to the whole
``N × F`` hidden state before each of its T diffusion steps: on Cora that is T = 20 masks of 2,485 × 1,433
entries per training epoch. ``torch.bernoulli_`` draws one double per entry; :func:`dropout_keep_mask` cuts
four 16-bit uniforms out of each 64-bit random word instead (3–4× cheaper on a CPU), at the price of
rounding p to a multiple of 2⁻¹⁶.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from diffcore.errors import ConfigError
from torch import nn

#: Random bits per mask entry: 8 when p is a multiple of 2⁻⁸, else 16 (p rounded to a multiple of 2⁻¹⁶).
DROPOUT_BITS = (8, 16)


def dropout_bits(p: float) -> int:
    """Bits per entry of :func:`dropout_keep_mask`: the fewest of 8 and 16 that represent p exactly, else 16."""
    return next((bits for bits in DROPOUT_BITS if float(p * 2**bits).is_integer()), DROPOUT_BITS[-1])


def _check_probability(p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"dropout probability must lie in [0, 1), got {p}")


def dropout_keep_mask(shape: Sequence[int], p: float, *, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean keep-mask with ``P(keep) = 1 − p̃``, ``p̃ = round(p · 2ᵇ) / 2ᵇ``, b = :func:`dropout_bits` (p̃ = p
    for multiples of 2⁻⁸; otherwise ``|p̃ − p| ≤ 2⁻¹⁷``).

    Each 64-bit word from ``random_`` is cut into 64 / b uniform b-bit integers, one per entry. The entries
    come from ``generator`` (default: the device's global generator) in row-major order, so two callers
    with the same generator state draw the same mask. ``out`` (bool, ``shape``) may be a strided view.

    Shapes: ``shape`` → bool ``shape``.
    """
    _check_probability(p)
    bits = dropout_bits(p)
    count = math.prod(shape)
    device = generator.device if generator is not None else device
    words = torch.empty(-(-count * bits // 64), dtype=torch.int64, device=device).random_(-(2**63), None,
                                                                                          generator=generator)
    uniform = words.view(torch.int8 if bits == 8 else torch.int16)[:count].view(*shape)  # over [−2ᵇ⁻¹, 2ᵇ⁻¹)
    threshold = round(p * 2**bits) - 2 ** (bits - 1)
    return torch.ge(uniform, threshold, out=out)


def dropout_scale(p: float) -> float:
    """``1 / (1 − p̃)``: the rescaling that keeps :func:`dropout_keep_mask` dropout unbiased."""
    bits = dropout_bits(p)
    return 2**bits / (2**bits - round(p * 2**bits))


class FastDropout(nn.Module):
    """Inverted dropout with masks from :func:`dropout_keep_mask` (``nn.Dropout``, p exact for multiples of 2⁻⁸).

    Shapes: any → the same.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        _check_probability(p)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * dropout_keep_mask(x.shape, self.p, device=x.device) * dropout_scale(self.p)

    def extra_repr(self) -> str:
        return f"p={self.p:g}"
