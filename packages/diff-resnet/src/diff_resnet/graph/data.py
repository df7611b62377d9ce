"""The graph task's data pipeline (§4.2): standardised gnn-benchmark graphs and their tensors.

Paper: T. Wang, Z. Dou, C. Bao, Z. Shi, "Diffusion Mechanism in Residual Neural Network: Theory and
Applications", IEEE TPAMI 46(2):667–680, 2024 (``graph/data_process`` of the official code).

1. load the gnn-benchmark npz (or PyG's Planetoid files) → unweighted, symmetric, loop-free, largest
   connected component (:meth:`diffcore.data.SparseGraph.standardize`);
2. features: binarise, then divide each row by its sum;
3. ``Â = D̃^{-1/2}(A + I)D̃^{-1/2}`` and the Laplacian ``L = diag(rowsum Â) − Â`` (or ``I − Â``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from diffcore.data import SparseGraph, load_npz_graph, load_planetoid, sparse_to_torch
from diffcore.errors import ConfigError

from diff_resnet.diffusion import gcn_normalized_adjacency, graph_laplacian


def load_graph(dataset: str, fmt: str = "npz", data_root: str | Path | None = None) -> SparseGraph:
    """The standardised graph: unweighted, symmetric, loop-free, largest connected component only.

    ``fmt="npz"`` reads the gnn-benchmark ``<dataset>.npz`` (the original's data); ``fmt="planetoid"``
    reads PyG's Planetoid files and puts them through the same pipeline (its node order differs, so
    the same seed gives different splits). Missing files raise :class:`~diffcore.errors.DataError`.
    """
    if fmt == "npz":
        graph = load_npz_graph(dataset, data_root)
    elif fmt == "planetoid":
        graph = planetoid_graph(load_planetoid(dataset, data_root))
    else:
        raise ConfigError(f"format must be 'npz' or 'planetoid', got {fmt!r}")
    return graph.standardize()


def planetoid_graph(data: Any) -> SparseGraph:
    """A PyG ``Data`` (``edge_index``, ``x``, ``y``) as a gnn-benchmark :class:`SparseGraph`."""
    n = int(data.num_nodes)
    row, col = data.edge_index.cpu().numpy()
    adj = sp.csr_matrix((np.ones(len(row), dtype=np.float32), (row, col)), shape=(n, n))
    return SparseGraph(adj=adj, attr=sp.csr_matrix(data.x.cpu().numpy()), labels=data.y.cpu().numpy())


def preprocess_features(attr: sp.spmatrix) -> sp.csr_matrix:
    """Binarise (every non-zero becomes 1), then divide each row by its sum; an all-zero row stays zero.

    Shapes: ``attr`` ``[N, F]`` → CSR ``[N, F]`` float32.
    """
    binary = sp.csr_matrix(attr, dtype=np.float32, copy=True)
    binary.eliminate_zeros()
    binary.data[:] = 1.0
    counts = np.asarray(binary.sum(axis=1)).ravel()
    inverse = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
    return sp.csr_matrix(sp.diags(inverse.astype(np.float32)) @ binary)


@dataclass
class GraphData:
    """One preprocessed graph as tensors: sparse features, the Laplacian L and the labels.

    Shapes: ``features`` sparse CSR ``[N, F]``; ``laplacian`` sparse CSR ``[N, N]``; ``labels`` ``[N]``.
    """

    features: torch.Tensor
    laplacian: torch.Tensor
    labels: torch.Tensor
    num_edges: int

    @property
    def num_nodes(self) -> int:
        return self.labels.shape[0]

    @property
    def num_features(self) -> int:
        return self.features.shape[1]

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1

    def to(self, device: torch.device) -> GraphData:
        return GraphData(self.features.to(device), self.laplacian.to(device), self.labels.to(device),
                         self.num_edges)


def prepare_graph(graph: SparseGraph, kind: str = "renormalized") -> GraphData:
    """Features (binary, row-normalised), ``Â = D̃^{-1/2}(A + I)D̃^{-1/2}`` and the Laplacian
    ``diag(rowsum Â) − Â`` (``kind="renormalized"``, the released method) or ``I − Â`` (``"identity"``)."""
    adj_hat = gcn_normalized_adjacency(graph.adj)
    return GraphData(
        features=sparse_to_torch(preprocess_features(graph.attr)),
        laplacian=graph_laplacian(adj_hat, kind=kind),
        labels=torch.as_tensor(np.asarray(graph.labels), dtype=torch.long),
        num_edges=graph.num_edges,
    )
