"""Node classification (§4.2): preprocessing, the seed chain, the patience rule, batched == looped, the CLI."""

import dataclasses
import functools
import json
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from click.testing import CliRunner
from diff_resnet.cli import main
from diff_resnet.diffusion import gcn_normalized_adjacency, graph_laplacian
from diff_resnet.graph.config import GRAPH_PRESETS, GraphConfig
from diff_resnet.graph.data import load_graph, planetoid_graph, prepare_graph, preprocess_features
from diff_resnet.graph.engine import StackedDiffusionNet
from diff_resnet.graph.protocol import EarlyStopping, build_model, draw_split, fit_single, split_seeds
from diff_resnet.graph.run import run_protocol
from diffcore.data import SparseGraph, sparse_to_torch
from diffcore.testing import assert_close_state_dicts, require_shared_data

CORA = "gnn_benchmark_npz/cora.npz"


@pytest.fixture(scope="module")
def cora():
    return load_graph("cora", "npz", require_shared_data(CORA))


def synthetic_graph(nodes_per_class=24, classes=3, features=40, seed=0) -> SparseGraph:
    """A connected stochastic block model whose sparse binary features hint at the class."""
    rng = np.random.RandomState(seed)
    labels = np.repeat(np.arange(classes), nodes_per_class)
    n = len(labels)
    same = labels[:, None] == labels[None, :]
    adj = np.triu(rng.rand(n, n) < np.where(same, 0.2, 0.02), k=1)
    adj[np.arange(n - 1), np.arange(1, n)] = True  # a path through all nodes keeps the graph connected
    attr = (rng.rand(n, features) < 0.08) | ((rng.rand(n, features) < 0.3) & (np.arange(features) % classes
                                                                             == labels[:, None]))
    return SparseGraph(adj=sp.csr_matrix(adj | adj.T, dtype=np.float32), attr=sp.csr_matrix(attr, dtype=np.float32),
                       labels=labels).standardize()


# A large learning rate makes the small runs overfit, so some stop by patience and others reach max_epochs, one
# of them (split 0, init 0) with last weights that test worse than its best: the legacy switch changes its result.
SMALL = GraphConfig("cora", step_size=0.3, layers=4, dropout=0.5, lr=0.2, max_epochs=12, patience=4, splits=2,
                    inits=3, train_per_class=5, val_per_class=8)
#: ``SMALL`` on the command line (the cora preset's other values, dropout 0.25 included, are replaced).
SMALL_ARGS = ["--dataset", "cora", "--step-size", "0.3", "--layers", "4", "--dropout", "0.5", "--max-epochs", "12",
              "--splits", "2", "--inits", "3", "--set", "lr=0.2", "--set", "patience=4", "--set", "train_per_class=5",
              "--set", "val_per_class=8"]


@functools.cache
def small_protocol(**changes) -> dict:
    """``run_protocol`` on the synthetic graph with ``SMALL`` changed as given (each setting runs once)."""
    return run_protocol(synthetic_graph(), dataclasses.replace(SMALL, **changes))


# --------------------------------------------------------------------------------------- seed chain


def test_split_seeds_anchor_and_prefix():
    assert split_seeds(42, 3).tolist() == [121958, 671155, 131932]
    # RandomState.randint draws one value after another: fewer splits are the prefix of the 100.
    assert np.array_equal(split_seeds(42, 100)[:7], split_seeds(42, 7))


def test_cora_lcc_split_and_init_seed_anchors(cora):
    assert (cora.num_nodes, cora.num_edges) == (2485, 5069)
    assert np.bincount(cora.labels).tolist() == [285, 406, 726, 379, 214, 131, 344]
    split = draw_split(cora.labels, 121958, inits=20)
    assert (len(split.train), len(split.val), len(split.test)) == (140, 210, 2135)
    assert split.train[:5].tolist() == [2425, 189, 2481, 2047, 1302]
    assert split.init_seeds[:3].tolist() == [711880, 946634, 295886]
    assert len(set(split.train) | set(split.val) | set(split.test)) == 2485


def test_planetoid_graph_conversion_and_cora_lcc():
    data = SimpleNamespace(num_nodes=4, edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]),
                           x=torch.tensor([[1.0, 0], [0, 2], [3, 0], [0, 0]]), y=torch.tensor([0, 1, 0, 1]))
    graph = planetoid_graph(data).standardize()  # node 3 is isolated: the LCC drops it
    assert graph.num_nodes == 3 and graph.num_edges == 2 and graph.labels.tolist() == [0, 1, 0]
    root = require_shared_data("planetoid/Cora/raw")
    cora = load_graph("cora", "planetoid", root)
    assert (cora.num_nodes, cora.attr.shape[1], int(cora.labels.max()) + 1) == (2485, 1433, 7)


# ------------------------------------------------------------------------------------ preprocessing


def test_features_are_binarised_then_row_normalised():
    attr = sp.csr_matrix(np.array([[0.5, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0], [3.0, 1.0, 1.0, 7.0]]))
    attr.data[attr.data == 1.0] = 0.0  # an explicitly stored zero stays zero
    out = preprocess_features(attr).toarray()
    assert np.allclose(out, [[0.5, 0, 0.5, 0], [0, 0, 0, 0], [0.5, 0, 0, 0.5]])
    assert out.dtype == np.float32


def test_cora_features_and_operator(cora):
    data = prepare_graph(cora)
    features = data.features.to_dense()
    sums = features.sum(1)
    assert torch.allclose(sums[sums > 0], torch.ones(()), atol=1e-6)
    counts = (features > 0).sum(1, keepdim=True).float()  # every non-zero equals 1 / (non-zeros in its row)
    assert torch.allclose(features[features > 0], (1 / counts).expand_as(features)[features > 0])
    adj_hat = gcn_normalized_adjacency(cora.adj).to_dense()
    assert torch.equal(adj_hat, adj_hat.T)
    identity = prepare_graph(cora, "identity").laplacian.to_dense()
    assert torch.allclose(identity, torch.eye(cora.num_nodes) - adj_hat)
    # L · 1 = 0 exactly in exact arithmetic: float64 leaves only rounding.
    laplacian64 = graph_laplacian(gcn_normalized_adjacency(sparse_to_torch(cora.adj, torch.float64)))
    assert (laplacian64 @ torch.ones(cora.num_nodes, dtype=torch.float64)).abs().max() < 1e-12
    assert torch.allclose(data.laplacian.to_dense(), laplacian64.to_dense().float(), atol=1e-6)


# ----------------------------------------------------------------------------------- early stopping


# epoch:    0    1    2    3    4    5    6    7    8
LOSSES = [1.0, 0.8, 0.9, 0.9, 0.7, 0.75, 0.8, 0.9, 0.95]
ACCS = [0.5, 0.5, 0.6, 0.5, 0.5, 0.55, 0.5, 0.6, 0.5]
# improvements: 0 (loss ≤ ∞), 1 (loss), 2 (acc 0.6), 4 (loss), 7 (acc tie 0.6 ≥ 0.6 resets: ties count)


def test_patience_rule_is_loss_or_acc_with_ties():
    stopper = EarlyStopping(patience=2)
    improved = [bool(stopper.update(torch.tensor([v]), torch.tensor([a]))[0]) for v, a in zip(LOSSES, ACCS,
                                                                                               strict=True)]
    assert improved == [True, True, True, False, True, False, False, False, False]  # stops after epoch 6
    assert stopper.stopped.item() and (stopper.best_loss.item(), stopper.best_acc.item()) == pytest.approx((0.7, 0.6))
    late = EarlyStopping(patience=3)
    flags = [bool(late.update(torch.tensor([v]), torch.tensor([a]))[0]) for v, a in zip(LOSSES, ACCS, strict=True)]
    assert flags == [True, True, True, False, True, False, False, True, False]


def _scripted_fit(patience, max_epochs, legacy=False):
    """fit_single on a model whose weight is set to the epoch number by each training epoch."""
    model = torch.nn.Linear(1, 1, bias=False)
    epoch = iter(range(len(LOSSES)))
    current = {}

    def train_epoch():
        current["epoch"] = next(epoch)
        model.weight.data.fill_(current["epoch"])

    def evaluate():
        return LOSSES[current["epoch"]], ACCS[current["epoch"]]

    epochs = fit_single(model, train_epoch, evaluate, patience, max_epochs, legacy)
    return epochs, model.weight.item()


def test_fit_restores_the_last_snapshot_and_legacy_keeps_last_weights():
    assert _scripted_fit(patience=2, max_epochs=9) == (7, 4.0)  # stop after epoch 6, restore epoch 4
    assert _scripted_fit(patience=2, max_epochs=9, legacy=True) == (7, 4.0)  # stopped runs always restore
    assert _scripted_fit(patience=10, max_epochs=6) == (6, 4.0)  # max_epochs: best weights by default
    assert _scripted_fit(patience=10, max_epochs=6, legacy=True) == (6, 5.0)  # quirk 2: last weights


def test_vectorised_rule_equals_independent_rules():
    sequences = [(LOSSES, ACCS), (LOSSES[::-1], ACCS), ([0.5] * 9, [0.1 * i for i in range(9)])]
    together = EarlyStopping(patience=2, num_runs=3)
    alone = [EarlyStopping(patience=2) for _ in sequences]
    for epoch in range(9):
        flags = together.update(torch.tensor([s[0][epoch] for s in sequences]),
                                torch.tensor([s[1][epoch] for s in sequences]))
        for run, (stopper, (losses, accs)) in enumerate(zip(alone, sequences, strict=True)):
            assert flags[run] == stopper.update(torch.tensor([losses[epoch]]), torch.tensor([accs[epoch]]))[0]
            assert together.stopped[run] == stopper.stopped[0]


# --------------------------------------------------------------------------------- batched == looped


def test_stacked_model_starts_from_each_runs_own_initialisation():
    graph = synthetic_graph()
    data = prepare_graph(graph)
    seeds = [711880, 946634]
    stacked = StackedDiffusionNet([build_model(data, SMALL, s) for s in seeds])
    for run, seed in enumerate(seeds):
        assert_close_state_dicts(stacked.run_state_dict(run), build_model(data, SMALL, seed).state_dict())


@pytest.mark.parametrize("legacy", [False, True])
def test_batched_runs_equal_one_at_a_time(legacy):
    batched = small_protocol(legacy_test_last_at_max_epochs=legacy)
    looped = small_protocol(legacy_test_last_at_max_epochs=legacy, batch_runs=False)
    assert batched["epochs"] == looped["epochs"]
    assert len(set(batched["epochs"])) > 1 and SMALL.max_epochs in batched["epochs"]  # stops and caps both occur
    assert batched["test_accs"] == pytest.approx(looped["test_accs"], abs=1e-9)
    assert batched["val_accs"] == pytest.approx(looped["val_accs"], abs=1e-9)
    assert batched["init_seeds"] == looped["init_seeds"] and len(batched["test_accs"]) == 6
    # A memory budget too small for two runs trains them one per batch: the same runs again.
    chunked = small_protocol(legacy_test_last_at_max_epochs=legacy, batch_memory_gb=1e-4)
    assert chunked["epochs"] == batched["epochs"]
    assert chunked["test_accs"] == pytest.approx(batched["test_accs"], abs=1e-9)


@pytest.mark.parametrize("batch_runs", [True, False])
def test_legacy_switch_changes_only_the_runs_that_reach_max_epochs(batch_runs):
    """Quirk 2: the original tests a run that reaches max_epochs with its last weights. The switch changes the
    tested weights of exactly those runs (to the last ones, whose val accuracy is that of the last epoch), in the
    batched engine and in the one-at-a-time reference alike; runs stopped by patience keep their snapshot."""
    default = small_protocol(batch_runs=batch_runs)
    legacy = small_protocol(batch_runs=batch_runs, legacy_test_last_at_max_epochs=True)
    assert legacy["epochs"] == default["epochs"]
    capped = [epochs == SMALL.max_epochs for epochs in default["epochs"]]
    assert capped == [True, True, True, True, True, False]
    for run, at_cap in enumerate(capped):
        if not at_cap:
            assert (legacy["test_accs"][run], legacy["val_accs"][run]) == (default["test_accs"][run],
                                                                             default["val_accs"][run])
    # Split 0, init 0 reaches the cap after its best epoch: its last weights test worse than its best ones.
    assert legacy["test_accs"][0] < default["test_accs"][0] and legacy["val_accs"][0] < default["val_accs"][0]


def _dense_a_hat(graph: SparseGraph) -> np.ndarray:
    """Â = D̃^{-1/2}(A + I)D̃^{-1/2} in float64 NumPy, written from §3.4 (not through our functions)."""
    a = graph.adj.toarray().astype(np.float64) + np.eye(graph.num_nodes)
    inv_sqrt = a.sum(axis=1) ** -0.5
    return inv_sqrt[:, None] * a * inv_sqrt[None, :]


def test_laplacian_switch_reaches_the_protocol():
    """``laplacian="identity"`` trains on I − Â instead of the released diag(rowsum Â) − Â (quirk 7, the default):
    the λ_max the protocol reports is that of the chosen operator, and the runs' results change."""
    a_hat = _dense_a_hat(synthetic_graph())
    expected = {"renormalized": np.linalg.eigvalsh(np.diag(a_hat.sum(axis=1)) - a_hat).max(),
                "identity": np.linalg.eigvalsh(np.eye(len(a_hat)) - a_hat).max()}
    assert expected["renormalized"] != pytest.approx(expected["identity"], rel=1e-3)
    results = {"renormalized": small_protocol(), "identity": small_protocol(laplacian="identity")}  # default first
    for kind, value in expected.items():
        assert results[kind]["lambda_max"] == pytest.approx(value, rel=1e-5), kind
        assert results[kind]["step_size_times_lambda_max"] == pytest.approx(SMALL.step_size * value, rel=1e-5)
    assert results["identity"]["test_accs"] != results["renormalized"]["test_accs"]


def test_cora_protocol_numbers_equal_the_original(cora):
    """Dropout 0 (no random stream besides the init), 8 epochs, split 0 × inits 0–1, the last weights tested at
    max_epochs like the original: the original code gives 75.5972 % and 75.9251 % on these two runs."""
    config = dataclasses.replace(GRAPH_PRESETS["cora"], dropout=0.0, max_epochs=8, splits=1, inits=2,
                                 legacy_test_last_at_max_epochs=True)
    results = run_protocol(cora, config)
    assert results["epochs"] == [8, 8]
    assert [round(a, 4) for a in results["test_accs"]] == [75.5972, 75.9251]


@pytest.mark.slow  # ~12 s; the synthetic test above covers the same path in about one second
def test_batched_equals_looped_on_cora_for_a_few_epochs(cora):
    config = dataclasses.replace(GRAPH_PRESETS["cora"], layers=3, max_epochs=3, patience=2, splits=1, inits=2)
    batched = run_protocol(cora, config)
    looped = run_protocol(cora, dataclasses.replace(config, batch_runs=False))
    assert batched["epochs"] == looped["epochs"]
    assert batched["test_accs"] == pytest.approx(looped["test_accs"], abs=1e-9)


# ------------------------------------------------------------------------------------------------ CLI


def test_graph_command_end_to_end(tmp_path):
    root = require_shared_data(CORA)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["graph", "--dataset", "cora", "--splits", "1", "--inits", "2",
                                       "--max-epochs", "5", "--data-root", str(root), "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert "cora (npz)" in result.output and "±" in result.output
    results = json.loads((out / "results.json").read_text())
    for key in ("test_acc_mean", "test_acc_std", "test_accs", "epochs", "split_seeds", "init_seeds", "dataset",
                "seconds"):
        assert key in results
    assert results["split_seeds"] == [121958] and results["init_seeds"] == [[711880, 946634]]
    assert results["test_acc_std"] == pytest.approx(float(np.std(results["test_accs"])))
    assert results["dataset"] | {"nodes": 2485, "edges": 5069, "features": 1433, "classes": 7} == results["dataset"]
    assert results["epochs"] == [5, 5]  # --max-epochs 5 caps both runs (patience 50 cannot fire by then)
    # λ_max(diag(rowsum Â) − Â) ≈ 5.78 on the Cora LCC (spec §2), and the cora preset's γ = 0.25 multiplies it.
    assert results["lambda_max"] == pytest.approx(5.78, abs=0.005)
    assert results["step_size_times_lambda_max"] == pytest.approx(0.25 * results["lambda_max"])
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(m["split"], m["init"], m["seed"]) for m in lines] == [(0, 0, 711880), (0, 1, 946634)]


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    """A data root whose gnn_benchmark_npz/cora.npz is the synthetic graph, so the CLI runs it in a second."""
    root = tmp_path_factory.mktemp("data")
    (root / "gnn_benchmark_npz").mkdir()
    graph = synthetic_graph()
    arrays = {"labels": graph.labels}
    for prefix, matrix in (("adj", graph.adj), ("attr", graph.attr)):
        arrays |= {f"{prefix}_data": matrix.data, f"{prefix}_indices": matrix.indices,
                   f"{prefix}_indptr": matrix.indptr, f"{prefix}_shape": np.array(matrix.shape)}
    np.savez(root / "gnn_benchmark_npz" / "cora.npz", **arrays)
    return root


@pytest.mark.parametrize(("switches", "changes"), [
    ([], {}),
    (["--legacy-test-last-at-max-epochs"], {"legacy_test_last_at_max_epochs": True}),
    (["--laplacian", "identity"], {"laplacian": "identity"}),
    (["--set", "batch_runs=false"], {"batch_runs": False}),
])
def test_graph_command_options_reach_the_protocol(tmp_path, synthetic_root, switches, changes):
    """The command's results are those of the protocol run with the config typed here: every option on the line
    (and each compatibility switch, whose effect the tests above pin) reaches the runs, not only config.json."""
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["graph", *SMALL_ARGS, *switches, "--data-root", str(synthetic_root),
                                       "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    expected = small_protocol(**changes)
    for key in ("epochs", "test_accs", "val_accs", "split_seeds", "init_seeds", "lambda_max"):
        assert results[key] == expected[key], key


def test_citeseer_needs_step_size_and_layers(tmp_path):
    result = CliRunner().invoke(main, ["graph", "--dataset", "citeseer", "--output-dir", str(tmp_path / "r")])
    assert result.exit_code == 1 and result.output.startswith("Error: ")
    assert "--step-size" in result.output and "--layers" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_missing_data_is_one_line_naming_file_and_data_root(tmp_path, monkeypatch):
    def offline(url, target, timeout=30.0):
        raise OSError("offline")

    monkeypatch.setattr("diffcore.data.graphs.download_file", offline)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["graph", "--dataset", "cora", "--splits", "1", "--inits", "1",
                                       "--data-root", str(empty), "--output-dir", str(tmp_path / "r")])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and "Traceback" not in result.output
    assert "cora.npz" in result.output and "--data-root" in result.output
    assert len(result.output.strip().splitlines()) == 1
