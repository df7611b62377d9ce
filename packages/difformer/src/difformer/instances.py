"""Classification of independent instances (images, texts; spec §3.5): all-pair attention over the whole set.

The instances are the nodes of one "graph": without an input graph (the released setting) DIFFormer attends
over all of them; with ``model.use_graph`` the graph is scikit-learn's kNN graph (``knn`` neighbours, Euclidean,
each instance its own neighbour), symmetrised, with one self-loop per node. Every run draws a new split:
``label_per_class`` per class for training, then ``valid_num`` for validation and ``test_num`` (default: all the
rest) for test — both honoured (quirk 14). Training, selection and aggregation are the node protocol's
(:func:`difformer.node.fit_runs`).
"""

from __future__ import annotations

from typing import Any

import torch
from diffcore.errors import ConfigError
from diffcore.runs import RunDir
from torch_geometric.data import Data

from difformer.config import InstancesConfig
from difformer.data import InstanceDataset, load_instances
from difformer.graph import knn_edges, prepare_edges
from difformer.node import build_model, check_sigmoid_memory, count_parameters, fit_runs, summarize_runs, train_device
from difformer.splits import class_splits


def instance_graph(dataset: InstanceDataset, config: InstancesConfig) -> Data:
    """The instances as a PyG ``Data``; ``edge_index`` is the kNN graph when the model uses a graph, else empty."""
    n = dataset.x.shape[0]
    if config.model.use_graph:
        edge_index, _ = prepare_edges(knn_edges(dataset.x, config.knn), n)
    else:
        edge_index = torch.empty(2, 0, dtype=torch.long)
    return Data(x=dataset.x, edge_index=edge_index, y=dataset.y)


def validate_instances(config: InstancesConfig, dataset: InstanceDataset) -> None:
    """Checks that need the data (raise :class:`ConfigError` before anything is written)."""
    n, classes = dataset.x.shape[0], dataset.num_classes
    smallest = int(torch.bincount(dataset.y).min())
    train = sum(min(config.label_per_class, int(c)) for c in torch.bincount(dataset.y))
    if n - train <= config.valid_num:
        raise ConfigError(f"{config.dataset}: {n} instances, {train} for training ({config.label_per_class} per class "
                          f"× {classes} classes, smallest class {smallest}) leave none for testing after "
                          f"{config.valid_num} validation instances; lower --labels-per-class or valid_num")
    if config.model.use_graph and config.knn >= n:
        raise ConfigError(f"--knn {config.knn} must be smaller than the number of instances ({n})")
    device = train_device(config.train)
    check_sigmoid_memory(config.model, n, device)


def run_instances(config: InstancesConfig, run: RunDir | None, dataset: InstanceDataset | None = None,
                  data_root: str | None = None, resume: bool = False) -> dict[str, Any]:
    """``difformer instances``: ``config.runs`` fresh splits, one model each; returns ``results.json``."""
    dataset = dataset or load_instances(config.dataset, data_root)
    data = instance_graph(dataset, config)
    splits = class_splits(dataset.y, config.label_per_class, config.valid_num, config.test_num, config.runs,
                          config.train.seed)
    results = fit_runs(data, splits, model_config=config.model, num_classes=dataset.num_classes, lr=config.lr,
                       weight_decay=config.weight_decay, train=config.train, run=run, export=config.export,
                       resume=resume, extra_model_info={"dataset": config.dataset})
    return {
        "dataset": config.dataset, "kernel": config.model.kernel, "metric": "acc",
        "graph": f"knn-{config.knn}" if config.model.use_graph else "none",
        "label_per_class": config.label_per_class, "runs": config.runs, **summarize_runs(results, "acc"),
        "num_instances": dataset.x.shape[0], "num_features": dataset.x.shape[1], "num_classes": dataset.num_classes,
        "num_edges": int(data.edge_index.shape[1]),
        "params": count_parameters(build_model(config.model, dataset.x.shape[1], dataset.num_classes)),
        "split_sizes": results[0]["split_sizes"], "per_run": results,
    }
