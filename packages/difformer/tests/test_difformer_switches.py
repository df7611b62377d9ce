"""Every legacy / compatibility switch of the ``difformer`` commands, tested by what it does in a small real run.

A run of one epoch logs ``train_loss`` = the loss of the freshly initialised model (one full-batch step per epoch),
and its exported model is the one the validation loss was computed with. Each test recomputes those numbers here,
from formulas written out in this file and the switch's *documented* meaning (typed below, not read from our
config), and checks that the command gives them; that the switch changes the config in the fields it names and no
other; and that the switch matters on the data used (its number differs from the default's), so an unwired or
miswired switch fails. Graphs carry edge weights far from 1, so edge-count and weighted degrees differ.
"""

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from click.testing import CliRunner
from diffcore.checkpoint import load_pretrained
from diffcore.config import from_dict
from difformer import temporal
from difformer.cli import main
from difformer.config import ModelConfig, NodeConfig, TemporalConfig
from difformer.data import load_node_dataset
from difformer.datasets import load_temporal_json, temporal_split_sizes
from difformer.graph import normalized_adjacency
from difformer.models import DIFFormer
from difformer.splits import class_splits


def invoke(*args) -> None:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        out |= flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return out


def config_changes(default_dir, switched_dir) -> dict:
    """The fields of ``switched_dir/config.json`` that differ from ``default_dir``'s, with their new values."""
    a, b = (flat(json.loads((d / "config.json").read_text())) for d in (default_dir, switched_dir))
    assert a.keys() == b.keys()
    return {k: b[k] for k in b if a[k] != b[k]}


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]


def initial_model(model: ModelConfig, in_channels: int, out_channels: int, seed: int) -> DIFFormer:
    """The model a run with ``seed`` starts from (runs seed everything, then build the model)."""
    set_seed(seed)
    return DIFFormer(in_channels=in_channels, out_channels=out_channels, **dataclasses.asdict(model))


# ------------------------------------------------------------------------------------------------ node


@pytest.fixture(scope="module")
def weighted_graph(tmp_path_factory):
    """A 60-node graph file with edge weights in [0.1, 3] and labels that depend on the features."""
    g = torch.Generator().manual_seed(0)
    n = 60
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    edge_index = torch.randint(0, n, (2, 180), generator=g)
    weight = 0.1 + 2.9 * torch.rand(180, generator=g)
    path = tmp_path_factory.mktemp("graph") / "weighted.npz"
    np.savez(path, x=x.numpy(), y=y.numpy(), edge_index=edge_index.numpy(), edge_weight=weight.numpy())
    return path


NODE_ARGS = ("--runs", 2, "--epochs", 1, "--dropout", 0, "--set", "model.num_layers=2", "--set",
             "model.hidden_channels=8", "--set", "label_per_class=5", "--set", "valid_num=20", "--set", "test_num=20")


def node_run(tmp_path, graph, name, *flags):
    out = tmp_path / name
    invoke("node", "--dataset", graph, *NODE_ARGS, *flags, "--output-dir", out)
    return out


def node_first_loss(config: NodeConfig, graph, run: int, split_index: int) -> float:
    """Cross-entropy of run ``run``'s initial model on the training nodes of class split ``split_index``."""
    data = load_node_dataset(str(graph)).data
    splits = class_splits(data.y, 5, 20, 20, 2, seed=config.train.seed)
    train = splits[split_index][0]
    model = initial_model(config.model, data.num_features, 3, config.train.seed + run)
    with torch.no_grad():
        return F.cross_entropy(model(data.x, data.edge_index, data.edge_weight)[train], data.y[train]).item()


# flags → (the config fields the switch documents, the split run 1 trains on, the model fields it changes)
NODE_SWITCHES = {
    "reuse-first-split": (["--reuse-first-split"], {"reuse_first_split": True}, 0, {}),
    "degree-norm-count": (["--degree-norm", "count"], {"model.degree_norm": "count"}, 1, {"degree_norm": "count"}),
    "qk-norm-row": (["--qk-norm", "row"], {"model.qk_norm": "row"}, 1, {"qk_norm": "row"}),
    "reproduce-original": (["--reproduce-original"], {"reuse_first_split": True, "model.degree_norm": "count"}, 0,
                           {"degree_norm": "count"}),
}


@pytest.fixture(scope="module")
def node_default(tmp_path_factory, weighted_graph):
    return node_run(tmp_path_factory.mktemp("node"), weighted_graph, "default")


def test_node_default_trains_on_a_fresh_split_with_weighted_degrees(node_default, weighted_graph):
    config = from_dict(NodeConfig, json.loads((node_default / "config.json").read_text()))
    assert (config.reuse_first_split, config.model.degree_norm, config.model.qk_norm) == (False, "weighted", "global")
    for run in (0, 1):
        logged = metrics(node_default / f"run-{run}")[0]["train_loss"]
        assert logged == pytest.approx(node_first_loss(config, weighted_graph, run, run), rel=1e-5)


@pytest.mark.parametrize("switch", list(NODE_SWITCHES))
def test_node_switch_changes_what_it_names(switch, node_default, weighted_graph, tmp_path):
    flags, fields, split_index, model_changes = NODE_SWITCHES[switch]
    out = node_run(tmp_path, weighted_graph, switch, *flags)
    assert config_changes(node_default, out) == fields  # and nothing else
    default = from_dict(NodeConfig, json.loads((node_default / "config.json").read_text()))
    expected_config = dataclasses.replace(default, model=dataclasses.replace(default.model, **model_changes))
    expected = node_first_loss(expected_config, weighted_graph, 1, split_index)
    assert metrics(out / "run-1")[0]["train_loss"] == pytest.approx(expected, rel=1e-5)
    assert abs(expected - metrics(node_default / "run-1")[0]["train_loss"]) > 1e-3  # the switch matters here


# -------------------------------------------------------------------------------------------- temporal


@pytest.fixture(scope="module")
def weighted_signal(tmp_path_factory):
    """A pedalme-layout JSON: 6 nodes, 44 time steps (40 snapshots: 8/8/24), a static graph with weights far
    from 1 (self-loops included; no node without incoming edges)."""
    rng = np.random.default_rng(0)
    edges = [[i, i] for i in range(6)] + [[i, (i + 1) % 6] for i in range(6)] + [[i, (i + 3) % 6] for i in range(6)]
    series = np.cumsum(rng.normal(size=(44, 6)), axis=0) * 0.3 + rng.normal(size=6)
    path = tmp_path_factory.mktemp("signal") / "weighted.json"
    path.write_text(json.dumps({"edges": edges, "weights": rng.uniform(0.1, 3.0, len(edges)).tolist(),
                                "X": series.tolist()}))
    return path


TEMPORAL_ARGS = ("--runs", 1, "--set", "model.dropout=0")


def temporal_losses(model: DIFFormer, signal, steps: range, degree: str) -> tuple[float, float]:
    """(per-node MSE, the original's broadcast MSE) of ``model`` on ``steps``, averaged over snapshots; Â with
    ``degree`` and the broadcast written as the explicit [N, 1] − [N] difference."""
    edge_index, weight = signal.graph(0)
    adj = normalized_adjacency(edge_index, signal.num_nodes, weight, degree)
    x, y = signal.features[steps.start:steps.stop], signal.targets[steps.start:steps.stop]
    with torch.no_grad():
        pred = model(x, adj).squeeze(-1)
    per_node = (pred - y).square().mean()
    broadcast = torch.stack([(p[:, None] - t[None, :]).square().mean() for p, t in zip(pred, y, strict=True)]).mean()
    return per_node.item(), broadcast.item()


# flags → (the config fields the switch documents, the degree and the loss a run then trains and selects on)
TEMPORAL_SWITCHES = {
    "default": ([], {}, "weighted", "per_node"),
    "legacy-broadcast-mse": (["--legacy-broadcast-mse"], {"legacy_broadcast_mse": True}, "weighted", "broadcast"),
    "degree-norm-count": (["--degree-norm", "count"], {"model.degree_norm": "count"}, "count", "per_node"),
    "legacy-cumulative-patience": (["--legacy-cumulative-patience"], {"legacy_cumulative_patience": True},
                                   "weighted", "per_node"),
    "reproduce-original": (["--reproduce-original"], {"legacy_broadcast_mse": True, "legacy_cumulative_patience": True,
                                                      "model.degree_norm": "count"}, "count", "broadcast"),
}


@pytest.fixture(scope="module")
def temporal_default(tmp_path_factory, weighted_signal):
    out = tmp_path_factory.mktemp("temporal") / "default"
    invoke("temporal", "--dataset", weighted_signal, *TEMPORAL_ARGS, "--epochs", 1, "--output-dir", out)
    return out


@pytest.mark.parametrize("switch", list(TEMPORAL_SWITCHES))
def test_temporal_switch_changes_the_loss_it_names(switch, temporal_default, weighted_signal, tmp_path):
    """One epoch: ``train_loss`` is the chosen loss of the initial model on the 8 training snapshots, ``val_loss``
    that of the exported (selected) model on the 8 validation snapshots, under the chosen degree."""
    flags, fields, degree, loss = TEMPORAL_SWITCHES[switch]
    out = tmp_path / "out"
    invoke("temporal", "--dataset", weighted_signal, *TEMPORAL_ARGS, "--epochs", 1, *flags, "--output-dir", out)
    assert config_changes(temporal_default, out) == fields  # and nothing else
    signal = load_temporal_json(str(weighted_signal))
    n_train, n_val, _ = temporal_split_sizes(signal.num_snapshots)
    default = from_dict(TemporalConfig, json.loads((temporal_default / "config.json").read_text()))
    model = initial_model(default.model, 4, 1, default.train.seed)  # Â is passed, so its degree_norm is unused
    first = {(d, name): value for d in ("weighted", "count")
             for name, value in zip(("per_node", "broadcast"), temporal_losses(model, signal, range(n_train), d),
                                    strict=True)}
    selected = load_pretrained(out / "run-0" / "model").eval()
    val_steps = range(n_train, n_train + n_val)
    val = dict(zip(("per_node", "broadcast"), temporal_losses(selected, signal, val_steps, degree), strict=True))
    record = metrics(out / "run-0")[0]
    assert record["train_loss"] == pytest.approx(first[degree, loss], rel=1e-5)
    assert record["val_loss"] == pytest.approx(val[loss], rel=1e-5)
    # the four (degree, loss) combinations are apart on this signal, so a wrong wire cannot pass
    assert all(abs(value - first[degree, loss]) > 1e-3 for key, value in first.items() if key != (degree, loss))


SCRIPT = [1.0, 2.0, 0.5, 3.0, 0.25, 5.0, 6.0, 7.0, 8.0, 9.0]  # exact in float32


@pytest.mark.parametrize("flags,epochs", [([], 8), (["--legacy-cumulative-patience"], 6),
                                          (["--reproduce-original"], 6)])
def test_temporal_patience_counter(flags, epochs, weighted_signal, tmp_path, monkeypatch):
    """Scripted validation losses 1, 2, 0.5, 3, 0.25, 5, 6, 7, 8, 9 with patience 3: the default resets its counter
    at the improvements of epochs 3 and 5 and stops after epochs 6, 7, 8; the original never resets it and stops
    at its third non-improving epoch (2, 4, 6). Both select epoch 5."""
    script = iter(SCRIPT)
    monkeypatch.setattr(temporal, "_eval_fn",
                        lambda broadcast: lambda model, batch: {"loss": torch.tensor([next(script)])})
    out = tmp_path / "out"
    invoke("temporal", "--dataset", weighted_signal, *TEMPORAL_ARGS, "--epochs", 10, "--set",
           "train.early_stopping_patience=3", *flags, "--output-dir", out)
    results = json.loads((out / "results.json").read_text())
    assert results["epochs"] == [epochs] and results["best_epoch"] == [5]
    assert [r["val_loss"] for r in metrics(out / "run-0")] == SCRIPT[:epochs]
