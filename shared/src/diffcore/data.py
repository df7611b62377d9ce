"""Datasets: one data root, offline copies laid out like ``../shared/data``, real downloads for users.

Data root: ``--data-root`` → ``$DIFFNETS_DATA`` → ``~/.cache/diffnets``. A root is read-only to us:
processed files (PyG ``processed/``) go to :func:`cache_dir` (``$DIFFNETS_CACHE`` → ``~/.cache/diffnets/processed``).
Each loader looks for the files in the standard library layout *and* in the offline layout
(``planetoid/<Name>/raw``, ``gnn_benchmark_npz/<name>.npz``, ``images/mnist``, ``images/cifar10``);
when nothing is found and ``download=True`` it downloads into the library's standard subfolder of the
root; when that fails (offline) it raises :class:`DataError` naming the files it expected and where.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from diffcore.errors import DataError

DEFAULT_ROOT = Path("~/.cache/diffnets")


def data_root(root: str | Path | None = None) -> Path:
    """``root`` if given, else ``$DIFFNETS_DATA``, else ``~/.cache/diffnets`` (user-expanded)."""
    chosen = root or os.environ.get("DIFFNETS_DATA") or DEFAULT_ROOT
    return Path(chosen).expanduser()


def cache_dir(*parts: str) -> Path:
    """Writable folder for processed data: ``$DIFFNETS_CACHE`` or ``~/.cache/diffnets/processed``."""
    base = Path(os.environ.get("DIFFNETS_CACHE") or DEFAULT_ROOT / "processed").expanduser()
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _missing(what: str, root: Path, candidates: Sequence[Path], hint: str = "") -> DataError:
    places = " or ".join(str(c) for c in candidates)
    return DataError(
        f"{what} not found under data root {root}: expected {places}. "
        f"Pass --data-root DIR (or set $DIFFNETS_DATA) to a folder that has them{hint}."
    )


def require_extra(module: str, extra: str) -> None:
    """Import ``module`` or raise a :class:`DataError` naming the ``diffcore[extra]`` that provides it."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise DataError(f"this dataset needs {module}, which is not installed: pip install 'diffcore[{extra}]'") \
            from None


def _first_existing(candidates: Sequence[Path], names: Sequence[str]) -> Path | None:
    for folder in candidates:
        if all((folder / n).exists() for n in names):
            return folder
    return None


# --------------------------------------------------------------------------------------------- graphs


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
    raw = _first_existing(candidates, files)
    if raw is None and not download:
        raise _missing(f"Planetoid {pyg_name} raw files ({', '.join(files)})", root, candidates)
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
        raise _missing(
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
    folder = _first_existing(candidates, [filename])
    if folder is None:
        if not download:
            raise _missing(f"gnn-benchmark {filename}", root, [c / filename for c in candidates])
        folder = candidates[0]
        try:
            _download(GNN_BENCHMARK_URL.format(name=name.lower()), folder / filename)
        except OSError as err:
            raise _missing(
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


def class_balanced_split(
    labels: np.ndarray, per_class: Sequence[int], rng: np.random.RandomState,
) -> list[np.ndarray]:
    """gnn-benchmark split: for each size in ``per_class`` draw that many nodes of every class.

    Classes are visited in index order, candidates in node order, with
    ``rng.choice(candidates, size, replace=False)``; each later set excludes the earlier ones. The
    remaining nodes form the last returned set (the test set). Returns ``len(per_class) + 1`` index
    arrays. The draw order is part of the protocol: it fixes which runs a seed defines.
    """
    labels = np.asarray(labels)
    taken = np.zeros(len(labels), dtype=bool)
    sets = []
    for size in per_class:
        chosen = []
        for c in range(int(labels.max()) + 1):
            candidates = np.flatnonzero((labels == c) & ~taken)
            if len(candidates) < size:
                raise DataError(f"class {c} has {len(candidates)} free nodes, fewer than the {size} requested")
            chosen.append(rng.choice(candidates, size, replace=False))
        picked = np.concatenate(chosen)
        taken[picked] = True
        sets.append(picked)
    sets.append(np.flatnonzero(~taken))
    return sets


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


# --------------------------------------------------------------------------------------------- images


@dataclass
class ImageArrays:
    """A whole image split in memory: ``images`` uint8 ``[N, H, W, C]``, ``labels`` int64 ``[N]``."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def select_classes(self, classes: Sequence[int]) -> ImageArrays:
        """Keep only the given classes, relabelled 0…len(classes)−1 in the given order."""
        keep = torch.isin(self.labels, torch.tensor(list(classes)))
        remap = torch.full((int(self.labels.max()) + 1,), -1, dtype=torch.long)
        remap[torch.tensor(list(classes))] = torch.arange(len(classes))
        return ImageArrays(self.images[keep], remap[self.labels[keep]], [self.classes[c] for c in classes])


class ImageDataset(torch.utils.data.Dataset):
    """``ImageArrays`` as a map-style dataset yielding ``(transform(image CHW uint8), label)``."""

    def __init__(self, arrays: ImageArrays, transform=None):
        self.arrays = arrays
        self.transform = transform

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int):
        image = self.arrays.images[i].permute(2, 0, 1)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.arrays.labels[i]


IMAGE_DATASETS = ("mnist", "cifar10", "cifar100", "cifar10-subset", "digits")


def load_images(name: str, root: str | Path | None = None, train: bool = True, download: bool = True) -> ImageArrays:
    """One split of ``mnist``, ``cifar10``, ``cifar100``, ``cifar10-subset`` (15k/1k) or ``digits`` (embedded)."""
    if name == "mnist":
        return load_mnist(root, train, download)
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, root, train, download)
    if name == "cifar10-subset":
        return load_cifar10_subset(root, train)
    if name == "digits":
        return load_digits(train)
    raise DataError(f"unknown image dataset {name!r}; choose one of {', '.join(IMAGE_DATASETS)}")


MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally ``.gz``): magic, dims as big-endian uint32, then uint8 data."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not a uint8 IDX file")
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: {data.size} values for shape {dims}")
    return data.reshape(dims)


def load_mnist(root: str | Path | None = None, train: bool = True, download: bool = True) -> ImageArrays:
    """MNIST from torchvision's ``MNIST/raw`` or the offline ``images/mnist`` IDX files (plain or ``.gz``)."""
    root = data_root(root)
    images_name, labels_name = MNIST_FILES[train]
    candidates = [root / "MNIST" / "raw", root / "images" / "mnist", root / "mnist"]
    for folder in candidates:
        for suffix in ("", ".gz"):
            if (folder / f"{images_name}{suffix}").exists() and (folder / f"{labels_name}{suffix}").exists():
                images = read_idx(folder / f"{images_name}{suffix}")
                labels = read_idx(folder / f"{labels_name}{suffix}")
                return ImageArrays(
                    torch.from_numpy(images.copy())[..., None], torch.from_numpy(labels.astype(np.int64)),
                    [str(i) for i in range(10)],
                )
    if download:
        try:
            from torchvision.datasets import MNIST

            MNIST(str(root), train=train, download=True)
            return load_mnist(root, train, download=False)
        except (OSError, RuntimeError):
            pass
    raise _missing(f"MNIST {images_name} and {labels_name}", root, candidates)


def load_cifar(name: str = "cifar10", root: str | Path | None = None, train: bool = True,
               download: bool = True) -> ImageArrays:
    """CIFAR-10/100 in torchvision's layout (``cifar-10-batches-py`` / ``cifar-100-python`` under the root)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls, folder = (CIFAR10, "cifar-10-batches-py") if name == "cifar10" else (CIFAR100, "cifar-100-python")
    root = data_root(root)
    for base in (root, root / "images" / name):
        if (base / folder).is_dir():
            dataset = cls(str(base), train=train, download=False)
            break
    else:
        try:
            if not download:
                raise OSError("download disabled")
            dataset = cls(str(root), train=train, download=True)
        except (OSError, RuntimeError) as err:
            raise _missing(
                f"{name} ({folder}/; download failed: {err})", root, [root / folder, root / "images" / name / folder],
                hint=" (or use the offline 15k/1k subset as --dataset cifar10-subset)" if name == "cifar10" else "",
            ) from None
    return ImageArrays(
        torch.from_numpy(np.ascontiguousarray(dataset.data)), torch.tensor(dataset.targets, dtype=torch.long),
        list(dataset.classes),
    )


def load_cifar10_subset(root: str | Path | None = None, train: bool = True, download: bool = False) -> ImageArrays:
    """The offline CIFAR-10 subset (first 15,000 train / first 1,000 test images), ``cifar10_subset.npz``.

    Its own dataset name, never a stand-in for full CIFAR-10. It has no download (``download`` is ignored).
    """
    root = data_root(root)
    candidates = [root / "images" / "cifar10", root / "cifar10", root]
    folder = _first_existing(candidates, ["cifar10_subset.npz"])
    if folder is None:
        raise _missing("cifar10_subset.npz", root, [c / "cifar10_subset.npz" for c in candidates])
    split = "train" if train else "test"
    with np.load(folder / "cifar10_subset.npz") as f:
        images, labels, classes = f[f"x_{split}"], f[f"y_{split}"], [str(c) for c in f["class_names"]]
    return ImageArrays(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)), classes)


def load_digits(train: bool = True, test_fraction: float = 0.25, seed: int = 0) -> ImageArrays:
    """scikit-learn's embedded 8×8 digits (1,797 images, 16 grey levels scaled to 0–255), a fixed split."""
    require_extra("sklearn", "sklearn")
    from sklearn.datasets import load_digits as sk_digits

    digits = sk_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    order = np.random.RandomState(seed).permutation(len(images))
    n_test = round(test_fraction * len(images))
    index = order[n_test:] if train else order[:n_test]
    return ImageArrays(
        torch.from_numpy(images[index]), torch.from_numpy(digits.target[index].astype(np.int64)),
        [str(i) for i in range(10)],
    )


def _download(url: str, target: Path, timeout: float = 30.0) -> None:
    """Download ``url`` to ``target`` atomically (a partial file never takes the final name)."""
    import urllib.request

    from diffcore.io import atomic_path

    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp, urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
        shutil.copyfileobj(response, out)
