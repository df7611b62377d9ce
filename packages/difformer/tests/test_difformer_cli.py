"""The commands end to end on small inputs: run directories, results.json keys, exported models, resume."""

import json

import pytest
import torch
from click.testing import CliRunner
from diffcore.checkpoint import load_pretrained
from diffcore.testing import require_shared_data
from difformer.cli import main

SMALL_SPLIT = ("--set", "label_per_class=5", "--set", "valid_num=20", "--set", "test_num=20")


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def results(folder):
    return json.loads((folder / "results.json").read_text())


def test_node_on_a_graph_file_writes_runs_results_and_models(tmp_path, make_graph_file):
    make_graph_file(tmp_path / "g.npz", n=60)
    out = tmp_path / "out"
    printed = invoke("node", "--dataset", tmp_path / "g.npz", "--runs", 2, "--epochs", 4, "--output-dir", out,
                     "--set", "model.num_layers=2", "--set", "lr=0.01", *SMALL_SPLIT).output
    assert "test" in printed and str(out) in printed
    res = results(out)
    assert res["split"] == "class" and len(res["test_acc"]) == 2 and res["split_sizes"] == [15, 20, 20]
    for key in ("test_acc_mean", "test_acc_std", "val_acc", "best_epoch", "seconds_per_epoch", "params"):
        assert key in res
    model = load_pretrained(out / "run-0" / "model")
    assert model.config["num_layers"] == 2 and model.config["in_channels"] == 6


def test_node_uses_the_masks_of_a_graph_file(tmp_path, make_graph_file):
    make_graph_file(tmp_path / "g.npz", n=40, masks=True)
    invoke("node", "--dataset", tmp_path / "g.npz", "--runs", 2, "--epochs", 2, "--output-dir", tmp_path / "out",
           "--set", "model.num_layers=1")
    res = results(tmp_path / "out")
    assert res["split"] == "given" and res["split_sizes"] == [20, 10, 10]


def test_node_minibatch_path(tmp_path, make_graph_file):
    make_graph_file(tmp_path / "g.npz", n=80)
    invoke("node", "--dataset", tmp_path / "g.npz", "--runs", 1, "--epochs", 3, "--batch-size", 20,
           "--output-dir", tmp_path / "out", "--set", "model.num_layers=2", *SMALL_SPLIT)
    res = results(tmp_path / "out")
    assert res["minibatch"] and json.loads((tmp_path / "out" / "config.json").read_text())["train"]["batch_size"] == 20
    steps = [json.loads(line)["step"] for line in (tmp_path / "out" / "run-0" / "metrics.jsonl").open()]
    assert steps == [4, 8, 12]


class Crash(RuntimeError):
    """Stands for a killed process."""


def test_node_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, make_graph_file, monkeypatch):
    import difformer.node as node

    make_graph_file(tmp_path / "g.npz", n=60)
    args = ["node", "--dataset", tmp_path / "g.npz", "--runs", 2, "--epochs", 6, "--set", "model.num_layers=2",
            "--set", "train.save_every=2", "--set", "model.dropout=0.3", *SMALL_SPLIT]
    invoke(*args, "--output-dir", tmp_path / "full")
    calls = {"n": 0}
    original = node.node_loss

    def crashing(out, y):
        calls["n"] += 1
        if calls["n"] == 2 * 6 + 2 * 4 + 1:  # training + validation loss per epoch; run 1, epoch 5 (saved: 4)
            raise Crash
        return original(out, y)

    monkeypatch.setattr(node, "node_loss", crashing)
    with pytest.raises(Crash):
        CliRunner().invoke(main, [str(a) for a in args] + ["--output-dir", str(tmp_path / "cut")],
                           catch_exceptions=False)
    monkeypatch.setattr(node, "node_loss", original)
    assert (tmp_path / "cut" / "run-0" / "result.json").exists() and not (tmp_path / "cut" / "results.json").exists()
    invoke(*args, "--resume", tmp_path / "cut")
    full, cut = results(tmp_path / "full"), results(tmp_path / "cut")
    assert cut["test_acc"] == full["test_acc"] and cut["best_epoch"] == full["best_epoch"]
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "cut" / "run-1" / "metrics.jsonl").open()]
    assert epochs == [1, 2, 3, 4, 5, 6]


def test_dry_run_prints_the_resolved_config_and_writes_nothing(tmp_path, make_graph_file):
    make_graph_file(tmp_path / "g.npz")
    out = invoke("node", "--dataset", tmp_path / "g.npz", "--kernel", "sigmoid", "--reproduce-original",
                 "--block-size", 7, "--dry-run", "--output-dir", tmp_path / "out", *SMALL_SPLIT).output
    config = json.loads(out[out.index("{"):])
    assert config["model"]["kernel"] == "sigmoid" and config["model"]["block_size"] == 7
    assert config["reuse_first_split"] and config["model"]["degree_norm"] == "count"
    assert not (tmp_path / "out").exists()


def test_presets_cover_the_released_table():
    out = invoke("presets").output
    for name in ("cora-s", "cora-a", "citeseer-a", "pubmed-a", "proteins-s", "pokec-s", "film-a", "squirrel-s",
                 "chameleon-a", "20news-s", "stl10-a", "cifar10-s", "chickenpox-a-graph", "covid-s", "wikimath-a"):
        assert name in out


def test_instances_digits_with_and_without_knn(tmp_path):
    invoke("instances", "--dataset", "digits", "--runs", 1, "--epochs", 3, "--labels-per-class", 5,
           "--output-dir", tmp_path / "plain", "--set", "model.hidden_channels=16")
    invoke("instances", "--dataset", "digits", "--runs", 1, "--epochs", 3, "--labels-per-class", 5, "--knn", 3,
           "--output-dir", tmp_path / "knn", "--set", "model.hidden_channels=16")
    plain, knn = results(tmp_path / "plain"), results(tmp_path / "knn")
    assert plain["graph"] == "none" and plain["num_edges"] == 0 and plain["split_sizes"] == [50, 300, 1797 - 350]
    assert knn["graph"] == "knn-3" and knn["num_edges"] > 1797 * 3


def test_instances_features_file(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "emb.npz", x=rng.normal(size=(300, 5)).astype(np.float32), y=rng.integers(0, 3, 300))
    invoke("instances", "--dataset", tmp_path / "emb.npz", "--runs", 1, "--epochs", 2, "--labels-per-class", 10,
           "--set", "valid_num=50", "--set", "test_num=100", "--output-dir", tmp_path / "out",
           "--set", "model.hidden_channels=8")
    assert results(tmp_path / "out")["split_sizes"] == [30, 50, 100]  # test_num honoured (quirk 14)


def test_temporal_chickenpox_short_run(tmp_path):
    """The reported test metrics are those of the exported (selected) model on the 311 test snapshots: the
    per-node MSE and the original's broadcast MSE, written out here as the explicit [N, 1] − [N] difference."""
    from difformer.datasets import load_temporal_json

    root = require_shared_data("temporal/chickenpox.json")
    invoke("temporal", "--dataset", "chickenpox", "--data-root", root, "--runs", 2, "--epochs", 3,
           "--output-dir", tmp_path / "out")
    res = results(tmp_path / "out")
    assert res["snapshots"] == [103, 103, 311] and len(res["test_mse"]) == 2
    signal = load_temporal_json("chickenpox", root, download=False)
    x, y = signal.features[206:], signal.targets[206:]
    for run in (0, 1):
        model = load_pretrained(tmp_path / "out" / f"run-{run}" / "model").eval()
        with torch.no_grad():
            pred = model(x, *signal.graph(0)).squeeze(-1)
        broadcast = (pred[:, :, None] - y[:, None, :]).square().mean((1, 2)).mean()
        assert res["test_mse"][run] == pytest.approx((pred - y).square().mean().item(), rel=1e-5)
        assert res["test_broadcast_mse"][run] == pytest.approx(broadcast.item(), rel=1e-5)
