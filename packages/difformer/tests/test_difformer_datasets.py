"""Loaders for user files (graph/features FILE formats), LINKX/heterophilous graphs, PyG-Temporal JSON and
20 Newsgroups TF-IDF: generated files in every layout, plus the real chickenpox and 20News copies."""

import io
import json
import tarfile

import numpy as np
import pytest
import scipy.io
import torch
from diffcore.errors import DataError
from diffcore.testing import require_shared_data
from difformer.datasets import (
    load_20newsgroups_tfidf,
    load_features_file,
    load_film,
    load_graph_file,
    load_heterophilous_filtered,
    load_pokec,
    load_temporal_json,
    parse_temporal_json,
    temporal_split_sizes,
)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFNETS_CACHE", str(tmp_path / "cache"))


def _graph_arrays(n=6):
    return {"x": np.random.default_rng(0).random((n, 3), dtype=np.float32), "y": np.arange(n) % 2,
            "edge_index": np.array([[0, 1, 2], [1, 2, 3]])}


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_graph_file_round_trip(tmp_path, suffix):
    arrays = {**_graph_arrays(), "train_mask": np.eye(6, 2, dtype=bool), "val_mask": np.zeros((6, 2), bool),
              "test_mask": np.ones((6, 2), bool), "edge_weight": np.ones(3, np.float32)}
    path = tmp_path / f"g{suffix}"
    if suffix == ".npz":
        np.savez(path, **arrays)
    else:
        torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, path)
    graph = load_graph_file(path)
    assert graph.x.shape == (6, 3) and graph.edge_index.tolist() == [[0, 1, 2], [1, 2, 3]]
    assert graph.train_mask.shape == (6, 2) and graph.edge_weight.shape == (3,)


@pytest.mark.parametrize("change,message", [
    (lambda a: a.pop("y"), "lacks y"),
    (lambda a: a.update(y=np.arange(5)), "y must be an integer [N] array with N = 6"),
    (lambda a: a.update(x=np.ones(6)), "x must be a numeric [N, d] array"),
    (lambda a: a.update(edge_index=np.array([[0], [9]])), "node ids in [0, 9]"),
    (lambda a: a.update(edge_index=np.zeros((3, 2), np.int64)), "edge_index must be an integer [2, E]"),
    (lambda a: a.update(train_mask=np.ones(6, bool)), "give all of train_mask"),
    (lambda a: a.update(train_mask=np.ones(6), val_mask=np.ones(6, bool), test_mask=np.ones(6, bool)), "boolean"),
])
def test_graph_file_errors(tmp_path, change, message):
    arrays = _graph_arrays()
    change(arrays)
    np.savez(tmp_path / "g.npz", **arrays)
    with pytest.raises(DataError) as err:
        load_graph_file(tmp_path / "g.npz")
    assert message in str(err.value)


def test_features_file_and_unreadable_files(tmp_path):
    np.savez(tmp_path / "f.npz", x=np.ones((4, 2)), y=np.array([0, 1, 0, 1]))
    x, y = load_features_file(tmp_path / "f.npz")
    assert x.dtype == torch.float32 and y.tolist() == [0, 1, 0, 1]
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"not a readable \.npz"):
        load_features_file(tmp_path / "bad.npz")
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(DataError, match="not a readable torch file"):
        load_features_file(tmp_path / "bad.pt")
    with pytest.raises(DataError, match="does not exist"):
        load_features_file(tmp_path / "missing.npz")
    with pytest.raises(DataError, match="unknown file type"):
        (tmp_path / "f.csv").write_text("1,2")
        load_features_file(tmp_path / "f.csv")


def test_pokec_mat_and_fixed_split(tmp_path):
    n = 7
    scipy.io.savemat(tmp_path / "pokec.mat", {"edge_index": np.array([[0, 1], [1, 2]]), "node_feat": np.ones((n, 65)),
                                               "label": np.array([[0, 1, -1, 1, 0, 1, 0]]), "num_nodes": n})
    split = tmp_path / "pokec" / "split_0.5_0.25"
    split.mkdir(parents=True)
    for name, ids in (("train", [0, 1, 3]), ("valid", [4]), ("test", [5, 6])):
        np.savetxt(split / f"pokec_{name}.txt", ids, fmt="%d")
    graph = load_pokec(tmp_path)
    assert graph.x.shape == (n, 65) and graph.y.tolist() == [0, 1, -1, 1, 0, 1, 0]
    assert graph.train_mask[:, 0].nonzero().flatten().tolist() == [0, 1, 3]
    with pytest.raises(DataError, match=r"pokec\.mat"):
        load_pokec(tmp_path / "elsewhere")


def test_film_geom_gcn_files(tmp_path):
    folder = tmp_path / "geom-gcn" / "film"
    folder.mkdir(parents=True)
    (folder / "out1_node_feature_label.txt").write_text("node_id\tfeature\tlabel\n0\t1,5\t2\n1\t3\t0\n2\t0,1,2,3\t4\n")
    (folder / "out1_graph_edges.txt").write_text("node_id\tnode_id\n0\t1\n1\t2\n")
    splits = tmp_path / "geom-gcn" / "splits"
    splits.mkdir()
    for i in range(10):
        np.savez(splits / f"film_split_0.6_0.2_{i}.npz", train_mask=np.array([1, 0, 0]), val_mask=np.array([0, 1, 0]),
                 test_mask=np.array([0, 0, 1]))
    graph = load_film(tmp_path)
    assert graph.x.shape == (3, 932)
    torch.testing.assert_close(graph.x.sum(1), torch.ones(3))  # row-normalised
    assert graph.x[0, 1] == 0.5 and graph.y.tolist() == [2, 0, 4]
    assert graph.edge_index.tolist() == [[0, 1], [1, 2]] and graph.train_mask.shape == (3, 10)


def test_heterophilous_filtered_npz(tmp_path):
    folder = tmp_path / "heterophilous_graph"
    folder.mkdir()
    masks = np.zeros((10, 4), bool)
    masks[:, 0] = True
    np.savez(folder / "squirrel_filtered.npz", node_features=np.ones((4, 3)), node_labels=np.array([0, 1, 2, 0]),
             edges=np.array([[0, 1], [2, 3]]), train_masks=masks, val_masks=masks, test_masks=masks)
    graph = load_heterophilous_filtered("squirrel", tmp_path)
    assert graph.edge_index.tolist() == [[0, 2], [1, 3]] and graph.train_mask.shape == (4, 10)
    with pytest.raises(DataError, match=r"chameleon_filtered\.npz"):
        load_heterophilous_filtered("chameleon", tmp_path)


def test_chickenpox_real_file():
    root = require_shared_data("temporal/chickenpox.json")
    signal = load_temporal_json("chickenpox", root, download=False)
    assert signal.features.shape == (517, 20, 4) and signal.targets.shape == (517, 20)
    assert signal.static and signal.edge_index[0].shape == (2, 102)
    assert temporal_split_sizes(517) == (103, 103, 311)
    raw = np.array(json.loads((root / "temporal" / "chickenpox.json").read_text())["FX"])
    torch.testing.assert_close(signal.features[10], torch.from_numpy(raw[10:14].T).float())
    torch.testing.assert_close(signal.targets[10], torch.from_numpy(raw[14]).float())


def test_covid_wikimath_pedalme_layouts():
    rng = np.random.default_rng(0)
    y = rng.random((12, 3)) * 10
    covid = {"time_periods": 12, "y": y.tolist(), "edge_mapping": {
        "edge_index": {str(t): [[0, 1], [1, t % 3]] for t in range(12)},
        "edge_weight": {str(t): [1.0, float(t)] for t in range(12)}}}
    signal = parse_temporal_json(covid)
    assert signal.features.shape == (4, 3, 8) and len(signal.edge_index) == 4
    z = (y - y.mean(0)) / (y.std(0) + 1e-10)
    torch.testing.assert_close(signal.targets[0], torch.from_numpy(z[8]).float())
    assert signal.graph(3)[1].tolist() == [1.0, 3.0] and signal.graph(3)[0].tolist() == [[0, 1], [1, 0]]
    wiki = {"time_periods": 12, "edges": [[0, 1], [2, 1]], "weights": [2.0, 3.0],
            **{str(t): {"y": y[t].tolist()} for t in range(12)}}
    signal = parse_temporal_json(wiki, lags=5)
    assert signal.static and signal.features.shape == (7, 3, 5)
    torch.testing.assert_close(signal.features[0, :, 0], torch.from_numpy((y[0] - y.mean(0)) / y.std(0)).float())
    pedal = {"edges": [[0, 1]], "weights": [0.5], "X": y.tolist()}
    assert parse_temporal_json(pedal).features.shape == (8, 3, 4)
    with pytest.raises(DataError, match="PyG-Temporal"):
        parse_temporal_json({"foo": 1})
    with pytest.raises(DataError, match="refers to node"):
        parse_temporal_json({"edges": [[0, 5]], "weights": [1.0], "X": y.tolist()})


def test_missing_temporal_file_names_paths(tmp_path):
    with pytest.raises(DataError) as err:
        load_temporal_json("wikimath", tmp_path, download=False)
    assert "wikivital_mathematics.json" in str(err.value) and "--data-root" in str(err.value)


def _tarball(path, docs):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in docs.items():
            data = text.encode("latin1")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())


def test_20newsgroups_from_a_tarball(tmp_path):
    words = {"sci.space": "orbit rocket launch moon", "rec.autos": "engine wheel car brake"}
    docs = {f"20news-bydate-{split}/{group}/{i}": f"{text} doc{i}"
            for split in ("train", "test") for group, text in words.items() for i in range(3)}
    _tarball(tmp_path / "data" / "text" / "20newsgroups" / "20news-bydate.tar.gz", docs)
    x, y, classes = load_20newsgroups_tfidf(tmp_path / "data", categories=list(words), min_df=0.5, download=False)
    assert classes == ["rec.autos", "sci.space"] and x.shape == (12, 8) and sorted(y.tolist()) == [0] * 6 + [1] * 6
    torch.testing.assert_close(x.norm(dim=1), torch.ones(12))
    again = load_20newsgroups_tfidf(tmp_path / "data", categories=list(words), min_df=0.5, download=False)
    assert torch.equal(again[0], x)  # from the processed cache


@pytest.mark.slow
def test_20newsgroups_real_gives_difformer_shape():
    root = require_shared_data("text/20newsgroups/20news-bydate.tar.gz")
    x, y, classes = load_20newsgroups_tfidf(root, download=False)
    assert x.shape == (9607, 236) and len(classes) == 10 and int(y.max()) == 9
