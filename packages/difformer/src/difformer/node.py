"""Node classification protocols (spec §3.1–3.4) on the core :class:`~diffcore.train.Trainer`.

Per run: reset the model (seed + run), a new Adam, a fixed number of epochs without early stopping, an eval-mode
forward on the full graph after every ``eval_every``-th epoch giving train/validation/test metrics; the run's
result is the test metric at the first epoch of maximal validation metric (quirk 20), and that epoch's model is
exported. Runs are aggregated as mean ± unbiased std (×100).

Full-batch training steps on the whole graph. Mini-batch training (large graphs, spec §3.3) cuts a random
permutation of the nodes into chunks of ``batch_size`` nodes — the Trainer's shuffled batches of node ids —
and trains on each chunk's induced subgraph; a chunk never is empty, and a chunk without training nodes makes
no update (quirk 11). Evaluation then runs on the full graph on ``eval_device`` (quirk 12). A graph's edge
weights (a graph file's ``edge_weight``) reach the GCN branch in training, chunks and evaluation alike.

Under ``accelerate launch``/``torchrun`` every process computes the full-batch step (identical gradients), or
its share of each chunk's node ids.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffcore.device import resolve_device
from diffcore.errors import ConfigError
from diffcore.runs import RunDir
from diffcore.train import FullBatch, TrainConfig, Trainer
from torch_geometric.data import Data

from difformer.config import ModelConfig, NodeConfig
from difformer.data import NodeDataset, is_file_dataset, load_node_dataset
from difformer.kernels import auto_block_size, sigmoid_block_bytes
from difformer.models import EXPORT_NAME, DIFFormer
from difformer.splits import Split, class_splits, mask_split, random_splits

# ------------------------------------------------------------------------------------------- metrics


def rocauc(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean ROC-AUC over the columns (tasks) that hold both classes (OGB's evaluator), via tie-averaged ranks.

    AUC = (Σ ranks of positives − n⁺(n⁺ + 1)/2) / (n⁺ n⁻) — the Mann–Whitney statistic — for all tasks at once.
    """
    from scipy.stats import rankdata

    targets = targets.bool()
    positives = targets.sum(0).double()
    negatives = targets.shape[0] - positives
    valid = (positives > 0) & (negatives > 0)
    if not valid.any():
        return float("nan")
    ranks = torch.from_numpy(rankdata(scores.double().numpy(), axis=0))
    rank_sum = (ranks * targets).sum(0)
    auc = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    return auc[valid].mean().item()


def node_metric(out: torch.Tensor, y: torch.Tensor, index: torch.Tensor, metric: str) -> float:
    """Accuracy or ROC-AUC (×100) of ``out`` on the nodes ``index``."""
    if index.numel() == 0:
        return float("nan")
    if metric == "rocauc":
        return 100.0 * rocauc(out[index], y[index])
    return 100.0 * (out[index].argmax(-1) == y[index]).double().mean().item()


def node_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (= NLL of log-softmax) for class ids, BCE-with-logits for binary multi-task targets."""
    if y.dim() == 2:
        return F.binary_cross_entropy_with_logits(out, y.to(out.dtype))
    return F.cross_entropy(out, y)


# ------------------------------------------------------------------------------------------- batches


class KeepOnDevice:
    """A batch the Trainer must not move (``.to`` returns it as is): CPU evaluation of a large graph."""

    def __init__(self, data: Data):
        self.data = data

    def to(self, device: Any) -> KeepOnDevice:
        return self


class NodeChunks(torch.utils.data.Dataset):
    """Node ids ``0..N-1`` as a dataset; :meth:`collate` turns a batch of ids into its induced subgraph.

    Incoming edges are looked up in a CSR index built once, so a chunk costs O(its edges), not O(E); the chunk
    keeps the weights of its edges (``data.edge_weight``, when the graph has them).
    """

    def __init__(self, data: Data, train_index: torch.Tensor):
        self.x, self.y, self.n = data.x, data.y, data.num_nodes
        target, source = data.edge_index[1], data.edge_index[0]
        order = torch.argsort(target, stable=True)
        self.sources = source[order]
        self.weights = None if data.edge_weight is None else data.edge_weight[order]
        self.rowptr = torch.zeros(self.n + 1, dtype=torch.long)
        self.rowptr[1:] = torch.cumsum(torch.bincount(target, minlength=self.n), 0)
        self.train_mask = torch.zeros(self.n, dtype=torch.bool)
        self.train_mask[train_index] = True

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, ids: list[int]) -> Data:
        nodes = torch.as_tensor(ids, dtype=torch.long)
        local = torch.full((self.n,), -1, dtype=torch.long)
        local[nodes] = torch.arange(nodes.numel())
        starts, counts = self.rowptr[nodes], self.rowptr[nodes + 1] - self.rowptr[nodes]
        targets = torch.repeat_interleave(torch.arange(nodes.numel()), counts)
        offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        positions = torch.repeat_interleave(starts, counts) + offsets
        sources = local[self.sources[positions]]
        keep = sources >= 0
        edge_index = torch.stack([sources[keep], targets[keep]])
        weight = None if self.weights is None else self.weights[positions[keep]]
        return Data(x=self.x[nodes], edge_index=edge_index, edge_weight=weight, y=self.y[nodes],
                    train_mask=self.train_mask[nodes])


def sparse_if_sparse(x: torch.Tensor, density: float = 0.1) -> torch.Tensor:
    """``x`` as a sparse CSR tensor when at most ``density`` of it is non-zero (Cora: 1.3 %): the input layer's
    product and its weight gradient then cost O(nnz) instead of O(N·D_in)."""
    if x.dim() != 2 or x.layout != torch.strided or (x != 0).float().mean().item() > density:
        return x
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return x.to_sparse_csr()


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1


def chunk_loss(model: torch.nn.Module, batch: Data) -> torch.Tensor:
    """Loss on the chunk's training nodes; a chunk without any makes no update (quirk 11).

    One process: a loss with no path to the parameters leaves every gradient None, so Adam skips the step.
    Several processes: the forward still runs (DDP's all-reduce needs every rank) with a zero loss.
    """
    if not bool(batch.train_mask.any()):
        if not _distributed():
            return torch.zeros((), device=batch.x.device, requires_grad=True)
        return model(batch.x, batch.edge_index, batch.edge_weight).sum() * 0.0
    out = model(batch.x, batch.edge_index, batch.edge_weight)
    return node_loss(out[batch.train_mask], batch.y[batch.train_mask])


# ------------------------------------------------------------------------------------------- memory


def available_memory(device: torch.device) -> int:
    """Free bytes on ``device`` (CUDA: ``mem_get_info``; CPU: ``MemAvailable`` of /proc/meminfo)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def train_device(train: TrainConfig) -> torch.device:
    """The device the Trainer computes on: the CPU with ``train.cpu``, else this process's GPU if one is visible."""
    return resolve_device("cpu" if train.cpu else "auto")


def check_sigmoid_memory(model: ModelConfig, num_nodes: int, device: torch.device, what: str = "") -> None:
    """Refuse a sigmoid kernel whose attention block over ``num_nodes`` keys would not fit on ``device``."""
    if model.kernel != "sigmoid":
        return
    rows = min(model.block_size or auto_block_size(num_nodes, model.num_heads), num_nodes)
    need = sigmoid_block_bytes(rows, num_nodes, model.num_heads)
    free = available_memory(device)
    if need > 0.8 * free:
        fit = max(1, int(0.8 * free) // sigmoid_block_bytes(1, num_nodes, model.num_heads))
        raise ConfigError(
            f"the sigmoid kernel over {num_nodes:,} nodes{what} with --block-size {rows:,} needs "
            f"{need / 2**30:.1f} GiB per block ({rows:,} x {num_nodes:,} x {model.num_heads} weights, 3 buffers), "
            f"more than the {free / 2**30:.1f} GiB free on {device.type}; use --block-size {fit:,} or less"
        )


# -------------------------------------------------------------------------------------------- protocol


def build_model(model: ModelConfig, in_channels: int, out_channels: int) -> DIFFormer:
    return DIFFormer(**model.kwargs(in_channels, out_channels))


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def node_splits(config: NodeConfig, dataset: NodeDataset) -> tuple[str, list[Split]]:
    """(split kind used, one split per run); see :class:`~difformer.config.NodeConfig`."""
    data = dataset.data
    kind = config.split
    if kind == "auto":
        kind = "given" if dataset.has_masks else "class"
    draws = 1 if config.reuse_first_split else config.runs
    seed = config.train.seed
    if kind == "class":
        splits = class_splits(data.y, config.label_per_class, config.valid_num, config.test_num, draws, seed)
    elif kind == "random":
        splits = random_splits(data.y, config.train_prop, config.valid_prop, draws, seed)
    else:  # given / ogb: the dataset's masks
        splits = [mask_split(data.train_mask, data.val_mask, data.test_mask, r) for r in range(draws)]
    return kind, [splits[0 if config.reuse_first_split else r] for r in range(config.runs)]


def validate_node(config: NodeConfig, dataset: NodeDataset) -> None:
    """Checks that need the data: split kind, metric and memory. Raise :class:`ConfigError` before writing."""
    data = dataset.data
    if config.split in ("given", "ogb") and not dataset.has_masks:
        raise ConfigError(f"split={config.split} needs the dataset's masks, but {config.dataset} has none; "
                          "use --set split=class or split=random")
    if config.split == "class" and dataset.multilabel:
        raise ConfigError(f"{config.dataset} has multi-task targets: a per-class split does not apply")
    if config.metric == "rocauc" and not dataset.multilabel:
        raise ConfigError("metric=rocauc needs binary multi-task targets (y [N, T]); this dataset has class ids")
    if dataset.multilabel and config.metric != "rocauc":
        raise ConfigError(f"{config.dataset} has binary multi-task targets: use --set metric=rocauc")
    _, splits = node_splits(config, dataset)
    for name, index in zip(("training", "validation", "test"), splits[0], strict=True):
        if index.numel() == 0:
            raise ConfigError(f"the first split of {config.dataset} has no {name} nodes "
                              f"({data.num_nodes} nodes); check label_per_class / valid_num / the masks")
    device = train_device(config.train)
    eval_device = torch.device("cpu") if config.minibatch and config.eval_device == "cpu" else device
    check_sigmoid_memory(config.model, data.num_nodes, eval_device, " (full-graph evaluation)")
    if config.minibatch:
        check_sigmoid_memory(config.model, min(config.train.batch_size, data.num_nodes), device, " (a training chunk)")


def _history_from(run: RunDir | None) -> dict[int, dict[str, float]]:
    """Per-epoch evaluation records already in ``metrics.jsonl`` (a resumed run); the last record of an epoch wins."""
    if run is None:
        return {}
    return {int(r["epoch"]): r for r in run.read_metrics() if "full_val_loss" in r}


def select_best(history: dict[int, dict[str, float]], metric: str) -> tuple[int, dict[str, float]]:
    """The first epoch with the maximal validation metric (ties → earliest; quirk 20)."""
    key = f"full_val_{metric}"
    epochs = sorted(e for e in history if not math.isnan(history[e][key]))
    if not epochs:
        raise ConfigError("no evaluation produced a validation metric")
    best = max(epochs, key=lambda e: (history[e][key], -e))
    return best, history[best]


def open_sub_run(run: RunDir | None, index: int, resume: bool) -> tuple[RunDir | None, dict | None, bool]:
    """``(<run>/run-<index>/, its result if it finished before an interruption, whether to continue its saved
    training state)``. A run interrupted before its first saved state starts over (its log is cleared)."""
    if run is None:
        return None, None, False
    sub = RunDir(run.path / f"run-{index}", is_main=run.is_main)
    if resume and (sub.path / "result.json").exists():
        return sub, json.loads((sub.path / "result.json").read_text()), False
    saved = resume and any((sub.path / folder / "trainer_state.json").exists() for folder in ("state", "state.old"))
    if sub.is_main:
        sub.path.mkdir(parents=True, exist_ok=True)
        if not saved:
            (sub.path / "metrics.jsonl").unlink(missing_ok=True)
    return sub, None, saved


def fit_runs(
    data: Data, splits: list[Split], *, model_config: ModelConfig, num_classes: int, lr: float, weight_decay: float,
    train: TrainConfig, metric: str = "acc", minibatch: bool = False, eval_device: str = "cpu",
    run: RunDir | None = None, export: bool = True, resume: bool = False, extra_model_info: dict | None = None,
) -> list[dict[str, Any]]:
    """Train one model per split and return each run's selected result (see the module docstring).

    With ``run``, run r lives in ``<run>/run-<r>/`` (``metrics.jsonl``, ``state/``, ``model/``, ``result.json``);
    ``resume`` skips finished runs and continues an interrupted one from its last saved epoch.
    """
    from accelerate.utils import set_seed

    features = data.x if minibatch else sparse_if_sparse(data.x)
    results = []
    for r, split in enumerate(splits):
        sub, finished, continue_run = open_sub_run(run, r, resume)
        if finished is not None:
            results.append(finished)
            continue
        seed = train.seed + r
        set_seed(seed)
        model = build_model(model_config, data.num_features, num_classes)
        train_index = split[0]
        recorder = EvalRecorder(data.y, split, metric, _history_from(sub) if continue_run else {})
        eval_graph = Data(x=features, edge_index=data.edge_index, edge_weight=data.edge_weight, y=data.y)
        if minibatch:
            chunks = NodeChunks(data, train_index)
            train_data, collate, loss_fn = chunks, chunks.collate, chunk_loss
            eval_batch = KeepOnDevice(eval_graph) if eval_device == "cpu" else eval_graph
        else:
            graph = Data(x=features, edge_index=data.edge_index, edge_weight=data.edge_weight, y=data.y,
                         train_index=train_index)
            train_data, collate = FullBatch(graph), None
            eval_batch = eval_graph

            def loss_fn(model, batch):
                out = model(batch.x, batch.edge_index, batch.edge_weight)
                return node_loss(out[batch.train_index], batch.y[batch.train_index])

        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        trainer = Trainer(model, optimizer, dataclasses.replace(train, seed=seed), train_data,
                          {"full": FullBatch(eval_batch)}, run=sub, loss_fn=loss_fn, eval_fn=evaluate_full_graph,
                          metrics_fn=recorder, collate_fn=collate)
        recorder.trainer = trainer
        started = time.perf_counter()
        trainer.fit(resume=continue_run)
        best_epoch, best = select_best(recorder.history, metric)
        records = [] if sub is None else sub.read_metrics()
        seconds = [rec["seconds"] for rec in records if "seconds" in rec]
        result = {"run": r, "seed": seed, "best_epoch": best_epoch, f"train_{metric}": best[f"full_train_{metric}"],
                  f"val_{metric}": best[f"full_val_{metric}"], f"test_{metric}": best[f"full_test_{metric}"],
                  "epochs": trainer.epoch, "seconds": time.perf_counter() - started,
                  "seconds_per_epoch": statistics.fmean(seconds) if seconds else None,
                  "split_sizes": [int(s.numel()) for s in split]}
        if sub is not None and sub.is_main:
            if export:
                from diffcore.checkpoint import export_model

                best_model = trainer.unwrapped_model()
                export_model(best_model, sub.path / "model", name=EXPORT_NAME, config=best_model.config,
                             package="difformer", extra={"selected_epoch": best_epoch, **(extra_model_info or {})})
            sub.write_json("result.json", result)
        results.append(result)
    return results


def evaluate_full_graph(model: torch.nn.Module, batch: Data | KeepOnDevice) -> dict[str, torch.Tensor]:
    """Logits of every node; a :class:`KeepOnDevice` graph is evaluated where it lies (a copy of the model)."""
    if isinstance(batch, KeepOnDevice):
        graph = batch.data
        net = getattr(model, "module", model)
        if next(net.parameters()).device != graph.x.device:
            net = copy.deepcopy(net).to(graph.x.device).eval()
        return {"out": net(graph.x, graph.edge_index, graph.edge_weight)}
    return {"out": model(batch.x, batch.edge_index, batch.edge_weight)}


class EvalRecorder:
    """The Trainer's ``metrics_fn``: train/val/test metric and val loss of the full-graph logits, recorded per
    epoch in ``history`` (the Trainer logs them as ``full_<name>``)."""

    def __init__(self, y: torch.Tensor, split: Split, metric: str, history: dict[int, dict[str, float]]):
        self.y, self.split, self.metric, self.history = y, split, metric, history
        self.trainer: Trainer | None = None

    def __call__(self, gathered: dict[str, torch.Tensor]) -> dict[str, float]:
        out = gathered["out"]
        values = {f"{name}_{self.metric}": node_metric(out, self.y, index, self.metric)
                  for name, index in zip(("train", "val", "test"), self.split, strict=True)}
        values["val_loss"] = node_loss(out[self.split[1]], self.y[self.split[1]]).item()
        self.history[self.trainer.epoch] = {f"full_{k}": v for k, v in values.items()}
        return values


def summarize_runs(results: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Mean ± unbiased std of the per-run test metric (already ×100) and the per-run lists."""
    tests = [r[f"test_{metric}"] for r in results]
    per_epoch = [r["seconds_per_epoch"] for r in results if r.get("seconds_per_epoch") is not None]
    return {
        "test_acc_mean": statistics.fmean(tests),
        "test_acc_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
        "test_acc": tests,
        "val_acc": [r[f"val_{metric}"] for r in results],
        "best_epoch": [r["best_epoch"] for r in results],
        "seconds_per_epoch": statistics.fmean(per_epoch) if per_epoch else None,
        "seconds": sum(r["seconds"] for r in results),
    }


def run_node(config: NodeConfig, run: RunDir | None, dataset: NodeDataset | None = None,
             data_root: str | None = None, resume: bool = False) -> dict[str, Any]:
    """``difformer node``: load, split, train ``config.runs`` models, aggregate. Returns ``results.json``."""
    dataset = dataset or load_node_dataset(config.dataset, data_root, config.directed)
    split_kind, splits = node_splits(config, dataset)
    results = fit_runs(dataset.data, splits, model_config=config.model, num_classes=dataset.num_classes,
                       lr=config.lr, weight_decay=config.weight_decay, train=config.train, metric=config.metric,
                       minibatch=config.minibatch, eval_device=config.eval_device, run=run, export=config.export,
                       resume=resume, extra_model_info={"dataset": config.dataset})
    model = build_model(config.model, dataset.data.num_features, dataset.num_classes)
    return {
        "dataset": config.dataset if not is_file_dataset(config.dataset) else str(config.dataset),
        "kernel": config.model.kernel, "metric": config.metric, "runs": config.runs, "split": split_kind,
        "reuse_first_split": config.reuse_first_split, "minibatch": config.minibatch,
        **summarize_runs(results, config.metric),
        "num_nodes": dataset.num_nodes, "num_edges": int(dataset.data.edge_index.shape[1]),
        "num_features": dataset.data.num_features, "num_classes": dataset.num_classes,
        "params": count_parameters(model), "split_sizes": results[0]["split_sizes"], "per_run": results,
    }
