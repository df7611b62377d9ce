"""The local (GCN) branch of DIFFormer and the graph preprocessing of the released scripts.

Â_ij = w_ij / √(deg_i · deg_j) for an edge j → i of weight w (1 when unweighted), messages summed at the
target. ``degree="weighted"`` (default) is PyG's ``gcn_norm``: deg_i = Σ of the weights of i's incoming edges.
``degree="count"`` reproduces the original (spec quirk 6): deg_i = number of incoming edges, weights ignored —
identical for unweighted graphs, different for the weighted covid/wikimath graphs. NaN/inf entries become 0.

Â is built once per graph as a CSR matrix together with its transpose, so ``Â @ X`` and its backward
(``Âᵀ @ G``) are each one sparse × dense product: no per-edge messages are materialised.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Literal

import torch

DegreeNorm = Literal["weighted", "count"]


def _csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, size: int) -> torch.Tensor:
    """Sparse CSR ``[size, size]``; duplicate entries are summed."""
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (size, size), check_invariants=False).coalesce()
    with warnings.catch_warnings():  # torch's "sparse CSR support is in beta" notice
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.to_sparse_csr()


class _SparseMatmul(torch.autograd.Function):
    """``A @ X`` for a constant sparse A whose transpose is precomputed (backward = ``Aᵀ @ G``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, matrix: torch.Tensor, transposed: torch.Tensor) -> torch.Tensor:
        ctx.transposed = transposed
        return matrix @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return ctx.transposed @ grad, None, None


class NormalizedAdjacency:
    """Â (and Âᵀ) of one graph as CSR matrices; ``adj @ x`` propagates ``x [num_nodes, F]``.

    Build with :func:`normalized_adjacency`. ``edge_index`` row 0 holds sources j, row 1 targets i (PyG's
    ``source_to_target`` flow), so ``(adj @ x)_i = Σ_{j→i} Â_ij x_j``. The matrix is a constant: no gradient
    flows to edge weights.
    """

    def __init__(self, matrix: torch.Tensor, transposed: torch.Tensor):
        self.matrix, self.transposed = matrix, transposed
        self._by_dtype = {matrix.dtype: (matrix, transposed)}

    @property
    def num_nodes(self) -> int:
        return self.matrix.shape[0]

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        if dtype in (torch.float16, torch.bfloat16):  # propagate in float32: sparse half kernels are patchy
            x = x.float()
        if x.dtype not in self._by_dtype:
            self._by_dtype[x.dtype] = (self.matrix.to(x.dtype), self.transposed.to(x.dtype))
        matrix, transposed = self._by_dtype[x.dtype]
        if x.requires_grad and torch.is_grad_enabled():
            return _SparseMatmul.apply(x, matrix, transposed).to(dtype)
        return (matrix @ x).to(dtype)

    def to(self, device: torch.device | str) -> NormalizedAdjacency:
        return NormalizedAdjacency(self.matrix.to(device), self.transposed.to(device))

    def to_dense(self) -> torch.Tensor:
        return self.matrix.to_dense()


def edge_weights_normalized(edge_index: torch.Tensor, num_nodes: int, edge_weight: torch.Tensor | None = None,
                            degree: DegreeNorm = "weighted") -> torch.Tensor:
    """Â's value for every edge of ``edge_index`` (same order), ``[E]``."""
    dtype = torch.get_default_dtype() if edge_weight is None else edge_weight.dtype
    if degree == "weighted":
        from torch_geometric.nn.conv.gcn_conv import gcn_norm

        _, values = gcn_norm(edge_index, edge_weight, num_nodes, improved=False, add_self_loops=False,
                             flow="source_to_target", dtype=dtype)
    elif degree == "count":
        source, target = edge_index
        deg = torch.bincount(target, minlength=num_nodes).to(dtype)
        ones = torch.ones(source.numel(), dtype=dtype, device=edge_index.device)
        weight = ones if edge_weight is None else edge_weight
        values = weight * deg[target].rsqrt() * deg[source].rsqrt()
    else:
        raise ValueError(f"degree must be 'weighted' or 'count', got {degree!r}")
    return torch.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)


def normalized_adjacency(edge_index: torch.Tensor, num_nodes: int, edge_weight: torch.Tensor | None = None,
                         degree: DegreeNorm = "weighted") -> NormalizedAdjacency:
    """Â of the graph ``edge_index [2, E]`` (sources, targets) on ``num_nodes`` nodes; see the module docstring.

    Self-loops are not added here: the released scripts put exactly one per node into the edge list first
    (:func:`prepare_edges`).
    """
    check_edge_index(edge_index, num_nodes)
    if edge_weight is not None and edge_weight.shape != (edge_index.shape[1],):
        raise ValueError(f"edge_weight must have shape [{edge_index.shape[1]}], got {list(edge_weight.shape)}")
    values = edge_weights_normalized(edge_index, num_nodes, edge_weight, degree).detach()
    source, target = edge_index
    return NormalizedAdjacency(_csr(target, source, values, num_nodes), _csr(source, target, values, num_nodes))


def check_edge_index(edge_index: torch.Tensor, num_nodes: int) -> None:
    """Raise ValueError unless ``edge_index`` is an integer ``[2, E]`` tensor with ids in ``[0, num_nodes)``."""
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {list(edge_index.shape)}")
    if edge_index.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"edge_index must hold integers, got {edge_index.dtype}")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
        raise ValueError(
            f"edge_index holds node ids in [{int(edge_index.min())}, {int(edge_index.max())}] but the graph has "
            f"{num_nodes} nodes (valid ids 0..{num_nodes - 1})"
        )


class AdjacencyCache:
    """Keeps Â of the last graph seen, so a fixed graph is normalised once (spec quirk 13), not every forward.

    The key holds weak references to ``edge_index``/``edge_weight`` plus their in-place version counters, so
    a new or modified edge list is never served a stale Â.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value: NormalizedAdjacency | None = None

    @staticmethod
    def _ref(t: torch.Tensor | None):
        return (None, None) if t is None else (weakref.ref(t), t._version)

    def get(self, edge_index: torch.Tensor, num_nodes: int, edge_weight: torch.Tensor | None,
            degree: DegreeNorm) -> NormalizedAdjacency:
        if edge_weight is not None and edge_weight.requires_grad:
            raise ValueError("edge_weight requires grad, but the normalised adjacency is a constant; detach it")
        key = (self._ref(edge_index), self._ref(edge_weight), num_nodes, degree)
        if self._key is not None and self._value is not None and self._same(key):
            return self._value
        self._value = normalized_adjacency(edge_index, num_nodes, edge_weight, degree)
        self._key = key
        return self._value

    def _same(self, key: tuple) -> bool:
        (ei_ref, ei_ver), (w_ref, w_ver), n, degree = key
        (old_ei, old_ei_ver), (old_w, old_w_ver), old_n, old_degree = self._key
        same_weight = (w_ref is None and old_w is None) or (
            w_ref is not None and old_w is not None and w_ref() is old_w() and w_ver == old_w_ver)
        return (ei_ref() is old_ei() and ei_ref() is not None and ei_ver == old_ei_ver and same_weight
                and n == old_n and degree == old_degree)

    def clear(self) -> None:
        self._key = self._value = None


def prepare_edges(edge_index: torch.Tensor, num_nodes: int, symmetrize: bool = True,
                  edge_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The released preprocessing (spec §3.1): optionally symmetrise, drop self-loops, add one per node.

    Added self-loops get weight 1.
    """
    from torch_geometric.utils import add_self_loops, remove_self_loops, to_undirected

    if symmetrize:
        if edge_weight is None:
            edge_index = to_undirected(edge_index, num_nodes=num_nodes)
        else:
            edge_index, edge_weight = to_undirected(edge_index, edge_weight, num_nodes=num_nodes)
    edge_index, edge_weight = remove_self_loops(edge_index, edge_weight)
    edge_index, edge_weight = add_self_loops(edge_index, edge_weight, fill_value=1.0, num_nodes=num_nodes)
    return edge_index, edge_weight


def knn_edges(x: torch.Tensor, k: int) -> torch.Tensor:
    """scikit-learn ``kneighbors_graph(x, k, include_self=True)`` (Euclidean, binary) as ``edge_index``.

    Row 0 holds each instance, row 1 its neighbours — the original's ``adj.nonzero()`` order (spec §3.5).
    """
    from sklearn.neighbors import kneighbors_graph

    adj = kneighbors_graph(x.detach().cpu().numpy(), n_neighbors=k, include_self=True).tocoo()
    return torch.stack([torch.from_numpy(adj.row).long(), torch.from_numpy(adj.col).long()])
