"""The raw formats only DIFFormer reads: user graph/features files, LINKX pokec, Geom-GCN film, the filtered
heterophilous graphs, PyG-Temporal JSON and 20 Newsgroups TF-IDF.

They use the core's data root and offline layout (:mod:`diffcore.data.paths`): every loader looks in the layout of
``../shared/data`` too, writes processed files only to the cache, and reports a missing file in one line naming
the files expected and ``--data-root``. :mod:`difformer.data` turns what they return into the three tasks' datasets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from diffcore.data import cache_dir, data_root, download_file, first_existing, not_found
from diffcore.errors import DataError

# ------------------------------------------------------------------------------ user files (FILE formats)
#
# Two documented array files let users bring their own data: ``difformer node --dataset FILE`` and
# ``difformer instances --dataset FILE``:
#
# * a **graph file** — ``x`` float ``[N, d]``, ``edge_index`` int ``[2, E]`` (row 0 sources, row 1 targets,
#   ids in ``0..N-1``), ``y`` int ``[N]`` (``-1`` = unlabelled), optional ``edge_weight`` ``[E]`` and optional
#   boolean split masks ``train_mask``/``val_mask``/``test_mask`` of shape ``[N]`` (one split) or ``[N, R]``
#   (R splits, PyG's convention);
# * a **features file** — ``x`` float ``[N, d]`` and ``y`` int ``[N]`` (e.g. image/text embeddings).
#
# Either as ``.npz`` (``np.savez(path, x=..., ...)``) or as ``.pt`` (``torch.save({"x": ..., ...}, path)``,
# read with ``weights_only=True``).

GRAPH_FILE_KEYS = ("x", "edge_index", "y")
GRAPH_FILE_OPTIONAL = ("edge_weight", "train_mask", "val_mask", "test_mask")
FEATURES_FILE_KEYS = ("x", "y")


def read_array_file(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` or ``.pt`` file as NumPy arrays; anything unreadable is a :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist (expected an .npz or .pt file)")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError) as err:
            raise DataError(f"{path} is not a readable .npz file ({err})") from None
    if path.suffix in (".pt", ".pth"):
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for a bad file (UnpicklingError, RuntimeError, ...)
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise DataError(f"{path} is not a readable torch file of tensors ({first})") from None
        if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
            raise DataError(f"{path} must hold a dict of tensors ({{'x': ..., ...}}), found {type(data).__name__}")
        return {k: v.numpy() for k, v in data.items()}
    raise DataError(f"{path}: unknown file type {path.suffix!r}; use .npz or .pt")


def _require_keys(path: Path, data: dict, required: Sequence[str], optional: Sequence[str]) -> None:
    missing = [k for k in required if k not in data]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}; a file needs {', '.join(required)}"
                        + (f" (optional: {', '.join(optional)})" if optional else "") + f", found {', '.join(data)}")


def _check_features(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{path}: x must be a numeric [N, d] array, got shape {list(x.shape)} ({x.dtype})")
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: y must be an integer [N] array with N = {x.shape[0]} (rows of x), "
                        f"got shape {list(y.shape)} ({y.dtype})")
    if not np.isfinite(x).all():
        raise DataError(f"{path}: x holds NaN or infinite values")


def load_features_file(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A features file (see above) → ``x`` float32 ``[N, d]``, ``y`` int64 ``[N]``."""
    path = Path(path)
    data = read_array_file(path)
    _require_keys(path, data, FEATURES_FILE_KEYS, ())
    x, y = data["x"], data["y"]
    _check_features(path, x, y)
    return torch.from_numpy(np.asarray(x, dtype=np.float32)), torch.from_numpy(y.astype(np.int64))


def load_graph_file(path: str | Path):
    """A graph file (see above) → ``torch_geometric.data.Data`` (masks as ``[N, R]`` bool, if given)."""
    from torch_geometric.data import Data

    path = Path(path)
    data = read_array_file(path)
    _require_keys(path, data, GRAPH_FILE_KEYS, GRAPH_FILE_OPTIONAL)
    x, y, edge_index = data["x"], data["y"], data["edge_index"]
    _check_features(path, x, y)
    n = x.shape[0]
    if edge_index.ndim != 2 or edge_index.shape[0] != 2 or not np.issubdtype(edge_index.dtype, np.integer):
        raise DataError(f"{path}: edge_index must be an integer [2, E] array, got shape {list(edge_index.shape)} "
                        f"({edge_index.dtype})")
    if edge_index.size and (edge_index.min() < 0 or edge_index.max() >= n):
        raise DataError(f"{path}: edge_index holds node ids in [{edge_index.min()}, {edge_index.max()}] but x has "
                        f"{n} rows (valid ids 0..{n - 1})")
    graph = Data(x=torch.from_numpy(np.asarray(x, dtype=np.float32)), y=torch.from_numpy(y.astype(np.int64)),
                 edge_index=torch.from_numpy(edge_index.astype(np.int64)))
    if "edge_weight" in data:
        weight = data["edge_weight"]
        if weight.shape != (edge_index.shape[1],):
            raise DataError(f"{path}: edge_weight must have shape [{edge_index.shape[1]}] (one per edge), "
                            f"got {list(weight.shape)}")
        graph.edge_weight = torch.from_numpy(weight.astype(np.float32))
    masks = [k for k in ("train_mask", "val_mask", "test_mask") if k in data]
    if masks and len(masks) != 3:
        raise DataError(f"{path}: give all of train_mask, val_mask, test_mask or none (found {', '.join(masks)})")
    for key in masks:
        mask = data[key]
        if mask.dtype != np.bool_ or mask.shape[0] != n or mask.ndim not in (1, 2):
            raise DataError(f"{path}: {key} must be a boolean [N] or [N, R] array with N = {n}, "
                            f"got shape {list(mask.shape)} ({mask.dtype})")
        graph[key] = torch.from_numpy(mask.reshape(n, -1).copy())
    if masks and len({graph[k].shape[1] for k in masks}) != 1:
        raise DataError(f"{path}: train_mask, val_mask and test_mask must hold the same number of splits")
    return graph


# ------------------------------------------------------------------ LINKX / heterophilous node datasets


def _graph_data(x: np.ndarray, edge_index: np.ndarray, y: np.ndarray, masks: dict[str, np.ndarray] | None = None):
    from torch_geometric.data import Data

    graph = Data(x=torch.as_tensor(np.asarray(x, dtype=np.float32)),
                 edge_index=torch.as_tensor(np.asarray(edge_index, dtype=np.int64)),
                 y=torch.as_tensor(np.asarray(y, dtype=np.int64)))
    for key, mask in (masks or {}).items():
        graph[key] = torch.as_tensor(np.asarray(mask, dtype=bool))
    return graph


def load_pokec(root: str | Path | None = None):
    """LINKX Pokec (``pokec.mat``: ``edge_index``, ``node_feat``, ``label``, ``num_nodes``) as a PyG ``Data``.

    1,632,803 nodes, 30,622,564 directed edges, 65 features, 2 classes (``-1`` = unlabelled). The fixed LINKX
    split, when its files ``pokec/split_0.5_0.25/pokec_{train,valid,test}.txt`` exist, becomes
    ``train_mask``/``val_mask``/``test_mask`` ``[N, 1]``. Looked up in ``<root>/``, ``<root>/pokec/``,
    ``<root>/linkx/``. No download (the file lives on Google Drive).
    """
    import scipy.io

    root = data_root(root)
    candidates = [root, root / "pokec", root / "linkx"]
    folder = first_existing(candidates, ["pokec.mat"])
    if folder is None:
        raise not_found("LINKX pokec.mat", root, [c / "pokec.mat" for c in candidates],
                       hint=" (LINKX release, Google Drive id 1dNs5E7BrWJbgcHeQ_zuy5Ozp2tRCWG0y)")
    try:
        mat = scipy.io.loadmat(folder / "pokec.mat")
    except (OSError, ValueError, NotImplementedError) as err:
        raise DataError(f"{folder / 'pokec.mat'} is not a readable MATLAB file ({err})") from None
    lacking = [k for k in ("edge_index", "node_feat", "label", "num_nodes") if k not in mat]
    if lacking:
        raise DataError(f"{folder / 'pokec.mat'} lacks {', '.join(lacking)}; is it the LINKX pokec.mat?")
    x = mat["node_feat"]
    x = x.toarray() if sp.issparse(x) else x
    y = np.asarray(mat["label"]).reshape(-1)
    masks = {}
    split = next((c / "pokec" / "split_0.5_0.25" for c in (root, folder)
                  if (c / "pokec" / "split_0.5_0.25" / "pokec_train.txt").exists()), None)
    if split is not None:
        n = len(y)
        for key, name in (("train_mask", "train"), ("val_mask", "valid"), ("test_mask", "test")):
            mask = np.zeros((n, 1), dtype=bool)
            mask[np.loadtxt(split / f"pokec_{name}.txt", dtype=np.int64), 0] = True
            masks[key] = mask
    return _graph_data(x, mat["edge_index"], y, masks)


def load_film(root: str | Path | None = None):
    """Geom-GCN ``film`` (actor): 7,600 nodes, 932 binary features (row-normalised), 5 classes, 10 splits.

    Files: ``out1_node_feature_label.txt`` (``id<TAB>feature indices, comma-separated<TAB>label``),
    ``out1_graph_edges.txt`` (``source<TAB>target``), both with a header line, in ``<root>/geom-gcn/film/``
    or ``<root>/film/`` (or ``.../raw/``); splits ``film_split_0.6_0.2_{0..9}.npz`` (``train_mask``,
    ``val_mask``, ``test_mask``) in ``<root>/geom-gcn/splits/``, the dataset folder or its ``splits/``.
    Masks are ``[N, 10]``. Edges are kept as listed (symmetrise them if you need to).
    """
    root = data_root(root)
    files = ["out1_node_feature_label.txt", "out1_graph_edges.txt"]
    candidates = [root / "geom-gcn" / "film", root / "film", root / "film" / "raw", root / "Actor" / "raw"]
    folder = first_existing(candidates, files)
    if folder is None:
        raise not_found(f"Geom-GCN film files ({', '.join(files)})", root, candidates)
    rows = np.loadtxt(folder / files[0], dtype=str, delimiter="\t", skiprows=1, ndmin=2)
    ids, labels = rows[:, 0].astype(np.int64), rows[:, 2].astype(np.int64)
    n = int(ids.max()) + 1
    x = np.zeros((n, 932), dtype=np.float32)
    for node, indices in zip(ids, rows[:, 1], strict=True):
        x[node, np.array(indices.split(","), dtype=np.int64)] = 1.0
    x /= np.maximum(x.sum(1, keepdims=True), 1.0)
    y = np.full(n, -1, dtype=np.int64)
    y[ids] = labels
    edges = np.loadtxt(folder / files[1], dtype=np.int64, delimiter="\t", skiprows=1, ndmin=2).T
    split_dirs = [root / "geom-gcn" / "splits", folder, folder / "splits", folder.parent / "splits"]
    names = [f"film_split_0.6_0.2_{i}.npz" for i in range(10)]
    split_dir = first_existing(split_dirs, names)
    if split_dir is None:
        raise not_found(f"Geom-GCN film splits ({names[0]} … {names[-1]})", root, split_dirs)
    masks: dict[str, list[np.ndarray]] = {"train_mask": [], "val_mask": [], "test_mask": []}
    for name in names:
        with np.load(split_dir / name) as f:
            for key in masks:
                masks[key].append(f[key].astype(bool))
    return _graph_data(x, edges, y, {k: np.stack(v, axis=1) for k, v in masks.items()})


HETEROPHILOUS_FILTERED = ("chameleon", "squirrel")


def load_heterophilous_filtered(name: str, root: str | Path | None = None):
    """Platonov et al. (ICLR 2023) ``<name>_filtered.npz`` (chameleon, squirrel) with its 10 given splits.

    Keys ``node_features``, ``node_labels``, ``edges`` ``[E, 2]``, ``train_masks``/``val_masks``/``test_masks``
    ``[10, N]``; looked up in ``<root>/heterophilous_graph/``, ``<root>/heterophilous/`` and ``<root>/``.
    Masks become ``[N, 10]``.
    """
    if name not in HETEROPHILOUS_FILTERED:
        raise DataError(f"unknown filtered dataset {name!r}; choose one of {', '.join(HETEROPHILOUS_FILTERED)}")
    root = data_root(root)
    filename = f"{name}_filtered.npz"
    candidates = [root / "heterophilous_graph", root / "heterophilous", root]
    folder = first_existing(candidates, [filename])
    if folder is None:
        raise not_found(filename, root, [c / filename for c in candidates],
                       hint=" (yandex-research/heterophilous-graphs data/)")
    data = read_array_file(folder / filename)
    need = ["node_features", "node_labels", "edges", "train_masks", "val_masks", "test_masks"]
    _require_keys(folder / filename, data, need, ())
    masks = {key: data[f"{key[:-5]}_masks"].T for key in ("train_mask", "val_mask", "test_mask")}
    return _graph_data(data["node_features"], data["edges"].T, data["node_labels"], masks)


# ------------------------------------------------------------------------------- PyG-Temporal JSON files

PYG_TEMPORAL_URL = "https://raw.githubusercontent.com/benedekrozemberczki/pytorch_geometric_temporal/master/dataset/"
TEMPORAL_FILES = {"chickenpox": "chickenpox.json", "covid": "england_covid.json",
                  "wikimath": "wikivital_mathematics.json", "pedalme": "pedalme_london.json"}


@dataclass
class TemporalSignal:
    """Lagged node signals over time, as PyG-Temporal's loaders build them.

    ``features [S, N, lags]`` (the previous ``lags`` values), ``targets [S, N]`` (the next value), one graph
    per snapshot (``edge_index[t] [2, E_t]``, ``edge_weight[t] [E_t]``) or one shared graph (tuples of
    length 1, ``static=True``). S = T − lags snapshots.
    """

    features: torch.Tensor
    targets: torch.Tensor
    edge_index: tuple[torch.Tensor, ...]
    edge_weight: tuple[torch.Tensor, ...]
    name: str = ""

    @property
    def static(self) -> bool:
        return len(self.edge_index) == 1

    @property
    def num_snapshots(self) -> int:
        return self.features.shape[0]

    @property
    def num_nodes(self) -> int:
        return self.features.shape[1]

    def graph(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = 0 if self.static else t
        return self.edge_index[k], self.edge_weight[k]


def temporal_split_sizes(num_snapshots: int, train_ratio: float = 0.2, val_ratio: float = 0.2) -> tuple[int, int, int]:
    """Chronological train/val/test sizes of PyG-Temporal's ``temporal_signal_split`` applied twice (spec §3.6).

    ``train = int(train_ratio·S)``, then ``val = int(val_ratio/(1 − train_ratio) · rest)``; chickenpox 517 →
    103/103/311.
    """
    train = int(train_ratio * num_snapshots)
    rest = num_snapshots - train
    val = int(val_ratio / (1 - train_ratio) * rest)
    return train, val, rest - val


def _lagged(series: np.ndarray, lags: int) -> tuple[torch.Tensor, torch.Tensor]:
    windows = np.lib.stride_tricks.sliding_window_view(series, lags, axis=0)[:-1]  # [T - lags, N, lags]
    return (torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(series[lags:], dtype=np.float32)))


def _standardize(series: np.ndarray, eps: float) -> np.ndarray:
    return (series - series.mean(axis=0)) / (series.std(axis=0) + eps)


def parse_temporal_json(data: dict, lags: int | None = None, name: str = "") -> TemporalSignal:
    """A PyG-Temporal JSON object → :class:`TemporalSignal`, recognised by its keys:

    * chickenpox ``{"edges", "node_ids", "FX"}`` — values as stored, unit weights, lags 4;
    * pedalme ``{"edges", "weights", "X"}`` — values as stored, lags 4;
    * England-Covid ``{"time_periods", "y", "edge_mapping": {"edge_index": {t: …}, "edge_weight": {t: …}}}``
      — per-node z-score (std + 1e-10), snapshot t uses day t's graph, lags 8;
    * WikiMaths ``{"edges", "weights", "time_periods", "0": {"y": …}, …}`` — per-node z-score, lags 8.
    """
    def static(edges, weights=None):
        e = torch.as_tensor(np.asarray(edges, dtype=np.int64).reshape(-1, 2).T.copy())
        w = torch.ones(e.shape[1]) if weights is None else torch.as_tensor(np.asarray(weights, dtype=np.float32))
        return (e,), (w,)

    if "FX" in data and "edges" in data:
        series, lags = np.asarray(data["FX"], dtype=np.float64), lags or 4
        edges, weights = static(data["edges"])
    elif "X" in data and "edges" in data and "weights" in data:
        series, lags = np.asarray(data["X"], dtype=np.float64), lags or 4
        edges, weights = static(data["edges"], data["weights"])
    elif "edge_mapping" in data and "y" in data:
        series, lags = _standardize(np.asarray(data["y"], dtype=np.float64), 1e-10), lags or 8
        periods = int(data["time_periods"])
        mapping = data["edge_mapping"]
        pairs = [static(mapping["edge_index"][str(t)], mapping["edge_weight"][str(t)]) for t in range(periods - lags)]
        edges, weights = tuple(p[0][0] for p in pairs), tuple(p[1][0] for p in pairs)
    elif "time_periods" in data and "edges" in data and "0" in data:
        periods = int(data["time_periods"])
        series = np.stack([np.asarray(data[str(t)]["y"], dtype=np.float64) for t in range(periods)])
        series, lags = _standardize(series, 0.0), lags or 8
        edges, weights = static(data["edges"], data.get("weights"))
    else:
        raise DataError(f"{name or 'the JSON'} is not a PyG-Temporal dataset this loader knows (chickenpox, pedalme, "
                        f"england_covid or wikivital_mathematics layout); keys found: {', '.join(list(data)[:8])}")
    if lags < 1 or lags >= len(series):
        raise DataError(f"lags={lags} must be in [1, {len(series) - 1}] for {len(series)} time steps")
    features, targets = _lagged(series, lags)
    n = series.shape[1]
    for e in edges:
        if e.numel() and (int(e.min()) < 0 or int(e.max()) >= n):
            raise DataError(f"{name}: an edge refers to node {int(e.max())}, but the series has {n} nodes")
    return TemporalSignal(features, targets, edges, weights, name)


def load_temporal_json(name: str, root: str | Path | None = None, lags: int | None = None,
                       download: bool = True) -> TemporalSignal:
    """A PyG-Temporal dataset by name (``chickenpox``, ``covid``, ``wikimath``, ``pedalme``) or a JSON path.

    Looked up as ``<root>/temporal/<file>`` and ``<root>/<file>``; with a network a missing file is downloaded
    into ``<root>/temporal/``. Parsing: :func:`parse_temporal_json`.
    """
    import json

    path = Path(name)
    if name not in TEMPORAL_FILES:
        if path.suffix != ".json":
            raise DataError(f"unknown temporal dataset {name!r}; choose one of {', '.join(TEMPORAL_FILES)} "
                            "or a .json file")
        if not path.is_file():
            raise DataError(f"{path} does not exist (expected a PyG-Temporal JSON file)")
    else:
        root = data_root(root)
        filename = TEMPORAL_FILES[name]
        candidates = [root / "temporal", root]
        folder = first_existing(candidates, [filename])
        if folder is None:
            if not download:
                raise not_found(f"PyG-Temporal {filename}", root, [c / filename for c in candidates])
            try:
                download_file(PYG_TEMPORAL_URL + filename, candidates[0] / filename)
            except OSError as err:
                raise not_found(f"PyG-Temporal {filename} (download failed: {err})", root,
                               [c / filename for c in candidates],
                               hint=f" (the file is {PYG_TEMPORAL_URL}{filename})") from None
            folder = candidates[0]
        path = folder / filename
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path} is not a readable JSON file ({err})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} must hold a JSON object")
    return parse_temporal_json(data, lags, name=str(path))


# ------------------------------------------------------------------------------------ 20 Newsgroups TF-IDF

NEWSGROUPS_TARBALL = "20news-bydate.tar.gz"
NEWSGROUPS_CACHE = "20news-bydate_py3.pkz"


def _newsgroups_home(root: Path, download: bool) -> Path:
    """A scikit-learn ``data_home`` whose ``20news-bydate_py3.pkz`` exists (built from the tarball if needed)."""
    import codecs
    import pickle
    import tarfile
    import tempfile

    homes = [root / "text" / "20newsgroups", root / "20newsgroups", root]
    home = first_existing(homes, [NEWSGROUPS_CACHE])
    if home is not None:
        return home
    tarball = first_existing(homes, [NEWSGROUPS_TARBALL])
    cache = cache_dir("20newsgroups")
    if (cache / NEWSGROUPS_CACHE).exists():
        return cache
    if tarball is None:
        if download:
            from sklearn.datasets import fetch_20newsgroups

            try:
                fetch_20newsgroups(data_home=str(homes[1]), subset="train", download_if_missing=True)
                return homes[1]
            except OSError:
                pass
        raise not_found(f"20 Newsgroups {NEWSGROUPS_TARBALL} (or scikit-learn's {NEWSGROUPS_CACHE})", root, homes)
    from sklearn.datasets import load_files

    # scikit-learn's own cache format: zlib-compressed pickle of {"train": load_files(...), "test": ...}
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(tarball / NEWSGROUPS_TARBALL, "r:gz") as archive:
            archive.extractall(tmp, filter="data")
        parts = {split: load_files(Path(tmp) / f"20news-bydate-{split}", encoding="latin1")
                 for split in ("train", "test")}
    from diffcore.io import atomic_write_with

    payload = codecs.encode(pickle.dumps(parts), "zlib_codec")
    atomic_write_with(cache / NEWSGROUPS_CACHE, lambda tmp: tmp.write_bytes(payload))
    return cache


NEWSGROUPS_DIFFORMER = ("alt.atheism", "comp.sys.ibm.pc.hardware", "misc.forsale", "rec.autos", "rec.sport.hockey",
                        "sci.crypt", "sci.electronics", "sci.med", "sci.space", "talk.politics.guns")


def load_20newsgroups_tfidf(
    root: str | Path | None = None, categories: Sequence[str] = NEWSGROUPS_DIFFORMER, min_df: float = 0.05,
    download: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """20 Newsgroups as dense TF-IDF (DIFFormer's preprocessing): ``x [N, F]`` float32, ``y [N]``, class names.

    ``fetch_20newsgroups(subset="all", categories)`` in scikit-learn's default (shuffled, seed 42) order, then
    ``CountVectorizer(stop_words="english", min_df=min_df)`` and ``TfidfTransformer(smooth_idf=False)``: the
    10 default categories give 9,607 × 236. Offline it reads the "bydate" tarball
    (``<root>/text/20newsgroups/20news-bydate.tar.gz``) into scikit-learn's cache format in :func:`cache_dir`.
    """
    import hashlib

    root = data_root(root)
    key = hashlib.sha1(repr((sorted(categories), min_df)).encode()).hexdigest()[:12]
    cached = cache_dir("20newsgroups") / f"tfidf-{key}.npz"
    if cached.exists():
        with np.load(cached) as f:
            return torch.from_numpy(f["x"]), torch.from_numpy(f["y"]), [str(c) for c in f["classes"]]
    from sklearn.datasets import fetch_20newsgroups
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer

    home = _newsgroups_home(root, download)
    try:
        bunch = fetch_20newsgroups(data_home=str(home), subset="all", categories=list(categories),
                                   download_if_missing=False)
    except ValueError as err:  # unknown category names
        raise DataError(f"20 Newsgroups: {err}") from None
    counts = CountVectorizer(stop_words="english", min_df=min_df).fit_transform(bunch.data)
    x = np.asarray(TfidfTransformer(smooth_idf=False).fit_transform(counts).todense(), dtype=np.float32)
    y = bunch.target.astype(np.int64)
    from diffcore.io import atomic_path

    with atomic_path(cached) as tmp, open(tmp, "wb") as f:
        np.savez(f, x=x, y=y, classes=np.array(bunch.target_names))
    return torch.from_numpy(x), torch.from_numpy(y), list(bunch.target_names)
