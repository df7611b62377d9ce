"""The two all-pair attention kernels of DIFFormer (Wu et al., ICLR 2023, §3.2 / Eq. 10 and Eq. 12).

One explicit Euler step of the diffusion ∂z_i/∂t = Σ_j s_ij (z_j − z_i) with a row-stochastic diffusivity
S gives z_i ← (1 − τ) z_i + τ Σ_j s_ij z_j. DIFFormer takes S from the closed form of a regularised energy;
both instantiations below return Σ_j s_ij v_j for every query i:

* **simple** (DIFFormer-s): s_ij ∝ 1 + q̃_iᵀk̃_j. By associativity
  ``out_i = [q̃_i (K̃ᵀV) + Σ_j v_j] / [q̃_i · Σ_j k̃_j + L]`` costs O(N·H·d²) and never forms the N × L matrix.
  q̃, k̃ use ONE Frobenius norm over the whole ``[N, H, d]`` tensor (the released code; spec quirk 4), so
  Σ_i ‖q̃_i‖² = 1 and every weight is ≥ 0; ``qk_norm="row"`` is the per-instance ℓ2 norm of the paper's notation.
* **sigmoid** (DIFFormer-a): s_ij = σ(q_iᵀk_j) / Σ_l σ(q_iᵀk_l) on the raw projections (no 1/√d). Computed in
  blocks of query rows with a hand-written backward that recomputes each block, so forward *and* backward
  hold O(block·L·H) numbers instead of O(N·L·H) (a single block is kept from the forward instead).

Shapes (any number of leading batch dims ``...``; attention stays inside each batch element):
``q [..., N, H, M]``, ``k [..., L, H, M]``, ``v [..., L, H, D]`` → ``[..., N, H, D]``.
"""

from __future__ import annotations

from typing import Literal

import torch

Kernel = Literal["simple", "sigmoid"]
QKNorm = Literal["global", "row"]

#: Attention weights one sigmoid block may hold when ``block_size`` is None ("auto"): 2²⁴ floats = 64 MiB.
AUTO_BLOCK_ELEMENTS = 1 << 24
#: Block-sized buffers alive at once in the sigmoid backward (logits/weights, dS, dZ); used by memory estimates.
SIGMOID_BLOCK_BUFFERS = 3


def normalize_qk(q: torch.Tensor, k: torch.Tensor, qk_norm: QKNorm = "global") -> tuple[torch.Tensor, torch.Tensor]:
    """q̃, k̃ of the simple kernel: one Frobenius norm per batch element (``global``) or per row (``row``)."""
    if qk_norm == "global":
        dims = (-3, -2, -1)
        q = q / torch.linalg.vector_norm(q, dim=dims, keepdim=True).clamp_min(1e-12)
        k = k / torch.linalg.vector_norm(k, dim=dims, keepdim=True).clamp_min(1e-12)
        return q, k
    if qk_norm == "row":
        return torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(k, dim=-1)
    raise ValueError(f"qk_norm must be 'global' or 'row', got {qk_norm!r}")


def simple_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qk_norm: QKNorm = "global") -> torch.Tensor:
    """DIFFormer-s in O(N): ``Σ_j (1 + q̃_iᵀk̃_j) v_j / Σ_j (1 + q̃_iᵀk̃_j)`` for N queries over L keys.

    Cross-attention (N ≠ L) adds Σ_j v_j to every query row and L to every denominator (spec quirk 5: the
    original tiled the sum to L rows and added N).
    """
    q, k = normalize_qk(q, k, qk_norm)
    num_keys = k.shape[-3]
    q, k, v = (t.transpose(-3, -2) for t in (q, k, v))  # head-major [..., H, N, ·] views: plain batched matmuls
    numerator = q @ (k.transpose(-1, -2) @ v) + v.sum(dim=-2, keepdim=True)  # q̃ (K̃ᵀV) + Σ_j v_j
    denominator = q @ k.sum(dim=-2).unsqueeze(-1) + num_keys  # q̃ · Σ_j k̃_j + L
    return (numerator / denominator).transpose(-3, -2)


def auto_block_size(num_keys: int, num_heads: int = 1, batch: int = 1) -> int:
    """Query rows per sigmoid block so one block holds about :data:`AUTO_BLOCK_ELEMENTS` weights."""
    return max(1, AUTO_BLOCK_ELEMENTS // max(1, num_keys * num_heads * batch))


def sigmoid_block_bytes(block_rows: int, num_keys: int, num_heads: int = 1, batch: int = 1,
                        element_size: int = 4) -> int:
    """Peak bytes of the block buffers of :func:`sigmoid_attention` (backward, the larger pass)."""
    return SIGMOID_BLOCK_BUFFERS * block_rows * num_keys * num_heads * batch * element_size


class _BlockwiseSigmoidAttention(torch.autograd.Function):
    """Row-normalised sigmoid attention, forward and backward in blocks of query rows.

    With a_ij = σ(z_ij), z_ij = q_iᵀk_j, den_i = Σ_j a_ij and out_i = Σ_j a_ij v_j / den_i, the gradients for
    an upstream g_i are ∂/∂v_j = Σ_i a_ij g_i / den_i and ∂/∂z_ij = a_ij (1 − a_ij)(g_iᵀv_j − g_iᵀout_i)/den_i,
    so each block of rows is recomputed from (q, k, v, out, den) and never stored.
    Inputs are flattened to one batch dim: ``q [B, N, H, M]``, ``k [B, L, H, M]``, ``v [B, L, H, D]``.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: int) -> torch.Tensor:
        out = q.new_empty(*q.shape[:3], v.shape[-1])
        den = q.new_empty(q.shape[:3])
        for start in range(0, q.shape[1], block):
            rows = slice(start, start + block)
            weights = torch.einsum("bnhm,blhm->bhnl", q[:, rows], k).sigmoid_()
            den[:, rows] = weights.sum(-1).transpose(1, 2)
            out[:, rows] = torch.einsum("bhnl,blhd->bnhd", weights, v) / den[:, rows, :, None]
        ctx.save_for_backward(q, k, v, out)
        # one block holds every weight: keep it for the backward instead of recomputing it (same memory bound)
        ctx.weights = weights if block >= q.shape[1] else None
        ctx.den, ctx.block = den, block
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        q, k, v, out = ctx.saved_tensors
        den, block, kept = ctx.den, ctx.block, ctx.weights
        ctx.weights = None
        grad_q, grad_k, grad_v = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        for start in range(0, q.shape[1], block):
            rows = slice(start, start + block)
            weights = kept if kept is not None else torch.einsum("bnhm,blhm->bhnl", q[:, rows], k).sigmoid_()
            g = grad_out[:, rows] / den[:, rows, :, None]  # g_i / den_i
            grad_v += torch.einsum("bhnl,bnhd->blhd", weights, g)
            grad_z = torch.einsum("bnhd,blhd->bhnl", g, v)
            grad_z -= (g * out[:, rows]).sum(-1).transpose(1, 2).unsqueeze(-1)
            grad_z *= weights
            grad_z *= weights.neg_().add_(1.0)
            del weights
            grad_q[:, rows] = torch.einsum("bhnl,blhm->bnhm", grad_z, k)
            grad_k += torch.einsum("bhnl,bnhm->blhm", grad_z, q[:, rows])
        return grad_q, grad_k, grad_v, None


def sigmoid_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int | None = None) -> torch.Tensor:
    """DIFFormer-a: ``Σ_j σ(q_iᵀk_j) v_j / Σ_j σ(q_iᵀk_j)`` in blocks of ``block_size`` query rows.

    Equals the dense formula; memory O(block·L·H) in forward and backward. ``block_size=None`` picks
    :func:`auto_block_size`.
    """
    lead = q.shape[:-3]
    batch = int(torch.Size(lead).numel())
    q3, k3, v3 = (t.reshape(batch, *t.shape[-3:]) for t in (q, k, v))
    if block_size is None:
        block_size = auto_block_size(k.shape[-3], k.shape[-2], batch)
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    out = _BlockwiseSigmoidAttention.apply(q3, k3, v3, min(block_size, max(1, q.shape[-3])))
    return out.reshape(*lead, *out.shape[1:])


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: Kernel = "simple", *,
              qk_norm: QKNorm = "global", block_size: int | None = None) -> torch.Tensor:
    """Dispatch to :func:`simple_attention` or :func:`sigmoid_attention`; shapes as in the module docstring."""
    if kernel == "simple":
        return simple_attention(q, k, v, qk_norm)
    if kernel == "sigmoid":
        return sigmoid_attention(q, k, v, block_size)
    raise ValueError(f"kernel must be 'simple' or 'sigmoid', got {kernel!r}")


def attention_weights(q: torch.Tensor, k: torch.Tensor, kernel: Kernel = "simple", *,
                      qk_norm: QKNorm = "global") -> torch.Tensor:
    """The dense N × L weights s_ij of either kernel, ``[..., N, L, H]``, rows summing to 1 (for inspection).

    O(N·L·H) memory by nature: use it to look at attention maps, never in training.
    """
    if kernel == "simple":
        q, k = normalize_qk(q, k, qk_norm)
        weights = torch.einsum("...nhm,...lhm->...nlh", q, k) + 1.0
    elif kernel == "sigmoid":
        weights = torch.einsum("...nhm,...lhm->...nlh", q, k).sigmoid()
    else:
        raise ValueError(f"kernel must be 'simple' or 'sigmoid', got {kernel!r}")
    return weights / weights.sum(dim=-2, keepdim=True)
