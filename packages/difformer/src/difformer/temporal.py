"""Spatial-temporal regression (spec §3.6): every snapshot is an independent graph signal.

Node features are the previous ``lags`` values, the target the next value; there is no recurrence, so all
snapshots of a split go through the model at once as a batch ``[S, N, lags]`` (attention inside each snapshot;
a dynamic graph becomes one block-diagonal Â over the S·N nodes). Chronological split 20/20/60 %.

* ``cumulative`` updates: one Adam step per epoch on the loss averaged over all training snapshots;
  ``incremental``: one step per snapshot (the snapshots are visited in a shuffled order each epoch; the
  original visits them chronologically).
* Early stopping on the validation loss (patience 20, counter reset on improvement); the best model is tested.
* Loss and metric: the per-node MSE mean_i (ŷ_i − y_i)², averaged over snapshots. ``legacy_broadcast_mse``
  reproduces the original's [N, 1] − [N] broadcast, (1/N²) Σ_i Σ_j (ŷ_i − y_j)² = mean ŷ² − 2 mean ŷ · mean y +
  mean y² (quirk 1), minimised by predicting the snapshot mean. Both are reported on the test snapshots.
* ``legacy_cumulative_patience``: the original never resets its no-improvement counter (quirk 3).
Runs are aggregated as mean ± population std, as the original.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffcore.errors import ConfigError
from diffcore.runs import RunDir
from diffcore.train import FullBatch, Trainer

from difformer.config import TemporalConfig
from difformer.datasets import TemporalSignal, load_temporal_json, temporal_split_sizes
from difformer.graph import NormalizedAdjacency, normalized_adjacency
from difformer.models import EXPORT_NAME
from difformer.node import build_model, check_sigmoid_memory, count_parameters, open_sub_run, train_device

# ------------------------------------------------------------------------------------------- losses


def snapshot_mse(pred: torch.Tensor, target: torch.Tensor, broadcast: bool = False) -> torch.Tensor:
    """Per-snapshot loss ``[S]`` of predictions and targets ``[S, N]``.

    ``broadcast``: the original's (1/N²) Σ_i Σ_j (ŷ_i − y_j)², in closed form (never N × N).
    """
    if broadcast:
        return (pred.square().mean(-1) - 2 * pred.mean(-1) * target.mean(-1) + target.square().mean(-1))
    return (pred - target).square().mean(-1)


# ------------------------------------------------------------------------------------------- graphs


def knn_snapshot_edges(x: torch.Tensor, k: int) -> torch.Tensor:
    """Per-snapshot cosine kNN graphs, self included (PyG ``knn_graph(x, k, loop=True, cosine=True)``), batched:
    ``x [S, N, F]`` → block-diagonal ``edge_index [2, S·N·k]`` over S·N nodes (edge neighbour → node)."""
    s, n, _ = x.shape
    unit = F.normalize(x, dim=-1)
    neighbours = torch.cat([torch.bmm(unit[i:i + 64], unit[i:i + 64].transpose(1, 2)).topk(min(k, n), dim=-1).indices
                            for i in range(0, s, 64)])  # [S, N, k], 64 snapshots at a time bounds the S·N² memory
    offsets = (torch.arange(s) * n).view(s, 1, 1)
    targets = torch.arange(n).view(1, n, 1).expand_as(neighbours)
    return torch.stack([(neighbours + offsets).flatten(), (targets + offsets).flatten()])


@dataclass
class Snapshots:
    """Consecutive snapshots as one batch: ``x [S, N, lags]``, ``y [S, N]``, Â (shared or block-diagonal)."""

    x: torch.Tensor
    y: torch.Tensor
    adj: NormalizedAdjacency | None

    def to(self, device: Any) -> Snapshots:
        return Snapshots(self.x.to(device), self.y.to(device), None if self.adj is None else self.adj.to(device))


def snapshots(signal: TemporalSignal, steps: range, config: TemporalConfig) -> Snapshots:
    """The snapshots ``steps`` with the graph ``config.graph`` (given / knn / dense), normalised once."""
    x, y, n = signal.features[steps.start:steps.stop], signal.targets[steps.start:steps.stop], signal.num_nodes
    if not config.model.use_graph:
        return Snapshots(x, y, None)
    degree = config.model.degree_norm
    if config.graph == "dense":
        full = torch.cartesian_prod(torch.arange(n), torch.arange(n)).T
        return Snapshots(x, y, normalized_adjacency(full, n, degree=degree))
    if config.graph == "knn":
        return Snapshots(x, y, normalized_adjacency(knn_snapshot_edges(x, 5), len(steps) * n, degree=degree))
    if signal.static:
        edge_index, weight = signal.graph(0)
        return Snapshots(x, y, normalized_adjacency(edge_index, n, weight, degree))
    graphs = [signal.graph(t) for t in steps]
    edges = torch.cat([e + i * n for i, (e, _) in enumerate(graphs)], dim=1)
    weights = torch.cat([w for _, w in graphs])
    return Snapshots(x, y, normalized_adjacency(edges, len(steps) * n, weights, degree))


class SnapshotSteps(torch.utils.data.Dataset):
    """Incremental updates: one snapshot per step; :meth:`collate` gives a one-snapshot :class:`Snapshots`."""

    def __init__(self, signal: TemporalSignal, steps: range, config: TemporalConfig):
        self.signal, self.steps, self.config = signal, steps, config
        self.dynamic = config.model.use_graph and (config.graph == "knn" or
                                                   (config.graph == "given" and not signal.static))
        self.shared = None if self.dynamic else snapshots(signal, range(steps.start, steps.start + 1), config).adj

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, index: int) -> int:
        return self.steps.start + index

    def collate(self, ts: list[int]) -> Snapshots:
        if self.dynamic:  # one snapshot per step (validate_temporal): its own graph
            return snapshots(self.signal, range(ts[0], ts[0] + 1), self.config)
        index = torch.as_tensor(ts)
        return Snapshots(self.signal.features[index], self.signal.targets[index], self.shared)


# ------------------------------------------------------------------------------------------ training


class CumulativePatienceTrainer(Trainer):
    """The original's early stopping (quirk 3): the no-improvement counter is never reset by an improvement."""

    def _early_stopping(self, metrics):
        before = self.bad_evals
        super()._early_stopping(metrics)
        if self.best_epoch == self.epoch:  # improved: the original keeps its count
            self.bad_evals = before


def _loss_fn(broadcast: bool):
    def loss(model: torch.nn.Module, batch: Snapshots) -> torch.Tensor:
        return snapshot_mse(model(batch.x, batch.adj).squeeze(-1), batch.y, broadcast).mean()

    return loss


def _eval_fn(broadcast: bool):
    def evaluate(model: torch.nn.Module, batch: Snapshots) -> dict[str, torch.Tensor]:
        return {"loss": snapshot_mse(model(batch.x, batch.adj).squeeze(-1), batch.y, broadcast)}

    return evaluate


def _mean_loss(gathered: dict[str, torch.Tensor]) -> dict[str, float]:
    return {"loss": gathered["loss"].mean().item()}


@torch.no_grad()
def test_metrics(model: torch.nn.Module, test: Snapshots) -> dict[str, float]:
    model.eval()
    pred = model(test.x, test.adj).squeeze(-1)
    return {"test_mse": snapshot_mse(pred, test.y).mean().item(),
            "test_broadcast_mse": snapshot_mse(pred, test.y, broadcast=True).mean().item()}


def validate_temporal(config: TemporalConfig, signal: TemporalSignal) -> None:
    train, val, test = temporal_split_sizes(signal.num_snapshots, config.train_ratio, config.val_ratio)
    if min(train, val, test) < 1:
        raise ConfigError(f"{config.dataset}: {signal.num_snapshots} snapshots split {train}/{val}/{test}; "
                          "every part needs at least one (change train_ratio/val_ratio or lags)")
    if config.update == "incremental" and config.train.batch_size != 1:
        raise ConfigError("update=incremental takes one snapshot per step: set train.batch_size=1")
    device = train_device(config.train)
    check_sigmoid_memory(config.model, signal.num_nodes, device)


def load_signal(config: TemporalConfig, data_root: str | None = None) -> TemporalSignal:
    return load_temporal_json(config.dataset, data_root, lags=config.lags)


def run_temporal(config: TemporalConfig, run: RunDir | None, signal: TemporalSignal | None = None,
                 data_root: str | None = None, resume: bool = False) -> dict[str, Any]:
    """``difformer temporal``: ``config.runs`` trainings on the chronological split; returns ``results.json``."""
    from accelerate.utils import set_seed

    signal = signal or load_signal(config, data_root)
    n_train, n_val, n_test = temporal_split_sizes(signal.num_snapshots, config.train_ratio, config.val_ratio)
    train_steps, val_steps = range(0, n_train), range(n_train, n_train + n_val)
    test_steps = range(n_train + n_val, signal.num_snapshots)
    val, test = snapshots(signal, val_steps, config), snapshots(signal, test_steps, config)
    broadcast = config.legacy_broadcast_mse
    if config.update == "cumulative":
        train_data, collate = FullBatch(snapshots(signal, train_steps, config)), None
    else:
        steps = SnapshotSteps(signal, train_steps, config)
        train_data, collate = steps, steps.collate
    trainer_class = CumulativePatienceTrainer if config.legacy_cumulative_patience else Trainer
    results = []
    for r in range(config.runs):
        sub, finished, continue_run = open_sub_run(run, r, resume)
        if finished is not None:
            results.append(finished)
            continue
        seed = config.train.seed + r
        set_seed(seed)
        model = build_model(config.model, signal.features.shape[-1], 1)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        trainer = trainer_class(model, optimizer, dataclasses.replace(config.train, seed=seed), train_data,
                                {"val": FullBatch(val)}, run=sub, loss_fn=_loss_fn(broadcast),
                                eval_fn=_eval_fn(broadcast), metrics_fn=_mean_loss, collate_fn=collate)
        started = time.perf_counter()
        summary = trainer.fit(resume=continue_run)
        best = trainer.unwrapped_model()
        result = {"run": r, "seed": seed, "best_epoch": summary["best_epoch"], "epochs": summary["epochs"],
                  "stopped_early": summary["stopped_early"], "val_loss": summary["best_val_loss"],
                  **test_metrics(best, test.to(next(best.parameters()).device)),
                  "seconds": time.perf_counter() - started}
        if sub is not None and sub.is_main:
            if config.export:
                from diffcore.checkpoint import export_model

                export_model(best, sub.path / "model", name=EXPORT_NAME, config=best.config, package="difformer",
                             extra={"dataset": config.dataset, "lags": config.lags})
            sub.write_json("result.json", result)
        results.append(result)
    summary_keys = {}
    for key in ("test_mse", "test_broadcast_mse"):
        values = [r[key] for r in results]
        summary_keys |= {f"{key}_mean": statistics.fmean(values), f"{key}_std": statistics.pstdev(values), key: values}
    return {
        "dataset": config.dataset, "kernel": config.model.kernel, "graph": config.graph if config.model.use_graph
        else "none", "loss": "broadcast_mse" if broadcast else "mse", "update": config.update, "runs": config.runs,
        **summary_keys, "best_epoch": [r["best_epoch"] for r in results], "epochs": [r["epochs"] for r in results],
        "snapshots": [n_train, n_val, n_test], "num_nodes": signal.num_nodes, "lags": signal.features.shape[-1],
        "params": count_parameters(build_model(config.model, signal.features.shape[-1], 1)),
        "seconds": sum(r["seconds"] for r in results), "per_run": results,
    }
