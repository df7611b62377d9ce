"""``diff-resnet graph``: the gnn-benchmark protocol (§4.2) over splits × inits, spread over processes.

Paper: T. Wang, Z. Dou, C. Bao, Z. Shi, "Diffusion Mechanism in Residual Neural Network: Theory and
Applications", IEEE TPAMI 46(2):667–680, 2024 (``graph/`` of the official code). The model is
:class:`~diff_resnet.models.DiffusionNet`::

    h = X + ReLU(X W₁ᵀ + b₁);   T times: h ← M · Dropout_p(h),  M = I − γ L;   logits = h W₂ᵀ + b₂

The pieces live in three modules: :mod:`~diff_resnet.graph.data` (the data pipeline),
:mod:`~diff_resnet.graph.protocol` (seed chain, patience rule, one run as the original trains it) and
:mod:`~diff_resnet.graph.engine` (the runs of a split trained together, with the same results). This
module runs them: the ``splits × inits`` runs, split-major, are cut into one contiguous share per process
(``accelerate launch`` / ``torchrun``; one share without a launcher), and rank 0 gathers the results, which
equal the one-process run's, and pools the test accuracies into mean ± population std.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffcore.config import require
from diffcore.data import SparseGraph
from diffcore.device import resolve_device
from diffcore.runs import RunDir, format_table

from diff_resnet.diffusion import max_eigenvalue
from diff_resnet.distributed import gather_lists, process_share, world_size
from diff_resnet.graph.config import GraphConfig
from diff_resnet.graph.data import GraphData, load_graph, prepare_graph
from diff_resnet.graph.engine import GraphOperands, train_runs_batched
from diff_resnet.graph.protocol import RunResult, draw_split, split_seeds, train_run_single


def validate_graph_data(graph: SparseGraph, config: GraphConfig) -> None:
    """Every class must supply its training and validation nodes and leave at least one test node."""
    counts = np.bincount(np.asarray(graph.labels))
    need = config.train_per_class + config.val_per_class
    require(int(counts.min()) > need,
            f"{config.dataset}: the smallest class has {int(counts.min())} nodes in the largest connected component, "
            f"too few for {config.train_per_class} training + {config.val_per_class} validation nodes per class "
            "and a test node; lower train_per_class / val_per_class")


def run_graph(config: GraphConfig, run: RunDir | None = None, data_root: str | Path | None = None,
              graph: SparseGraph | None = None) -> dict[str, Any]:
    """Run the protocol (:func:`run_protocol`) on ``graph``, or on ``config.dataset`` loaded from ``data_root``."""
    if graph is None:
        graph = load_graph(config.dataset, config.format, data_root)
    return run_protocol(graph, config, run)


def runs_per_batch(data: GraphData, config: GraphConfig) -> int:
    """How many runs of a split the engine trains together: as many as ``batch_memory_gb`` holds, at least one.

    Per run and epoch the engine keeps T bool dropout masks of N × F entries, drawn one epoch ahead (2·T·N·F
    bytes), and a few float32 N × F states (≈ 6·4·N·F bytes).
    """
    if not config.batch_runs:
        return 1
    entries = data.num_nodes * data.num_features
    per_run = entries * (2 * config.layers * (config.dropout > 0) + 24)
    return max(1, min(config.inits, int(config.batch_memory_gb * 2**30 // per_run)))


def _batches(runs: list[tuple[int, int]], size: int) -> list[tuple[int, list[int]]]:
    """``(split, inits)`` batches of at most ``size`` runs of one split each, in order."""
    batches = []
    for index, group in itertools.groupby(runs, key=lambda pair: pair[0]):
        inits = [init for _, init in group]
        batches += [(index, inits[k : k + size]) for k in range(0, len(inits), size)]
    return batches


def _log_run(run: RunDir | None, result: RunResult) -> None:
    if run is not None:
        run.log_metrics({"split": result.split, "init": result.init, "seed": result.seed, "epochs": result.epochs,
                         "val_acc": 100 * result.val_acc, "test_acc": 100 * result.test_acc})


def run_protocol(graph: SparseGraph, config: GraphConfig, run: RunDir | None = None) -> dict[str, Any]:
    """``splits × inits`` runs on a standardised graph; returns the results.json dictionary.

    One line per run goes to ``run``'s ``metrics.jsonl`` (split, init, seed, epochs, val/test accuracy
    in %). Accuracies in the results are percentages; ``test_acc_std`` is the population std (ddof 0).
    """
    from tqdm.auto import tqdm

    config.check()
    validate_graph_data(graph, config)
    started = time.perf_counter()
    device = resolve_device(config.device)
    data = prepare_graph(graph, config.laplacian)
    lambda_max = max_eigenvalue(data.laplacian)
    data = data.to(device)
    # Built once for all splits; propagation_matrix warns here when γ·λ_max > 2 (a lone DiffusionNet warns itself).
    operands = GraphOperands.build(data, config.step_size, config.dropout) if config.batch_runs else None
    labels = np.asarray(graph.labels)
    splits = [draw_split(labels, s, config.train_per_class, config.val_per_class, config.inits)
              for s in split_seeds(config.seed, config.splits)]
    runs = [(s, i) for s in range(config.splits) for i in range(config.inits)]
    mine = [runs[k] for k in process_share(len(runs))]

    local: list[RunResult] = []
    train_seconds = 0.0
    bar = tqdm(total=len(mine), desc=f"{config.dataset} runs", unit="run",
               disable=None if run is None or run.is_main else True)
    per_batch = runs_per_batch(data, config)
    with ThreadPoolExecutor(max_workers=max(1, min(per_batch, torch.get_num_threads()))) as pool:
        for index, inits in _batches(mine, per_batch):
            split = splits[index]
            tick = time.perf_counter()
            if config.batch_runs:
                batch = train_runs_batched(data, split, index, inits, config, device, pool, operands,
                                           functools.partial(_report_epoch, bar, index))
            else:
                batch = [train_run_single(data, split, index, i, config, device) for i in inits]
            train_seconds += time.perf_counter() - tick
            for result in batch:
                _log_run(run, result)
            local += batch
            bar.update(len(batch))
            bar.set_postfix_str(f"test acc {100 * np.mean([r.test_acc for r in local]):.2f}%")
    bar.close()
    results = [RunResult(**r) for r in gather_lists([dataclasses.asdict(r) for r in local])]
    for result in results[len(local):]:  # the other processes' runs (rank 0's share comes first)
        _log_run(run, result)
    train_seconds = sum(gather_lists([train_seconds]))

    test_accs = 100 * np.array([r.test_acc for r in results])
    epochs = [r.epochs for r in results]
    return {
        "test_acc_mean": float(test_accs.mean()),
        "test_acc_std": float(test_accs.std(ddof=0)),
        "test_accs": test_accs.tolist(),
        "val_accs": [100 * r.val_acc for r in results],
        "epochs": epochs,
        "split_seeds": [s.seed for s in splits],
        "init_seeds": [s.init_seeds.tolist() for s in splits],
        "dataset": {
            "name": config.dataset, "format": config.format, "nodes": data.num_nodes, "edges": data.num_edges,
            "features": data.num_features, "classes": data.num_classes, "train": len(splits[0].train),
            "val": len(splits[0].val), "test": len(splits[0].test),
        },
        "lambda_max": lambda_max,
        "step_size_times_lambda_max": config.step_size * lambda_max,
        "world_size": world_size(),
        "seconds": time.perf_counter() - started,
        "seconds_per_run_epoch": train_seconds / max(1, sum(epochs)),
    }


def _report_epoch(bar: Any, split: int, epoch: int, active: int) -> None:
    bar.set_postfix_str(f"split {split} epoch {epoch + 1}, {active} runs active")


def print_graph_results(results: dict[str, Any]) -> None:
    """One-row summary: dataset, runs, test accuracy mean ± std (%), epochs, time."""
    import click

    stats = results["dataset"]
    row = {
        "dataset": f"{stats['name']} ({stats['format']})",
        "nodes": stats["nodes"],
        "runs": len(results["test_accs"]),
        "test acc (%)": f"{results['test_acc_mean']:.2f} ± {results['test_acc_std']:.2f}",
        "epochs (mean)": f"{np.mean(results['epochs']):.0f}",
        "s / run-epoch": f"{results['seconds_per_run_epoch']:.3f}",
        "total (s)": f"{results['seconds']:.0f}",
    }
    click.echo(format_table([row]))
