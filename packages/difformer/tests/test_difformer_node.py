"""Node protocol pieces: splits, induced chunks, the empty-chunk rule, CPU evaluation, metrics, selection,
and short real runs on Cora."""

import dataclasses

import numpy as np
import pytest
import torch
from diffcore.runs import RunDir
from diffcore.testing import require_shared_data
from difformer.config import NODE_PRESETS
from difformer.data import load_node_dataset
from difformer.node import (
    KeepOnDevice,
    NodeChunks,
    chunk_loss,
    evaluate_full_graph,
    fit_runs,
    node_splits,
    rocauc,
    run_node,
    select_best,
    sparse_if_sparse,
)
from difformer.splits import class_splits, random_splits
from torch_geometric.data import Data
from torch_geometric.utils import subgraph


def test_class_split_per_class_counts_and_disjoint():
    y = torch.tensor([0] * 30 + [1] * 5 + [2] * 40 + [-1] * 10)
    train, val, test = class_splits(y, 20, 10, 15, 1, seed=0)[0]
    assert torch.bincount(y[train]).tolist() == [20, 5, 20]  # a class smaller than 20 gives all it has
    assert len(val) == 10 and len(test) == 15
    everything = torch.cat([train, val, test])
    assert everything.unique().numel() == everything.numel() and bool((y[everything] >= 0).all())
    first, second = class_splits(y, 20, 10, None, 2, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(first[:2], (train, val), strict=True))  # same stream
    assert not torch.equal(second[0].sort().values, train.sort().values)
    assert len(second[2]) == 75 - 45 - 10  # test_num None: the rest of the labelled nodes


def test_class_split_draws_like_the_original():
    """The original's calls on a generator seeded like its global RNG: randperm per class, then of the rest."""
    y = torch.tensor([1, 0, 2, 1, 0, 0, 2, 1, 1, 2, 0, 2])
    torch.manual_seed(5)
    expected_train, rest = [], []
    for c in (0, 1, 2):
        idx = torch.arange(12)[y == c]
        idx = idx[torch.randperm(len(idx))]
        expected_train += idx[:2].tolist()
        rest += idx[2:].tolist()
    rest = torch.tensor(rest)[torch.randperm(len(rest))]
    train, val, test = class_splits(y, 2, 3, 2, 1, seed=5)[0]
    assert train.tolist() == expected_train
    assert val.tolist() == rest[:3].tolist() and test.tolist() == rest[3:5].tolist()


def test_random_split_ignores_unlabelled():
    y = torch.tensor([0, 1, -1, 1, 0, 1, -1, 0])
    train, val, test = random_splits(y, 0.5, 0.25, 1, seed=3)[0]
    assert (len(train), len(val), len(test)) == (3, 1, 2)
    assert -1 not in y[torch.cat([train, val, test])].tolist()


def test_chunks_are_induced_subgraphs(make_graph):
    data = make_graph(40, seed=1)
    data.edge_weight = torch.rand(data.edge_index.shape[1], generator=torch.Generator().manual_seed(1)) + 0.5
    chunks = NodeChunks(data, torch.arange(10))
    ids = torch.randperm(40, generator=torch.Generator().manual_seed(0))[:15]
    batch = chunks.collate(ids.tolist())
    expected, weight = subgraph(ids, data.edge_index, data.edge_weight, num_nodes=40, relabel_nodes=True)
    as_set = lambda e, w: set(zip(map(tuple, e.T.tolist()), w.tolist(), strict=True))  # noqa: E731
    assert as_set(batch.edge_index, batch.edge_weight) == as_set(expected, weight)  # each edge keeps its weight
    assert torch.equal(batch.x, data.x[ids]) and batch.train_mask.tolist() == (ids < 10).tolist()


def test_chunk_without_training_nodes_changes_nothing(make_model):
    model = make_model(4, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, weight_decay=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = Data(x=torch.randn(5, 4), edge_index=torch.tensor([[0, 1], [1, 2]]), y=torch.zeros(5, dtype=torch.long),
                 train_mask=torch.zeros(5, dtype=torch.bool))
    loss = chunk_loss(model, batch)
    loss.backward()
    optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_minibatch_with_b_dividing_n_has_no_empty_chunk(tmp_path, make_graph):
    data = make_graph(60, seed=2)
    split = (torch.arange(30), torch.arange(30, 45), torch.arange(45, 60))
    train = dataclasses.replace(NODE_PRESETS["file-s"].train, epochs=2, batch_size=20, save_every=1)
    run = RunDir(tmp_path)
    results = fit_runs(data, [split], model_config=short_model_config(), num_classes=3, lr=0.01, weight_decay=0.0,
                       train=train, minibatch=True, run=run, export=False)
    steps = [r["step"] for r in RunDir(tmp_path / "run-0").read_metrics()]
    assert steps == [3, 6]  # 60 / 20 = 3 chunks per epoch, never the original's ⌊N/B⌋ + 1 = 4
    assert results[0]["epochs"] == 2


def test_cpu_evaluation_equals_full_forward(make_graph, make_model):
    data = make_graph(30, seed=3)
    model = make_model(data.num_features, 3).eval()
    with torch.no_grad():
        kept = evaluate_full_graph(model, KeepOnDevice(data))["out"]
        direct = model(data.x, data.edge_index)
    torch.testing.assert_close(kept, direct)


def test_sparse_features_give_the_same_model_output(make_graph, make_model):
    data = make_graph(30, seed=4)
    x = data.x * (torch.rand(data.x.shape, generator=torch.Generator().manual_seed(0)) < 0.05)
    sparse = sparse_if_sparse(x)
    assert sparse.layout == torch.sparse_csr
    model = make_model(data.num_features, 3).eval()
    torch.testing.assert_close(model(sparse, data.edge_index), model(x, data.edge_index))


def test_rocauc_equals_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, (50, 4))
    targets[:, 3] = 1  # one class only: skipped, as OGB's evaluator does
    scores = np.round(rng.normal(size=(50, 4)), 1)  # ties
    expected = np.mean([roc_auc_score(targets[:, t], scores[:, t]) for t in range(3)])
    assert rocauc(torch.from_numpy(scores), torch.from_numpy(targets)) == pytest.approx(expected)


def test_select_best_takes_the_first_maximum():
    history = {e: {"full_val_acc": v, "full_test_acc": t} for e, v, t in [(1, 50, 10), (2, 70, 20), (3, 70, 30)]}
    assert select_best(history, "acc") == (2, history[2])


@pytest.fixture(scope="module")
def cora():
    root = require_shared_data("planetoid/Cora/raw")
    return load_node_dataset("cora", root)


def test_cora_splits(cora):
    config = dataclasses.replace(NODE_PRESETS["cora-s"], runs=3)
    kind, splits = node_splits(config, cora)
    assert kind == "class" and [len(s) for s in splits[0]] == [140, 500, 1000]
    assert torch.bincount(cora.data.y[splits[0][0]]).tolist() == [20] * 7
    assert not torch.equal(splits[0][0], splits[1][0])
    _, reused = node_splits(dataclasses.replace(config, reuse_first_split=True), cora)
    assert all(torch.equal(a, b) for s in reused for a, b in zip(s, reused[0], strict=True))
    assert cora.data.edge_index.shape == (2, 10556 + 2708)  # symmetric Cora plus one self-loop per node


def test_short_cora_run_beats_the_majority_class(cora, tmp_path):
    """cora-s cut to 2 layers and lr 0.01, 15 epochs (the 8-layer preset needs ~150 epochs to leave its plateau)."""
    config = NODE_PRESETS["cora-s"]
    config = dataclasses.replace(config, runs=1, lr=0.01, model=dataclasses.replace(config.model, num_layers=2),
                                 train=dataclasses.replace(config.train, epochs=15))
    results = run_node(config, RunDir(tmp_path), cora)
    _, splits = node_splits(config, cora)
    majority = torch.bincount(cora.data.y[splits[0][2]]).max().item() / 10  # percent of the 1000 test nodes
    assert results["test_acc_mean"] > majority + 10, (results["test_acc_mean"], majority)
    assert results["params"] == 159_943 - 6 * (2 * 64 * 64 + 2 * 64 + 2 * 64)  # 6 layers fewer


def short_model_config():
    return dataclasses.replace(NODE_PRESETS["file-s"].model, hidden_channels=8, num_layers=2, dropout=0.0)


def _ogb_folder(root, n=6):
    """A tiny ogbn-proteins in the OGB raw layout: 4 undirected edges with 8-d features, 3 tasks."""
    import gzip

    raw, split = root / "ogbn_proteins" / "raw", root / "ogbn_proteins" / "split" / "species"
    raw.mkdir(parents=True)
    split.mkdir(parents=True)

    def write(path, rows):
        with gzip.open(path, "wt") as f:
            f.write("".join(",".join(map(str, r)) + "\n" for r in rows))

    edges = [(0, 1), (1, 2), (2, 3), (4, 5)]
    write(raw / "edge.csv.gz", edges)
    write(raw / "edge-feat.csv.gz", [[e + 0.1 * k for k in range(8)] for e in range(4)])
    write(raw / "node-label.csv.gz", [[i % 2, (i + 1) % 2, 1] for i in range(n)])
    write(raw / "num-node-list.csv.gz", [[n]])
    write(raw / "num-edge-list.csv.gz", [[4]])
    for name, ids in (("train", [0, 1, 2]), ("valid", [3, 4]), ("test", [5])):
        write(split / f"{name}.csv.gz", [[i] for i in ids])


def test_ogbn_proteins_through_ogb(tmp_path):
    pytest.importorskip("ogb", reason="the ogb extra is not installed (pip install 'difformer[ogb]')")
    _ogb_folder(tmp_path)
    dataset = load_node_dataset("ogbn-proteins", tmp_path)
    data = dataset.data
    assert dataset.multilabel and data.y.shape == (6, 3)
    assert data.train_mask[:, 0].nonzero().flatten().tolist() == [0, 1, 2]
    # node 1 receives edge 0 (0→1) and the inverse of edge 1 (2→1): features averaged over both
    torch.testing.assert_close(data.x[1], torch.tensor([0.5 + 0.1 * k for k in range(8)]))
    # directed as given (both directions are in OGB's list), plus one self-loop per node
    assert data.edge_index.shape[1] == 2 * 4 + 6


def test_ogbn_proteins_without_ogb_names_the_extra(tmp_path, monkeypatch):
    import sys

    _ogb_folder(tmp_path)
    monkeypatch.setitem(sys.modules, "ogb", None)
    monkeypatch.setitem(sys.modules, "ogb.io", None)
    monkeypatch.setitem(sys.modules, "ogb.io.read_graph_raw", None)
    from diffcore.errors import DataError

    with pytest.raises(DataError, match=r"difformer\[ogb\]"):
        load_node_dataset("ogbn-proteins", tmp_path)
