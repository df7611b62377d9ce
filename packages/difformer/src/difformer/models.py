"""DIFFormer layers and model, as PyG-style modules.

Paper: Q. Wu, C. Yang, W. Zhao, Y. He, D. Wipf, J. Yan, "DIFFormer: Scalable (Graph) Transformers Induced by
Energy Constrained Diffusion", ICLR 2023 (arXiv 2301.09474). Instances (graph nodes, embeddings, sensors) are
particles whose states follow ∂z_i/∂t = Σ_j s_ij (z_j − z_i). One layer is one explicit Euler step of size τ:
z_i ← (1 − τ) z_i + τ Σ_j s_ij z_j, with S the all-pair attention of :mod:`difformer.kernels` (plus, optionally,
the observed graph). The residual weight ``alpha`` is τ. The energy only motivates S (author, issue #8): what
is implemented is the attention layer below.

Argument names follow the official code (``node classification/difformer.py``, commit 89af3b2), and the
state dict keys are the official ones (``fcs.0``, ``fcs.1``, ``bns.0..L``, ``convs.<l>.Wq/Wk/Wv``), so its
``.pkl`` checkpoints load 1:1 (:mod:`difformer.convert`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffcore.checkpoint import register_model
from torch import nn

from difformer.graph import AdjacencyCache, DegreeNorm, NormalizedAdjacency
from difformer.kernels import Kernel, QKNorm, attention, attention_weights

EXPORT_NAME = "difformer.DIFFormer"
KERNELS = ("simple", "sigmoid")


def graph_mix(graph_weight: float) -> str:
    """Spec quirk 7: −1 → ``sum`` (attn + G); gw ∈ (0, 1] → ``convex`` ((1 − gw)·attn + gw·G); anything else
    (0 included, which the original silently treated as a sum) is rejected."""
    if graph_weight == -1:
        return "sum"
    if 0 < graph_weight <= 1:
        return "convex"
    raise ValueError(f"graph_weight must be -1 (attention + graph) or in (0, 1] (convex mix), got {graph_weight}")


Graph = torch.Tensor | NormalizedAdjacency


class DIFFormerConv(nn.Module):
    r"""One DIFFormer layer (spec §2.2): all-pair diffusion attention, an optional GCN branch, head mean.

    .. math::
        Q = W_Q h,\ K = W_K h,\ V = W_V h \text{ (or } V = h \text{ without } W_V)\\
        \text{attn}_i = \textstyle\sum_j s_{ij} v_j,\quad G = \hat A V,\quad
        \text{out} = \operatorname{mean}_\text{heads}(\text{attn} + G \text{ or } (1-g)\,\text{attn} + g\,G)
        \;(+ h^0 \text{ if use\_source})

    with s_ij from ``kernel`` (``simple``: ∝ 1 + q̃_iᵀk̃_j, O(N); ``sigmoid``: ∝ σ(q_iᵀk_j), O(N²) time,
    O(N·block) memory) and Â = D^{-1/2} A D^{-1/2} (:mod:`difformer.graph`). No 1/√d scaling, no activation.

    Args:
        in_channels, out_channels: widths d_in, d (Q, K, V are ``[N, H, d]``). Without ``use_weight`` the
            values are the inputs themselves, so ``in_channels`` must equal ``out_channels``.
        num_heads: H. kernel: ``simple`` | ``sigmoid``. use_graph: add the GCN branch.
        use_weight: learn W_V. graph_weight: −1 sums attention and graph; g ∈ (0, 1] mixes them convexly.
        use_source: add the source state h⁰ (``source=`` in :meth:`forward`) after the head mean.
        qk_norm: ``global`` (one Frobenius norm, the released code) | ``row`` (simple kernel only).
        degree_norm: ``weighted`` (PyG ``gcn_norm``) | ``count`` (original: edge counts).
        block_size: query rows per sigmoid block (None: auto, about 2²⁴ weights per block).

    Shapes:
        ``x``: ``[..., N, in_channels]``, or a pair ``(x_source [..., L, C], x_target [..., N, C])`` for
        cross-attention (queries from targets, keys/values from sources; no graph branch);
        ``edge_index``: ``[2, E]`` over the N nodes (shared by all leading dims), or a prebuilt
        :class:`~difformer.graph.NormalizedAdjacency` of N or (batch·N) nodes (block-diagonal per sample);
        ``edge_weight``: ``[E]``; ``source``: like the output. Output: ``[..., N, out_channels]``.
    """

    def __init__(self, in_channels: int, out_channels: int, num_heads: int = 1, kernel: Kernel = "simple",
                 use_graph: bool = True, use_weight: bool = True, graph_weight: float = -1.0,
                 use_source: bool = False, qk_norm: QKNorm = "global", degree_norm: DegreeNorm = "weighted",
                 block_size: int | None = None):
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
        if not use_weight and in_channels != out_channels:
            raise ValueError(f"use_weight=False takes V = h, so in_channels ({in_channels}) must equal "
                             f"out_channels ({out_channels})")
        if num_heads < 1:
            raise ValueError(f"num_heads must be positive, got {num_heads}")
        if block_size is not None and block_size < 1:
            raise ValueError(f"block_size must be positive or None, got {block_size}")
        if qk_norm not in ("global", "row"):
            raise ValueError(f"qk_norm must be 'global' or 'row', got {qk_norm!r}")
        if degree_norm not in ("weighted", "count"):
            raise ValueError(f"degree_norm must be 'weighted' or 'count', got {degree_norm!r}")
        graph_mix(graph_weight)
        self.in_channels, self.out_channels, self.num_heads = in_channels, out_channels, num_heads
        self.kernel, self.use_graph, self.use_weight = kernel, use_graph, use_weight
        self.graph_weight, self.use_source = float(graph_weight), use_source
        self.qk_norm, self.degree_norm, self.block_size = qk_norm, degree_norm, block_size
        self.Wq = nn.Linear(in_channels, out_channels * num_heads)
        self.Wk = nn.Linear(in_channels, out_channels * num_heads)
        self.Wv = nn.Linear(in_channels, out_channels * num_heads) if use_weight else None
        self._adjacency = AdjacencyCache()

    @property
    def graph_mix(self) -> str:
        return graph_mix(self.graph_weight)

    def reset_parameters(self) -> None:
        """PyTorch defaults: Kaiming-uniform (a = √5) weights, uniform biases."""
        for layer in (self.Wq, self.Wk, self.Wv):
            if layer is not None:
                layer.reset_parameters()

    def extra_repr(self) -> str:
        parts = [f"{self.in_channels}, {self.out_channels}, heads={self.num_heads}, kernel={self.kernel}"]
        if self.kernel == "simple" and self.qk_norm != "global":
            parts.append(f"qk_norm={self.qk_norm}")
        if self.kernel == "sigmoid":
            parts.append(f"block_size={self.block_size or 'auto'}")
        if self.use_graph:
            mix = "sum" if self.graph_mix == "sum" else f"convex {self.graph_weight:g}"
            parts.append(f"graph={mix}, degree={self.degree_norm}")
        parts.append(f"use_weight={self.use_weight}")
        if self.use_source:
            parts.append("use_source=True")
        return ", ".join(parts)

    def project(self, x: torch.Tensor | tuple[torch.Tensor, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q ``[..., N, H, d]`` from the targets, K and V ``[..., L, H, d]`` from the sources."""
        source, target = x if isinstance(x, tuple) else (x, x)
        heads, width = self.num_heads, self.out_channels
        q = self.Wq(target).unflatten(-1, (heads, width))
        k = self.Wk(source).unflatten(-1, (heads, width))
        if self.Wv is not None:
            v = self.Wv(source).unflatten(-1, (heads, width))
        else:  # identity values, replicated over heads (a view)
            v = source.unsqueeze(-2).expand(*source.shape[:-1], heads, width)
        return q, k, v

    def adjacency(self, edge_index: Graph, num_nodes: int, edge_weight: torch.Tensor | None = None
                  ) -> NormalizedAdjacency:
        """Â for ``edge_index`` (cached while the same edge tensor is passed again)."""
        if isinstance(edge_index, NormalizedAdjacency):
            return edge_index
        return self._adjacency.get(edge_index, num_nodes, edge_weight, self.degree_norm)

    def propagate_graph(self, v: torch.Tensor, adj: NormalizedAdjacency) -> torch.Tensor:
        """G = Â V per head and per leading index; ``v [..., N, H, d]``."""
        num_nodes = v.shape[-3]
        lead = v.shape[:-3]
        if adj.num_nodes == num_nodes:  # one graph shared by every leading index: one product
            flat = v.movedim(-3, 0).reshape(num_nodes, -1)
            return (adj @ flat).reshape(num_nodes, *lead, *v.shape[-2:]).movedim(0, -3)
        batch = int(torch.Size(lead).numel())
        if adj.num_nodes == batch * num_nodes:  # block-diagonal graph, one block per leading index
            return (adj @ v.reshape(batch * num_nodes, -1)).reshape(v.shape)
        raise ValueError(f"the graph has {adj.num_nodes} nodes but x has {num_nodes} nodes per sample "
                         f"({batch} samples)")

    def forward(self, x: torch.Tensor | tuple[torch.Tensor, torch.Tensor], edge_index: Graph | None = None,
                edge_weight: torch.Tensor | None = None, source: torch.Tensor | None = None,
                return_attention: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Output ``[..., N, out_channels]``; with ``return_attention`` also the dense weights ``[..., N, L, H]``."""
        q, k, v = self.project(x)
        out = attention(q, k, v, self.kernel, qk_norm=self.qk_norm, block_size=self.block_size)
        if self.use_graph:
            if isinstance(x, tuple):
                raise ValueError("the graph branch needs self-attention (one x), not a (source, target) pair")
            if edge_index is None:
                raise ValueError("use_graph=True needs edge_index (or turn the graph branch off)")
            graph = self.propagate_graph(v, self.adjacency(edge_index, v.shape[-3], edge_weight))
            out = out + graph if self.graph_mix == "sum" else torch.lerp(out, graph, self.graph_weight)
        out = out.mean(dim=-2)
        if self.use_source:
            if source is None:
                raise ValueError("use_source=True needs the source state h⁰ (source=...)")
            out = out + source
        if return_attention:
            return out, attention_weights(q, k, self.kernel, qk_norm=self.qk_norm)
        return out


@register_model(EXPORT_NAME)
class DIFFormer(nn.Module):
    """DIFFormer network (spec §2.1): input MLP, L diffusion layers with residual step α, linear output.

    h⁰ = Dropout(ReLU(LN₀(W_in x))); for l = 1…L: c = Conv_l(h^{l−1}, graph, h⁰),
    h^l = α·c + (1 − α)·h^{l−1} (``use_residual``; else c), then LN_l (``use_bn`` — LayerNorm, never
    BatchNorm) and dropout; logits = W_out h^L. No activation inside the stack. The L + 1 LayerNorms exist even
    without ``use_bn`` (the official state dict has them). Cora-s (1433 → 64 × 8 layers → 7, no W_V):
    159,943 parameters.

    Shapes: ``x [..., N, in_channels]`` (or a sparse ``[N, in_channels]``), ``edge_index [2, E]`` (or a
    :class:`~difformer.graph.NormalizedAdjacency`), ``edge_weight [E]`` → logits ``[..., N, out_channels]``.
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, num_layers: int = 2,
                 num_heads: int = 1, kernel: Kernel = "simple", alpha: float = 0.5, dropout: float = 0.5,
                 use_bn: bool = True, use_residual: bool = True, use_weight: bool = True, use_graph: bool = True,
                 graph_weight: float = -1.0, use_source: bool = False, qk_norm: QKNorm = "global",
                 degree_norm: DegreeNorm = "weighted", block_size: int | None = None):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be positive, got {num_layers}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels, self.hidden_channels, self.out_channels = in_channels, hidden_channels, out_channels
        self.num_layers, self.alpha, self.dropout = num_layers, float(alpha), float(dropout)
        self.use_bn, self.use_residual = use_bn, use_residual
        self.fcs = nn.ModuleList([nn.Linear(in_channels, hidden_channels), nn.Linear(hidden_channels, out_channels)])
        self.bns = nn.ModuleList(nn.LayerNorm(hidden_channels) for _ in range(num_layers + 1))
        self.convs = nn.ModuleList(
            DIFFormerConv(hidden_channels, hidden_channels, num_heads=num_heads, kernel=kernel, use_graph=use_graph,
                          use_weight=use_weight, graph_weight=graph_weight, use_source=use_source, qk_norm=qk_norm,
                          degree_norm=degree_norm, block_size=block_size)
            for _ in range(num_layers)
        )
        self._adjacency = AdjacencyCache()
        self.reset_parameters()

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-able): ``DIFFormer(**model.config)`` rebuilds the architecture."""
        conv = self.convs[0]
        return {"in_channels": self.in_channels, "hidden_channels": self.hidden_channels,
                "out_channels": self.out_channels, "num_layers": self.num_layers, "num_heads": conv.num_heads,
                "kernel": conv.kernel, "alpha": self.alpha, "dropout": self.dropout, "use_bn": self.use_bn,
                "use_residual": self.use_residual, "use_weight": conv.use_weight, "use_graph": conv.use_graph,
                "graph_weight": conv.graph_weight, "use_source": conv.use_source, "qk_norm": conv.qk_norm,
                "degree_norm": conv.degree_norm, "block_size": conv.block_size}

    @property
    def use_graph(self) -> bool:
        return self.convs[0].use_graph

    def reset_parameters(self) -> None:
        """PyTorch defaults everywhere (Linear: Kaiming-uniform a = √5; LayerNorm: γ = 1, β = 0)."""
        for module in (*self.fcs, *self.bns, *self.convs):
            module.reset_parameters()

    def extra_repr(self) -> str:
        return (f"layers={self.num_layers}, alpha={self.alpha:g}, dropout={self.dropout:g}, "
                f"layer_norm={self.use_bn}, residual={self.use_residual}")

    def _graph(self, x: torch.Tensor, edge_index: Graph | None, edge_weight: torch.Tensor | None
               ) -> NormalizedAdjacency | None:
        if not self.use_graph:
            return None
        if edge_index is None:
            raise ValueError("this DIFFormer has use_graph=True and needs edge_index")
        if isinstance(edge_index, NormalizedAdjacency):
            return edge_index
        return self._adjacency.get(edge_index, x.shape[-2], edge_weight, self.convs[0].degree_norm)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.fcs[0]
        # a sparse x [N, D_in] (bag-of-words features) is multiplied as it is, never densified
        h = layer(x) if x.layout == torch.strided else torch.addmm(layer.bias, x, layer.weight.t())
        if self.use_bn:
            h = self.bns[0](h)
        return F.dropout(F.relu(h), p=self.dropout, training=self.training)

    def _step(self, index: int, conv_out: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        h = self.alpha * conv_out + (1 - self.alpha) * previous if self.use_residual else conv_out
        if self.use_bn:
            h = self.bns[index + 1](h)
        return F.dropout(h, p=self.dropout, training=self.training)

    def forward(self, x: torch.Tensor, edge_index: Graph | None = None,
                edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        adj = self._graph(x, edge_index, edge_weight)
        h = source = self._input(x)
        for index, conv in enumerate(self.convs):
            h = self._step(index, conv(h, adj, source=source), h)
        return self.fcs[1](h)

    @torch.no_grad()
    def get_attentions(self, x: torch.Tensor, edge_index: Graph | None = None, edge_weight: torch.Tensor | None = None,
                       include_graph: bool = False) -> torch.Tensor:
        """Every layer's diffusivity S, stacked ``[L, ..., N, N, H]``, in eval mode (no dropout).

        The states follow the real forward pass (graph branch and source included), and the weights are the
        true ones: rows sum to 1 for both kernels (spec §2.4, quirk 18). With ``include_graph`` each matrix is
        the whole propagation operator P of the layer — attention plus the graph term (Â, or the convex mix)
        — so that a layer's output before the head mean is P V.
        """
        was_training = self.training
        self.eval()
        try:
            adj = self._graph(x, edge_index, edge_weight)
            h = source = self._input(x)
            maps = []
            for index, conv in enumerate(self.convs):
                out, weights = conv(h, adj, source=source, return_attention=True)
                if include_graph and adj is not None:
                    dense = adj.to_dense()
                    if dense.shape[0] != h.shape[-2]:
                        raise ValueError("include_graph needs a graph shared by all samples")
                    graph = dense.unsqueeze(-1).to(weights.dtype)
                    weights = weights + graph if conv.graph_mix == "sum" else torch.lerp(weights, graph,
                                                                                         conv.graph_weight)
                maps.append(weights)
                h = self._step(index, out, h)
            return torch.stack(maps)
        finally:
            self.train(was_training)
