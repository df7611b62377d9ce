"""Every preset pinned field by field against the spec's table of the released ``run.sh`` settings
(``../shared/specs/difformer.md`` §4.3, with §3 for splits, lags and update modes). The expected values are typed
here from the spec, never read from our config, so a wrong preset value fails with the field named."""

import pytest
from difformer.config import INSTANCE_PRESETS, NODE_PRESETS, TEMPORAL_PRESETS

# Shared by every released setting (§4.3 heading, §2): Adam, one head, α 0.5, no source term, released Q/K norm.
COMMON = {"heads": 1, "alpha": 0.5, "source": False, "qk_norm": "global"}


def model_fields(config) -> dict:
    m = config.model
    return {"kernel": m.kernel, "lr": config.lr, "wd": config.weight_decay, "dropout": m.dropout,
            "layers": m.num_layers, "hidden": m.hidden_channels, "graph": m.use_graph, "ln": m.use_bn,
            "residual": m.use_residual, "wv": m.use_weight, "gw": m.graph_weight, "epochs": config.train.epochs,
            "runs": config.runs, "seed": config.train.seed, "heads": m.num_heads, "alpha": m.alpha,
            "source": m.use_source, "qk_norm": m.qk_norm}


def row(kernel, lr, wd, dropout, layers, hidden, switches, epochs, runs, seed, **extra) -> dict:
    """One line of the spec's table; ``switches`` as the table writes them (graph, LN, residual, W_V, gw)."""
    words = switches.split()
    gw = next((float(w[2:]) for w in words if w.startswith("gw")), -1.0)
    return {"kernel": kernel, "lr": lr, "wd": wd, "dropout": dropout, "layers": layers, "hidden": hidden,
            "graph": "graph" in words, "ln": "LN" in words, "residual": "residual" in words,
            "wv": "use_weight" in words, "gw": gw, "epochs": epochs, "runs": runs, "seed": seed, **COMMON, **extra}


# §3.2: 20 per class / 500 / 1000, a class split; §3.3: main-batch.py (B, eval_step); §3.4: the given splits.
CLASS = {"split": "class", "label_per_class": 20, "valid_num": 500, "test_num": 1000, "minibatch": False,
         "eval_every": 1, "metric": "acc", "directed": False}
GIVEN = {**CLASS, "split": "given"}
MAIN = "graph LN residual"

NODE_SPEC = {
    "cora-s": row("simple", 1e-3, 0.01, 0.2, 8, 64, MAIN, 500, 5, 123, dataset="cora", **CLASS),
    "cora-a": row("sigmoid", 1e-3, 0.1, 0.0, 8, 64, MAIN, 500, 5, 123, dataset="cora", **CLASS),
    "citeseer-s": row("simple", 1e-3, 1.0, 0.2, 4, 64, MAIN, 500, 5, 123, dataset="citeseer", **CLASS),
    "citeseer-a": row("sigmoid", 1e-3, 1.0, 0.2, 4, 32, MAIN, 500, 5, 123, dataset="citeseer", **CLASS),
    "pubmed-s": row("simple", 1e-3, 1e-4, 0.2, 8, 64, MAIN, 500, 5, 123, dataset="pubmed", **CLASS),
    "pubmed-a": row("sigmoid", 1e-3, 0.1, 0.5, 4, 64, MAIN, 500, 5, 123, dataset="pubmed",
                    **{**CLASS, "minibatch": True, "batch_size": 10000}),
    "proteins-s": row("simple", 1e-2, 0.0, 0.0, 3, 64, "graph LN residual use_weight", 1000, 5, 123,
                      dataset="ogbn-proteins", **{**CLASS, "split": "ogb", "minibatch": True, "batch_size": 10000,
                                                  "eval_every": 9, "metric": "rocauc", "directed": True}),
    "pokec-s": row("simple", 1e-2, 0.0, 0.0, 3, 128, "graph LN residual use_weight", 500, 5, 123, dataset="pokec",
                   **{**CLASS, "split": "random", "train_prop": 0.5, "valid_prop": 0.25, "minibatch": True,
                      "batch_size": 100000, "eval_every": 9}),
    "film-s": row("simple", 1e-3, 0.1, 0.5, 2, 64, "LN residual", 300, 5, 42, dataset="film", **GIVEN),
    "film-a": row("sigmoid", 1e-3, 0.05, 0.5, 1, 64, "LN residual", 300, 5, 42, dataset="film", **GIVEN),
    "squirrel-s": row("simple", 1e-2, 1e-4, 0.5, 2, 64, "graph gw0.8", 300, 10, 42, dataset="squirrel", **GIVEN),
    "squirrel-a": row("sigmoid", 5e-2, 5e-4, 0.5, 2, 64, "graph gw0.8", 300, 10, 42, dataset="squirrel", **GIVEN),
    "chameleon-s": row("simple", 1e-2, 1e-4, 0.2, 2, 128, "graph gw0.7", 300, 10, 42, dataset="chameleon", **GIVEN),
    "chameleon-a": row("sigmoid", 1e-2, 1e-3, 0.3, 3, 128, "graph gw0.8 use_weight", 300, 10, 42,
                       dataset="chameleon", **GIVEN),
}
# not in the paper: a user's graph FILE gets the Cora settings and its own masks when it has them
NODE_SPEC["file-s"] = {**NODE_SPEC["cora-s"], "dataset": "FILE", "split": "auto"}
NODE_SPEC["file-a"] = {**NODE_SPEC["cora-a"], "dataset": "FILE", "split": "auto"}


def node_fields(config, expected: dict) -> dict:
    fields = {**model_fields(config), "dataset": config.dataset, "split": config.split,
              "label_per_class": config.label_per_class, "valid_num": config.valid_num, "test_num": config.test_num,
              "minibatch": config.minibatch, "eval_every": config.train.eval_every, "metric": config.metric,
              "directed": config.directed}
    if "batch_size" in expected:
        fields["batch_size"] = config.train.batch_size
    if "train_prop" in expected:
        fields |= {"train_prop": config.train_prop, "valid_prop": config.valid_prop}
    return fields


# §3.5: image/text, no graph, 600 epochs, k per class (the first of the paper's three: STL/CIFAR 10, 20News 100),
# 1000 valid, the rest test.
IMAGE_TEXT = "LN residual"
SPLIT_IT = {"valid_num": 1000, "test_num": None}
INSTANCE_SPEC = {
    "stl10-s": row("simple", 5e-4, 0.1, 0.0, 2, 400, IMAGE_TEXT, 600, 5, 123, dataset="stl10", label_per_class=10,
                   **SPLIT_IT),
    "stl10-a": row("sigmoid", 5e-4, 0.1, 0.0, 2, 400, IMAGE_TEXT, 600, 5, 123, dataset="stl10", label_per_class=10,
                   **SPLIT_IT),
    "cifar10-s": row("simple", 1e-4, 0.1, 0.0, 2, 300, IMAGE_TEXT, 600, 5, 123, dataset="cifar10",
                     label_per_class=10, **SPLIT_IT),
    "cifar10-a": row("sigmoid", 5e-4, 0.1, 0.0, 2, 300, IMAGE_TEXT, 600, 5, 123, dataset="cifar10",
                     label_per_class=10, **SPLIT_IT),
    "20news-s": row("simple", 5e-4, 0.1, 0.0, 2, 300, IMAGE_TEXT, 600, 5, 42, dataset="20news", label_per_class=100,
                    **SPLIT_IT),
    "20news-a": row("sigmoid", 5e-4, 0.1, 0.0, 2, 300, IMAGE_TEXT, 600, 5, 123, dataset="20news",
                    label_per_class=100, **SPLIT_IT),
}
# not in the paper: embedded digits (20News widths, 10 per class, 300 valid of 1,797), a features FILE (STL settings)
INSTANCE_SPEC |= {
    "digits-s": row("simple", 5e-4, 0.1, 0.0, 2, 300, IMAGE_TEXT, 600, 5, 123, dataset="digits", label_per_class=10,
                    valid_num=300, test_num=None),
    "digits-a": row("sigmoid", 5e-4, 0.1, 0.0, 2, 300, IMAGE_TEXT, 600, 5, 123, dataset="digits", label_per_class=10,
                    valid_num=300, test_num=None),
    "file-s": {**INSTANCE_SPEC["stl10-s"], "dataset": "FILE"},
    "file-a": {**INSTANCE_SPEC["stl10-a"], "dataset": "FILE"},
}


def instance_fields(config) -> dict:
    return {**model_fields(config), "dataset": config.dataset, "label_per_class": config.label_per_class,
            "valid_num": config.valid_num, "test_num": config.test_num}


# §3.6: chronological 20/20/60, 200 epochs with early stopping 20, hidden 4, 2 layers, the given graph; lags 4/8/14;
# wikimath updates once per snapshot ("incremental"), the others once per epoch.
def temporal_row(dataset, kernel, lr, wd, dropout, graph, lags, update="cumulative"):
    return row(kernel, lr, wd, dropout, 2, 4, ("graph " if graph else "") + "LN residual", 200, 5, 123,
               dataset=dataset, lags=lags, update=update, train_ratio=0.2, val_ratio=0.2, graph_kind="given",
               patience=20, legacy_broadcast_mse=False, legacy_cumulative_patience=False)


TEMPORAL_SPEC = {
    "chickenpox-s-graph": temporal_row("chickenpox", "simple", 1e-2, 0.0, 0.2, True, 4),
    "chickenpox-s": temporal_row("chickenpox", "simple", 1e-2, 0.0, 0.2, False, 4),
    "chickenpox-a-graph": temporal_row("chickenpox", "sigmoid", 5e-3, 0.0, 0.2, True, 4),
    "chickenpox-a": temporal_row("chickenpox", "sigmoid", 1e-2, 5e-3, 0.2, False, 4),
    "covid-s-graph": temporal_row("covid", "simple", 1e-2, 0.0, 0.2, True, 8),
    "covid-s": temporal_row("covid", "simple", 1e-2, 5e-3, 0.2, False, 8),
    "covid-a-graph": temporal_row("covid", "sigmoid", 1e-2, 5e-3, 0.5, True, 8),
    "covid-a": temporal_row("covid", "sigmoid", 5e-3, 5e-3, 0.2, False, 8),
    **{f"wikimath-{k}{g}": temporal_row("wikimath", kernel, 5e-3, 0.0, 0.0, bool(g), 14, "incremental")
       for k, kernel in (("s", "simple"), ("a", "sigmoid")) for g in ("-graph", "")},
}
# not in the paper: a PyG-Temporal JSON FILE gets the chickenpox settings
TEMPORAL_SPEC |= {f"file-{name[len('chickenpox-'):]}": {**TEMPORAL_SPEC[name], "dataset": "FILE"}
                  for name in ("chickenpox-s-graph", "chickenpox-s", "chickenpox-a-graph", "chickenpox-a")}


def temporal_fields(config) -> dict:
    return {**model_fields(config), "dataset": config.dataset, "lags": config.lags, "update": config.update,
            "train_ratio": config.train_ratio, "val_ratio": config.val_ratio, "graph_kind": config.graph,
            "patience": config.train.early_stopping_patience, "legacy_broadcast_mse": config.legacy_broadcast_mse,
            "legacy_cumulative_patience": config.legacy_cumulative_patience}


def test_every_preset_is_pinned():
    assert set(NODE_PRESETS) == set(NODE_SPEC)
    assert set(INSTANCE_PRESETS) == set(INSTANCE_SPEC)
    assert set(TEMPORAL_PRESETS) == set(TEMPORAL_SPEC)


@pytest.mark.parametrize("name", sorted(NODE_SPEC))
def test_node_preset(name):
    assert node_fields(NODE_PRESETS[name], NODE_SPEC[name]) == NODE_SPEC[name]


@pytest.mark.parametrize("name", sorted(INSTANCE_SPEC))
def test_instances_preset(name):
    assert instance_fields(INSTANCE_PRESETS[name]) == INSTANCE_SPEC[name]


@pytest.mark.parametrize("name", sorted(TEMPORAL_SPEC))
def test_temporal_preset(name):
    assert temporal_fields(TEMPORAL_PRESETS[name]) == TEMPORAL_SPEC[name]
