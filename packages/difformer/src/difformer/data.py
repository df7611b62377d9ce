"""Datasets of the three DIFFormer tasks, on the loaders of :mod:`diffcore.data` and :mod:`difformer.datasets`.

Node classification returns a :class:`NodeDataset` (PyG ``Data`` with the released preprocessing applied),
instance classification a :class:`InstanceDataset`, spatial-temporal a :class:`~difformer.datasets.TemporalSignal`.
ogbn-proteins is read with the ``ogb`` package (``pip install difformer[ogb]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffcore.data import cache_dir, data_root, load_planetoid
from diffcore.errors import DataError

from difformer.datasets import (
    HETEROPHILOUS_FILTERED,
    load_20newsgroups_tfidf,
    load_features_file,
    load_film,
    load_graph_file,
    load_heterophilous_filtered,
    load_pokec,
)
from difformer.graph import prepare_edges


@dataclass
class NodeDataset:
    """One graph: ``data`` (x, edge_index with one self-loop per node, y, optional ``[N, R]`` masks).

    ``y`` is ``[N]`` class ids (−1 = unlabelled) or ``[N, T]`` binary targets (multi-task, ROC-AUC).
    """

    name: str
    data: object  # torch_geometric.data.Data
    num_classes: int
    raw_edges: int

    @property
    def num_nodes(self) -> int:
        return self.data.num_nodes

    @property
    def multilabel(self) -> bool:
        return self.data.y.dim() == 2

    @property
    def has_masks(self) -> bool:
        return "train_mask" in self.data


def is_file_dataset(name: str) -> bool:
    return Path(name).suffix in (".npz", ".pt", ".pth")


def load_node_dataset(name: str, root: str | Path | None = None, directed: bool = False) -> NodeDataset:
    """``cora``/``citeseer``/``pubmed`` (Planetoid, row-normalised features), ``ogbn-proteins``, ``pokec``, ``film``,
    ``chameleon``/``squirrel`` (filtered) or a graph FILE (``.npz``/``.pt``, see :func:`~.datasets.load_graph_file`).

    Preprocessing (spec §3.1): symmetrise unless ``directed`` (ogbn-proteins is always kept as given), remove
    self-loops, add one per node.
    """
    if name in ("cora", "citeseer", "pubmed"):
        from torch_geometric.transforms import NormalizeFeatures

        data = NormalizeFeatures()(load_planetoid(name, root))
        for key in ("train_mask", "val_mask", "test_mask"):  # the public split is not DIFFormer's protocol
            del data[key]
    elif name == "ogbn-proteins":
        data = load_ogbn_proteins(root)
        directed = True
    elif name == "pokec":
        data = load_pokec(root)
    elif name == "film":
        data = load_film(root)
    elif name in HETEROPHILOUS_FILTERED:
        data = load_heterophilous_filtered(name, root)
    elif is_file_dataset(name):
        data = load_graph_file(name)
    else:
        raise DataError(f"unknown dataset {name!r}: choose cora, citeseer, pubmed, ogbn-proteins, pokec, film, "
                        "chameleon, squirrel, or give a graph file (.npz/.pt with x, edge_index, y)")
    raw_edges = data.edge_index.shape[1]
    data.edge_index, data.edge_weight = prepare_edges(data.edge_index, data.num_nodes, symmetrize=not directed,
                                                      edge_weight=data.get("edge_weight"))
    if data.edge_weight is None:
        del data.edge_weight
    y = data.y
    num_classes = y.shape[1] if y.dim() == 2 else int(y.max()) + 1
    if num_classes < 2:
        raise DataError(f"{name}: y holds {num_classes} class; node classification needs at least 2")
    return NodeDataset(name, data, num_classes, raw_edges)


OGB_PROTEINS_RAW = ("edge.csv.gz", "edge-feat.csv.gz", "node-label.csv.gz", "num-node-list.csv.gz",
                    "num-edge-list.csv.gz")
OGB_PROTEINS_SPLIT = ("train.csv.gz", "valid.csv.gz", "test.csv.gz")


def load_ogbn_proteins(root: str | Path | None = None):
    """ogbn-proteins through ``ogb``'s raw-file reader: 132,534 nodes, 39,561,252 directed edges, 112 tasks.

    Files (OGB layout): ``<root>/ogbn_proteins/raw/{edge,edge-feat,node-label,num-node-list,num-edge-list}.csv.gz``
    and ``<root>/ogbn_proteins/split/species/{train,valid,test}.csv.gz`` (also under ``<root>/ogb/``). Node features
    are the mean of the 8-d features of each node's incoming edges, as the original. The processed arrays are
    cached in :func:`diffcore.data.cache_dir`, keyed by the raw files' path, sizes and times.
    """
    from torch_geometric.data import Data

    root = data_root(root)
    folders = [root / "ogbn_proteins", root / "ogb" / "ogbn_proteins"]
    folder = next((f for f in folders if all((f / "raw" / n).exists() for n in OGB_PROTEINS_RAW)
                   and all((f / "split" / "species" / n).exists() for n in OGB_PROTEINS_SPLIT)), None)
    if folder is None:
        expected = ", ".join(f"raw/{n}" for n in OGB_PROTEINS_RAW) + ", " + ", ".join(
            f"split/species/{n}" for n in OGB_PROTEINS_SPLIT)
        raise DataError(f"ogbn-proteins not found under data root {root}: expected {expected} in "
                        f"{' or '.join(map(str, folders))}. Pass --data-root DIR (or set $DIFFNETS_DATA) to a folder "
                        "that has them (OGB's proteins.zip, http://snap.stanford.edu/ogb/data/nodeproppred/proteins.zip)")
    import hashlib

    stats = [(folder / "raw" / name).stat() for name in OGB_PROTEINS_RAW]
    stamp = [str(folder.resolve())] + [f"{st.st_size}:{st.st_mtime_ns}" for st in stats]
    cached = cache_dir("ogbn_proteins") / f"processed-{hashlib.sha1(' '.join(stamp).encode()).hexdigest()[:12]}.npz"
    if not cached.exists():
        try:
            from ogb.io.read_graph_raw import read_csv_graph_raw
        except ImportError:
            raise DataError("ogbn-proteins needs the ogb package: pip install 'difformer[ogb]'") from None
        graph = read_csv_graph_raw(str(folder / "raw"), add_inverse_edge=True)[0]
        edge_index = graph["edge_index"]
        n = int(graph["num_nodes"])
        feat_sum = np.zeros((n, graph["edge_feat"].shape[1]))
        np.add.at(feat_sum, edge_index[1], graph["edge_feat"])
        counts = np.bincount(edge_index[1], minlength=n)[:, None]
        x = (feat_sum / np.maximum(counts, 1)).astype(np.float32)
        y = np.loadtxt(folder / "raw" / "node-label.csv.gz", delimiter=",", dtype=np.int64, ndmin=2)
        masks = {}
        for key, split in (("train_mask", "train"), ("val_mask", "valid"), ("test_mask", "test")):
            mask = np.zeros((n, 1), dtype=bool)
            mask[np.loadtxt(folder / "split" / "species" / f"{split}.csv.gz", dtype=np.int64), 0] = True
            masks[key] = mask
        from diffcore.io import atomic_path

        with atomic_path(cached) as tmp, open(tmp, "wb") as f:
            np.savez(f, x=x, y=y, edge_index=edge_index, **masks)
    with np.load(cached) as f:
        arrays = {k: torch.from_numpy(f[k]) for k in f.files}
    return Data(**arrays)


# ------------------------------------------------------------------------------------------- instances


@dataclass
class InstanceDataset:
    """Independent instances: ``x [N, d]`` float, ``y [N]`` class ids."""

    name: str
    x: torch.Tensor
    y: torch.Tensor

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1


def load_instances(name: str, root: str | Path | None = None) -> InstanceDataset:
    """``digits`` (scikit-learn, embedded), ``20news`` (TF-IDF, 9,607 × 236), or a features FILE (``x``, ``y``).

    ``stl10``/``cifar10`` need the original SSL-ResNet-18 embeddings (``<root>/<name>/features.pkl``), which are
    pickles: convert them once to a features file (``np.savez(path, x=..., y=...)``, train ‖ test concatenated,
    CIFAR-10: the first 15,000 rows — quirk 15) and pass the file.
    """
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return InstanceDataset(name, torch.from_numpy(digits.data.astype(np.float32) / 16.0),
                               torch.from_numpy(digits.target.astype(np.int64)))
    if name == "20news":
        x, y, _ = load_20newsgroups_tfidf(root)
        return InstanceDataset(name, x, y)
    if name in ("stl10", "cifar10"):
        raise DataError(f"{name}: the original's SSL embeddings ({data_root(root) / name / 'features.pkl'}) are "
                        "pickles this package does not unpickle; save them as a features file "
                        "(np.savez(path, x=..., y=...)) and pass --dataset PATH.npz")
    if is_file_dataset(name):
        x, y = load_features_file(name)
        return InstanceDataset(Path(name).stem, x, y)
    raise DataError(f"unknown dataset {name!r}: choose digits, 20news, or a features file (.npz/.pt with x, y)")
