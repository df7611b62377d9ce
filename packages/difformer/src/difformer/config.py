"""Configs and the released settings of every DIFFormer experiment (spec §4.3, the ``run.sh`` files).

Torch-free, so the CLI resolves, validates and prints a config before importing torch. A preset is chosen
from the dataset and the kernel (``cora`` + ``simple`` → ``cora-s``); every option given overrides its field
only, and ``--set key=value`` reaches the rest (``--set model.dropout=0.3``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from diffcore.config import Presets, require
from diffcore.train import TrainConfig

Kernel = Literal["simple", "sigmoid"]
KERNEL_SUFFIX = {"simple": "s", "sigmoid": "a"}  # DIFFormer-s / DIFFormer-a


@dataclass(frozen=True)
class ModelConfig:
    """:class:`~difformer.models.DIFFormer` switches (the original's flags; spec §2, §4.1).

    ``graph_weight``: −1 sums attention and graph branch, g ∈ (0, 1] mixes them (1 − g)·attn + g·G (quirk 7).
    ``qk_norm``: ``global`` Frobenius norm (released code) or ``row`` (paper notation), simple kernel only.
    ``degree_norm``: ``weighted`` (PyG ``gcn_norm``) or ``count`` (original, quirk 6).
    ``block_size``: query rows per sigmoid block, None = auto (about 2²⁴ weights per block).
    """

    hidden_channels: int = 64
    num_layers: int = 2
    num_heads: int = 1
    kernel: Kernel = "simple"
    alpha: float = 0.5
    dropout: float = 0.0
    use_bn: bool = True
    use_residual: bool = True
    use_graph: bool = True
    use_weight: bool = False
    use_source: bool = False
    graph_weight: float = -1.0
    qk_norm: Literal["global", "row"] = "global"
    degree_norm: Literal["weighted", "count"] = "weighted"
    block_size: int | None = None

    def check(self) -> None:
        require(self.hidden_channels >= 1, f"model.hidden_channels must be positive, got {self.hidden_channels}")
        require(self.num_layers >= 1, f"model.num_layers must be positive, got {self.num_layers}")
        require(self.num_heads >= 1, f"model.num_heads must be positive, got {self.num_heads}")
        require(0 < self.alpha <= 1, f"model.alpha (the Euler step τ) must be in (0, 1], got {self.alpha}")
        require(0 <= self.dropout < 1, f"model.dropout must be in [0, 1), got {self.dropout}")
        require(self.graph_weight == -1 or 0 < self.graph_weight <= 1,
                f"model.graph_weight must be -1 (attention + graph) or in (0, 1] (convex mix), got "
                f"{self.graph_weight}" + (" (0 is ambiguous: the original treated it as -1)"
                                          if self.graph_weight == 0 else ""))
        require(self.block_size is None or self.block_size >= 1,
                f"--block-size must be positive, got {self.block_size}")
        require(self.qk_norm == "global" or self.kernel == "simple",
                "model.qk_norm=row applies to the simple kernel only")

    def kwargs(self, in_channels: int, out_channels: int) -> dict:
        """Constructor arguments of :class:`~difformer.models.DIFFormer`."""
        return {"in_channels": in_channels, "out_channels": out_channels, **dataclasses.asdict(self)}


def _train(**kw) -> TrainConfig:
    return TrainConfig(**{"save_every": 50, "progress": False, **kw})


# ----------------------------------------------------------------------------------------- node


NODE_DATASETS = ("cora", "citeseer", "pubmed", "ogbn-proteins", "pokec", "film", "chameleon", "squirrel")


@dataclass(frozen=True)
class NodeConfig:
    """``difformer node``: node classification (spec §3.1–3.4).

    ``split``: ``class`` (``label_per_class`` per class, then ``valid_num``/``test_num`` random nodes),
    ``random`` (``train_prop``/``valid_prop`` of the labelled nodes), ``given`` (the dataset's masks, one per run,
    cycling), ``ogb`` (the official split) or ``auto`` (``given`` if the data has masks, else ``class``).
    A fresh split is drawn for every run unless
    ``reuse_first_split`` (the original's Cora/CiteSeer/PubMed behaviour, quirk 2).
    ``minibatch``: train on random node chunks of ``train.batch_size`` nodes (induced subgraphs, attention inside
    the chunk), evaluate on the full graph every ``train.eval_every`` epochs on ``eval_device`` (quirks 11, 12).
    """

    dataset: str = "cora"
    model: ModelConfig = field(default_factory=ModelConfig)
    lr: float = 1e-3
    weight_decay: float = 1e-2
    runs: int = 5
    split: Literal["class", "random", "given", "ogb", "auto"] = "class"
    label_per_class: int = 20
    valid_num: int = 500
    test_num: int = 1000
    train_prop: float = 0.5
    valid_prop: float = 0.25
    reuse_first_split: bool = False
    directed: bool = False
    metric: Literal["acc", "rocauc"] = "acc"
    minibatch: bool = False
    eval_device: Literal["cpu", "auto"] = "cpu"
    export: bool = True
    train: TrainConfig = field(default_factory=lambda: _train(epochs=500, seed=123, batch_size=10000,
                                                              monitor="full_val_acc", monitor_mode="max",
                                                              restore_best=True))

    def check(self) -> None:
        require(self.runs >= 1, f"--runs must be positive, got {self.runs}")
        require(self.lr > 0, f"lr must be positive, got {self.lr}")
        require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        require(self.label_per_class >= 1, f"label_per_class must be positive, got {self.label_per_class}")
        require(self.valid_num >= 1 and self.test_num >= 1, "valid_num and test_num must be positive")
        require(0 < self.train_prop < 1 and 0 < self.valid_prop < 1 and self.train_prop + self.valid_prop < 1,
                f"train_prop + valid_prop must leave test nodes (got {self.train_prop} + {self.valid_prop})")
        require(self.train.epochs >= 1, f"--epochs must be positive, got {self.train.epochs}")
        require(self.train.monitor == f"full_val_{self.metric}" and self.train.monitor_mode == "max",
                f"node runs select on validation {self.metric}: train.monitor must be full_val_{self.metric} (max)")
        require(self.train.restore_best, "node runs report the best-validation model: train.restore_best must be true")
        require(self.train.batch_size >= 1, f"--batch-size must be positive, got {self.train.batch_size}")


def _node(dataset: str, kernel: Kernel, lr: float, wd: float, dropout: float, layers: int, hidden: int, *,
          epochs: int = 500, seed: int = 123, runs: int = 5, graph: bool = True, bn: bool = True,
          residual: bool = True, weight: bool = False, gw: float = -1.0, split: str = "class",
          minibatch: bool = False, batch: int = 10000, eval_every: int = 1, metric: str = "acc",
          directed: bool = False) -> NodeConfig:
    model = ModelConfig(hidden_channels=hidden, num_layers=layers, kernel=kernel, dropout=dropout, use_bn=bn,
                        use_residual=residual, use_graph=graph, use_weight=weight, graph_weight=gw)
    train = _train(epochs=epochs, seed=seed, batch_size=batch, eval_every=eval_every, monitor=f"full_val_{metric}",
                   monitor_mode="max", restore_best=True)
    return NodeConfig(dataset=dataset, model=model, lr=lr, weight_decay=wd, runs=runs, split=split, metric=metric,
                      minibatch=minibatch, directed=directed, train=train)


_RUN = "node classification/run.sh"
NODE_PRESETS: Presets[NodeConfig] = Presets({
    "cora-s": (_node("cora", "simple", 1e-3, 0.01, 0.2, 8, 64), _RUN),
    "cora-a": (_node("cora", "sigmoid", 1e-3, 0.1, 0.0, 8, 64), _RUN),
    "citeseer-s": (_node("citeseer", "simple", 1e-3, 1.0, 0.2, 4, 64), _RUN),
    "citeseer-a": (_node("citeseer", "sigmoid", 1e-3, 1.0, 0.2, 4, 32), _RUN),
    "pubmed-s": (_node("pubmed", "simple", 1e-3, 1e-4, 0.2, 8, 64), _RUN),
    "pubmed-a": (_node("pubmed", "sigmoid", 1e-3, 0.1, 0.5, 4, 64, minibatch=True), f"{_RUN} (main-batch.py, B 10000)"),
    "proteins-s": (_node("ogbn-proteins", "simple", 1e-2, 0.0, 0.0, 3, 64, weight=True, epochs=1000, split="ogb",
                         minibatch=True, eval_every=9, metric="rocauc", directed=True),
                   f"{_RUN} (main-batch.py, B 10000, eval_step 9)"),
    "pokec-s": (_node("pokec", "simple", 1e-2, 0.0, 0.0, 3, 128, weight=True, split="random", minibatch=True,
                      batch=100000, eval_every=9), f"{_RUN} (main-batch.py, B 100000, eval_step 9, rand_split)"),
    "film-s": (_node("film", "simple", 1e-3, 0.1, 0.5, 2, 64, epochs=300, seed=42, graph=False, split="given"), _RUN),
    "film-a": (_node("film", "sigmoid", 1e-3, 0.05, 0.5, 1, 64, epochs=300, seed=42, graph=False, split="given"),
               _RUN),
    "squirrel-s": (_node("squirrel", "simple", 1e-2, 1e-4, 0.5, 2, 64, epochs=300, seed=42, runs=10, bn=False,
                         residual=False, gw=0.8, split="given"), _RUN),
    "squirrel-a": (_node("squirrel", "sigmoid", 5e-2, 5e-4, 0.5, 2, 64, epochs=300, seed=42, runs=10, bn=False,
                         residual=False, gw=0.8, split="given"), _RUN),
    "chameleon-s": (_node("chameleon", "simple", 1e-2, 1e-4, 0.2, 2, 128, epochs=300, seed=42, runs=10, bn=False,
                          residual=False, gw=0.7, split="given"), _RUN),
    "chameleon-a": (_node("chameleon", "sigmoid", 1e-2, 1e-3, 0.3, 3, 128, epochs=300, seed=42, runs=10, bn=False,
                          residual=False, gw=0.8, weight=True, split="given"), _RUN),
    # a user's graph file: the Cora settings, its own masks when it has them (else 20 per class / 500 / 1000)
    "file-s": (_node("FILE", "simple", 1e-3, 0.01, 0.2, 8, 64, split="auto"), "cora-s settings for --dataset FILE"),
    "file-a": (_node("FILE", "sigmoid", 1e-3, 0.1, 0.0, 8, 64, split="auto"), "cora-a settings for --dataset FILE"),
})
NODE_PRESET_PREFIX = {"ogbn-proteins": "proteins"}


def node_preset_name(dataset: str, kernel: Kernel) -> str:
    """``cora`` + ``simple`` → ``cora-s``; a path (FILE) → ``file-s``/``file-a``."""
    prefix = NODE_PRESET_PREFIX.get(dataset, dataset) if dataset in NODE_DATASETS else "file"
    return f"{prefix}-{KERNEL_SUFFIX[kernel]}"


# ------------------------------------------------------------------------------------ instances


INSTANCE_DATASETS = ("digits", "20news", "stl10", "cifar10")


@dataclass(frozen=True)
class InstancesConfig:
    """``difformer instances``: classification of independent instances (spec §3.5).

    Each run draws ``label_per_class`` training instances per class, then ``valid_num`` validation instances
    and ``test_num`` test instances (None: all the rest; quirk 14: both honoured). With ``model.use_graph`` the
    graph is scikit-learn's kNN graph (``knn`` neighbours, Euclidean, self included), symmetrised.
    """

    dataset: str = "20news"
    model: ModelConfig = field(default_factory=ModelConfig)
    lr: float = 5e-4
    weight_decay: float = 0.1
    runs: int = 5
    label_per_class: int = 100
    valid_num: int = 1000
    test_num: int | None = None
    knn: int = 5
    export: bool = True
    train: TrainConfig = field(default_factory=lambda: _train(epochs=600, seed=123, monitor="full_val_acc",
                                                              monitor_mode="max", restore_best=True))

    def check(self) -> None:
        require(self.runs >= 1, f"--runs must be positive, got {self.runs}")
        require(self.lr > 0 and self.weight_decay >= 0, "lr must be positive and weight_decay >= 0")
        require(self.label_per_class >= 1, f"--labels-per-class must be positive, got {self.label_per_class}")
        require(self.valid_num >= 1, f"valid_num must be positive, got {self.valid_num}")
        require(self.test_num is None or self.test_num >= 1, f"test_num must be positive or None, got {self.test_num}")
        require(self.knn >= 1, f"--knn must be positive, got {self.knn} (use --no-graph for no graph)")
        require(self.train.epochs >= 1, f"--epochs must be positive, got {self.train.epochs}")
        require(self.train.monitor == "full_val_acc" and self.train.monitor_mode == "max" and self.train.restore_best,
                "instance runs select on validation accuracy: keep train.monitor=full_val_acc, max, restore_best")


def _instances(dataset: str, kernel: Kernel, lr: float, hidden: int, per_class: int, seed: int = 123,
               valid_num: int = 1000) -> InstancesConfig:
    model = ModelConfig(hidden_channels=hidden, num_layers=2, kernel=kernel, dropout=0.0, use_bn=True,
                        use_residual=True, use_graph=False, use_weight=False)
    return InstancesConfig(dataset=dataset, model=model, lr=lr, weight_decay=0.1, label_per_class=per_class,
                           valid_num=valid_num, train=_train(epochs=600, seed=seed, monitor="full_val_acc",
                                                             monitor_mode="max", restore_best=True))


_IT = "image and text/run.sh"
_DIGITS = "20news lr and width, 10 per class, 300 valid, seed 123"
INSTANCE_PRESETS: Presets[InstancesConfig] = Presets({
    "20news-s": (_instances("20news", "simple", 5e-4, 300, 100, seed=42), _IT),
    "20news-a": (_instances("20news", "sigmoid", 5e-4, 300, 100), _IT),
    "stl10-s": (_instances("stl10", "simple", 5e-4, 400, 10), _IT),
    "stl10-a": (_instances("stl10", "sigmoid", 5e-4, 400, 10), _IT),
    "cifar10-s": (_instances("cifar10", "simple", 1e-4, 300, 10), _IT),
    "cifar10-a": (_instances("cifar10", "sigmoid", 5e-4, 300, 10), _IT),
    # not in the paper: scikit-learn's embedded 8×8 digits (1,797 instances, no download), 20News lr and width
    "digits-s": (_instances("digits", "simple", 5e-4, 300, 10, valid_num=300), _DIGITS),
    "digits-a": (_instances("digits", "sigmoid", 5e-4, 300, 10, valid_num=300), _DIGITS),
    "file-s": (_instances("FILE", "simple", 5e-4, 400, 10), "stl10-s settings for --dataset FILE"),
    "file-a": (_instances("FILE", "sigmoid", 5e-4, 400, 10), "stl10-a settings for --dataset FILE"),
})


def instances_preset_name(dataset: str, kernel: Kernel) -> str:
    prefix = dataset if dataset in INSTANCE_DATASETS else "file"
    return f"{prefix}-{KERNEL_SUFFIX[kernel]}"


# ------------------------------------------------------------------------------------- temporal


TEMPORAL_DATASETS = ("chickenpox", "covid", "wikimath")


@dataclass(frozen=True)
class TemporalConfig:
    """``difformer temporal``: spatial-temporal regression (spec §3.6).

    Every snapshot is an independent graph signal (features = the previous ``lags`` values, target = the next).
    Chronological split ``train_ratio``/``val_ratio``/rest. ``update``: ``cumulative`` (one step per epoch on the
    loss averaged over all training snapshots) or ``incremental`` (one step per snapshot: ``train.batch_size``
    is 1). Early stopping after
    ``train.early_stopping_patience`` epochs without a better validation loss; the best model is tested.
    ``graph``: ``given`` (the dataset's), ``knn`` (per-snapshot cosine kNN, k 5) or ``dense`` (complete graph).
    Legacy switches: ``legacy_broadcast_mse`` (quirk 1: the N × N broadcast loss and metric),
    ``legacy_cumulative_patience`` (quirk 3: the no-improvement counter is never reset).
    """

    dataset: str = "chickenpox"
    model: ModelConfig = field(default_factory=ModelConfig)
    lags: int = 4
    train_ratio: float = 0.2
    val_ratio: float = 0.2
    update: Literal["cumulative", "incremental"] = "cumulative"
    graph: Literal["given", "knn", "dense"] = "given"
    lr: float = 1e-2
    weight_decay: float = 0.0
    runs: int = 5
    legacy_broadcast_mse: bool = False
    legacy_cumulative_patience: bool = False
    export: bool = True
    train: TrainConfig = field(default_factory=lambda: _train(epochs=200, seed=123, batch_size=1,
                                                              early_stopping_patience=20, monitor="val_loss",
                                                              monitor_mode="min", restore_best=True, save_every=20))

    def check(self) -> None:
        require(self.runs >= 1, f"--runs must be positive, got {self.runs}")
        require(self.lags >= 1, f"--lags must be positive, got {self.lags}")
        require(0 < self.train_ratio < 1 and 0 < self.val_ratio < 1 and self.train_ratio + self.val_ratio < 1,
                f"train_ratio + val_ratio must leave test snapshots (got {self.train_ratio} + {self.val_ratio})")
        require(self.lr > 0 and self.weight_decay >= 0, "lr must be positive and weight_decay >= 0")
        require(self.train.epochs >= 1, f"--epochs must be positive, got {self.train.epochs}")
        require(self.train.monitor == "val_loss" and self.train.monitor_mode == "min" and self.train.restore_best,
                "temporal runs select the best validation MSE: keep train.monitor=val_loss, min, restore_best")
        require(self.train.early_stopping_patience is None or self.train.early_stopping_patience >= 1,
                "train.early_stopping_patience must be positive or None")


def _temporal(dataset: str, kernel: Kernel, lr: float, wd: float, dropout: float, graph: bool, lags: int,
              update: str = "cumulative") -> TemporalConfig:
    model = ModelConfig(hidden_channels=4, num_layers=2, kernel=kernel, dropout=dropout, use_bn=True,
                        use_residual=True, use_graph=graph, use_weight=False)
    return TemporalConfig(dataset=dataset, model=model, lr=lr, weight_decay=wd, lags=lags, update=update)


_ST = "spatial-temporal/run.sh"
TEMPORAL_PRESETS: Presets[TemporalConfig] = Presets({
    "chickenpox-s-graph": (_temporal("chickenpox", "simple", 1e-2, 0.0, 0.2, True, 4), _ST),
    "chickenpox-s": (_temporal("chickenpox", "simple", 1e-2, 0.0, 0.2, False, 4), _ST),
    "chickenpox-a-graph": (_temporal("chickenpox", "sigmoid", 5e-3, 0.0, 0.2, True, 4), _ST),
    "chickenpox-a": (_temporal("chickenpox", "sigmoid", 1e-2, 5e-3, 0.2, False, 4), _ST),
    "covid-s-graph": (_temporal("covid", "simple", 1e-2, 0.0, 0.2, True, 8), _ST),
    "covid-s": (_temporal("covid", "simple", 1e-2, 5e-3, 0.2, False, 8), _ST),
    "covid-a-graph": (_temporal("covid", "sigmoid", 1e-2, 5e-3, 0.5, True, 8), _ST),
    "covid-a": (_temporal("covid", "sigmoid", 5e-3, 5e-3, 0.2, False, 8), _ST),
    "wikimath-s-graph": (_temporal("wikimath", "simple", 5e-3, 0.0, 0.0, True, 14, "incremental"), _ST),
    "wikimath-s": (_temporal("wikimath", "simple", 5e-3, 0.0, 0.0, False, 14, "incremental"), _ST),
    "wikimath-a-graph": (_temporal("wikimath", "sigmoid", 5e-3, 0.0, 0.0, True, 14, "incremental"), _ST),
    "wikimath-a": (_temporal("wikimath", "sigmoid", 5e-3, 0.0, 0.0, False, 14, "incremental"), _ST),
    "file-s-graph": (_temporal("FILE", "simple", 1e-2, 0.0, 0.2, True, 4), "chickenpox settings for a JSON FILE"),
    "file-s": (_temporal("FILE", "simple", 1e-2, 0.0, 0.2, False, 4), "chickenpox settings for a JSON FILE"),
    "file-a-graph": (_temporal("FILE", "sigmoid", 5e-3, 0.0, 0.2, True, 4), "chickenpox settings for a JSON FILE"),
    "file-a": (_temporal("FILE", "sigmoid", 1e-2, 5e-3, 0.2, False, 4), "chickenpox settings for a JSON FILE"),
})


def temporal_preset_name(dataset: str, kernel: Kernel, graph: bool) -> str:
    prefix = dataset if dataset in TEMPORAL_DATASETS else "file"
    return f"{prefix}-{KERNEL_SUFFIX[kernel]}" + ("-graph" if graph else "")
