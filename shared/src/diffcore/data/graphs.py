"""Graphs: PyG Planetoid (public split) and the gnn-benchmark ``.npz`` format (Shchur et al., 2018).

Loaders look in the library's own layout (PyG ``<Name>/raw``) and in the offline layout of ``../shared/data``
(``planetoid/<Name>/raw``, ``gnn_benchmark_npz/<name>.npz``); a download, when a network exists, lands in the
library's standard subfolder of the root. :func:`sparse_to_torch` turns a scipy adjacency into a torch CSR tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from diffcore.data.paths import cache_dir, data_root, download_file, first_existing, not_found, require_extra
from diffcore.errors import DataError

PLANETOID_NAMES = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
PLANETOID_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


def load_planetoid(name: str, root: str | Path | None = None, download: bool = True):
    """PyG ``Planetoid`` (public split) as a ``torch_geometric.data.Data``.

    Raw files are read from ``<root>/<Name>/raw`` (PyG layout) or ``<root>/planetoid/<Name>/raw``
    (offline layout); ``processed/`` is written to the cache, never to the root.
    """
    require_extra("torch_geometric", "pyg")
    from torch_geometric.datasets import Planetoid

    key = name.lower()
    if key not in PLANETOID_NAMES:
        raise DataError(f"unknown Planetoid dataset {name!r}; choose one of {', '.join(PLANETOID_NAMES)}")
    pyg_name = PLANETOID_NAMES[key]
    root = data_root(root)
    files = [f"ind.{key}.{s}" for s in PLANETOID_SUFFIXES]
    candidates = [root / pyg_name / "raw", root / "planetoid" / pyg_name / "raw"]
    raw = first_existing(candidates, files)
    if raw is None and not download:
        raise not_found(f"Planetoid {pyg_name} raw files ({', '.join(files)})", root, candidates)
    raw = raw or candidates[0]
    processed = cache_dir("planetoid", pyg_name)

    class _Planetoid(Planetoid):  # PyG puts raw/ and processed/ side by side; split them
        @property
        def raw_dir(self) -> str:
            return str(raw)

        @property
        def processed_dir(self) -> str:
            return str(processed)

    try:
        return _Planetoid(str(root), pyg_name)[0]
    except OSError as err:  # URLError is an OSError: offline and the raw files are absent
        raise not_found(
            f"Planetoid {pyg_name} raw files ({', '.join(files)}); download failed: {err}", root, candidates,
        ) from None


@dataclass
class SparseGraph:
    """A graph in the gnn-benchmark npz format (Shchur et al., 2018): CSR adjacency and attributes."""

    adj: sp.csr_matrix
    attr: sp.csr_matrix
    labels: np.ndarray
    node_names: np.ndarray | None = None
    class_names: np.ndarray | None = None
    node_index: np.ndarray = field(default=None)  # position of each node in the file (after LCC selection)

    def __post_init__(self) -> None:
        if self.node_index is None:
            self.node_index = np.arange(self.adj.shape[0])

    @property
    def num_nodes(self) -> int:
        return self.adj.shape[0]

    @property
    def num_edges(self) -> int:
        """Undirected edge count for a symmetric loop-free adjacency."""
        return int(sp.triu(self.adj, k=1).nnz)

    def standardize(self) -> SparseGraph:
        """gnn-benchmark's ``standardize``: unweighted, undirected, loop-free, largest connected component."""
        adj = self.adj.tocsr().astype(np.float32)
        adj.data[:] = 1.0
        adj = adj + adj.T
        adj.data[:] = 1.0
        adj.setdiag(0)
        adj.eliminate_zeros()
        keep = largest_connected_component(adj)
        return SparseGraph(
            adj=adj[keep][:, keep].tocsr(),
            attr=self.attr.tocsr()[keep],
            labels=self.labels[keep],
            node_names=None if self.node_names is None else self.node_names[keep],
            class_names=self.class_names,
            node_index=self.node_index[keep],
        )


def largest_connected_component(adj: sp.spmatrix) -> np.ndarray:
    """Sorted node ids of the largest (weakly) connected component."""
    _, component = sp.csgraph.connected_components(adj, directed=False)
    sizes = np.bincount(component)
    return np.flatnonzero(component == np.argmax(sizes))


GNN_BENCHMARK_URL = "https://github.com/shchur/gnn-benchmark/raw/master/data/npz/{name}.npz"


def load_npz_graph(name: str, root: str | Path | None = None, download: bool = True) -> SparseGraph:
    """A gnn-benchmark ``<name>.npz`` (``cora``, ``citeseer``, ``pubmed``, ``cora_full``, …).

    Looked up in ``<root>/gnn_benchmark_npz/``, ``<root>/npz/`` and ``<root>/``; downloaded into
    ``<root>/gnn_benchmark_npz/`` if absent and ``download`` is true.
    """
    root = data_root(root)
    filename = f"{name.lower()}.npz"
    candidates = [root / "gnn_benchmark_npz", root / "npz", root]
    folder = first_existing(candidates, [filename])
    if folder is None:
        if not download:
            raise not_found(f"gnn-benchmark {filename}", root, [c / filename for c in candidates])
        folder = candidates[0]
        try:
            download_file(GNN_BENCHMARK_URL.format(name=name.lower()), folder / filename)
        except OSError as err:
            raise not_found(
                f"gnn-benchmark {filename} (download failed: {err})", root, [c / filename for c in candidates],
                hint=" (the file is in shchur/gnn-benchmark data/npz/)",
            ) from None
    return read_npz_graph(folder / filename)


def read_npz_graph(path: str | Path) -> SparseGraph:
    """Parse one gnn-benchmark npz file; a file lacking the format's keys is a :class:`DataError`."""
    try:
        with np.load(path, allow_pickle=True) as f:
            data = dict(f)
    except (OSError, ValueError) as err:
        raise DataError(f"{path} is not a readable npz file ({err})") from None
    need = ["adj_data", "adj_indices", "adj_indptr", "adj_shape", "labels"]
    lacking = [k for k in need if k not in data]
    if lacking:
        raise DataError(f"{path} is not a gnn-benchmark npz: missing keys {', '.join(lacking)}")
    adj = sp.csr_matrix((data["adj_data"], data["adj_indices"], data["adj_indptr"]), shape=data["adj_shape"])
    if "attr_data" in data:
        attr = sp.csr_matrix(
            (data["attr_data"], data["attr_indices"], data["attr_indptr"]), shape=data["attr_shape"]
        )
    elif "attr_matrix" in data:
        attr = sp.csr_matrix(data["attr_matrix"])
    else:
        raise DataError(f"{path} has no node attributes (attr_* or attr_matrix keys)")
    return SparseGraph(
        adj=adj, attr=attr, labels=np.asarray(data["labels"]),
        node_names=data.get("node_names"), class_names=data.get("class_names"),
    )


def sparse_to_torch(matrix: sp.spmatrix, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """scipy sparse → ``torch.sparse_csr_tensor`` (CSR: the fast layout for sparse @ dense on CPU and GPU)."""
    import warnings

    csr = matrix.tocsr()
    csr.sort_indices()
    with warnings.catch_warnings():  # torch's "CSR support is in beta" notice, on every construction
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(csr.indptr.astype(np.int64)), torch.from_numpy(csr.indices.astype(np.int64)),
            torch.from_numpy(csr.data).to(dtype), size=csr.shape, check_invariants=False,
        )

