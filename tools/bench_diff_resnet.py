"""Benchmark: Diff-ResNet's graph protocol on Cora, our engine against the original's formulation.

Per run-epoch (one training step + one validation pass, as the protocol does every epoch), measured side by
side in one process, alternating so that both see the same machine load:

* ``original``: the formulation of the official ``graph/`` code as the spec describes it (§3.2, §4.2, §10),
  written here: dense features, ``F.dropout`` on the dense N × F state before every diffusion step, each step
  ``h − γ·torch.sparse.mm(D̂ − Â, h)``, one run at a time, a full forward pass in eval mode for the
  validation loss and accuracy every epoch, and a deep copy of the weights whenever the patience rule resets
  (as the original does). The one liberty: D̂ − Â is built once, not re-subtracted every step.
* ``ours``: :func:`diff_resnet.graph.engine.train_runs_batched` on the same run (same init seed), what
  ``diff-resnet graph`` runs.

Both train the same ``--runs`` runs (split 0's first init seeds) for exactly ``--epochs`` epochs (the patience is
lifted so that none stops early). Wall-clock and process CPU seconds (all threads) are reported; the speed-up
is the ratio of the medians over ``--repeats`` alternating rounds. With ``--check-epochs K`` both paths also train
K epochs with dropout 0 from the same initialisation and must end with the same test accuracy (equal accuracy).
``--profile`` prints where our time goes, by operation (torch.profiler, self CPU time).

    uv run python tools/bench_diff_resnet.py --output bench.json           # 1 run, 40 epochs, 3 rounds
    uv run python tools/bench_diff_resnet.py --epochs 10 --repeats 1       # a quick look
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diff_resnet.graph.config import GRAPH_PRESETS, GraphConfig
from diff_resnet.graph.data import GraphData, load_graph, prepare_graph
from diff_resnet.graph.engine import GraphOperands, train_runs_batched
from diff_resnet.graph.protocol import EarlyStopping, Split, draw_split, split_seeds
from diffcore.runs import format_table
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


class OriginalDiffusionNet(nn.Module):
    """The graph model in the original's formulation: dense X, ``F.dropout`` + ``h − γ L h`` per step."""

    def __init__(self, features: int, classes: int, step_size: float, num_steps: int, dropout: float):
        super().__init__()
        self.linear = nn.Linear(features, features)  # same draws, in the same order, as DiffusionNet's init
        self.classifier = nn.Linear(features, classes)
        self.step_size, self.num_steps, self.dropout = step_size, num_steps, dropout

    def forward(self, x: torch.Tensor, laplacian: torch.Tensor) -> torch.Tensor:
        h = x + F.relu(self.linear(x))
        for _ in range(self.num_steps):
            h = F.dropout(h, self.dropout, training=self.training)
            h = h - self.step_size * torch.sparse.mm(laplacian, h)
        return self.classifier(h)


def train_original(data: GraphData, split: Split, inits: list[int], config: GraphConfig) -> list[float]:
    """Each run alone, epoch by epoch as the original: train step, eval-mode validation, patience bookkeeping
    (a deep copy of the weights at every reset); returns the test accuracies (%) of the last weights."""
    x, laplacian = data.features.to_dense(), data.laplacian.to_sparse_coo().coalesce()
    labels = data.labels
    train, val, test = (torch.as_tensor(s) for s in (split.train, split.val, split.test))
    accuracies = []
    for init in inits:
        torch.manual_seed(int(split.init_seeds[init]))
        model = OriginalDiffusionNet(data.num_features, data.num_classes, config.step_size, config.layers,
                                     config.dropout)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        stopper = EarlyStopping(config.patience)
        best = None
        for _ in range(config.max_epochs):
            model.train()
            optimizer.zero_grad()
            F.cross_entropy(model(x, laplacian)[train], labels[train]).backward()
            optimizer.step()
            model.eval()
            with torch.no_grad():
                out = model(x, laplacian)[val]
            loss, acc = F.cross_entropy(out, labels[val]), (out.argmax(1) == labels[val]).double().mean()
            if stopper.update(loss.reshape(1), acc.reshape(1))[0]:
                best = copy.deepcopy(model.state_dict())
        del best
        with torch.no_grad():
            out = model(x, laplacian)[test]
        accuracies.append(100 * (out.argmax(1) == labels[test]).double().mean().item())
    return accuracies


def train_ours(data: GraphData, split: Split, inits: list[int], config: GraphConfig, operands: GraphOperands,
               pool: ThreadPoolExecutor) -> list[float]:
    results = train_runs_batched(data, split, 0, inits, config, torch.device("cpu"), pool, operands)
    return [100 * r.test_acc for r in results]


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def profile_ours(data, split, inits, config, operands, pool, epochs: int) -> list[dict]:
    """Self CPU time by operation over ``epochs`` epochs of our engine (autograd functions by name)."""
    from torch.profiler import ProfilerActivity, profile

    config = dataclasses.replace(config, max_epochs=epochs)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_ours(data, split, inits, config, operands, pool)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"operation": e.key, "calls": e.count,
             "self CPU ms / epoch": round(e.self_cpu_time_total / 1e3 / epochs, 2),
             "share %": round(100 * e.self_cpu_time_total / total, 1)} for e in events[:12]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="runs (split 0's first init seeds) per round")
    parser.add_argument("--epochs", type=int, default=40, help="epochs per run")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds (original, ours)")
    parser.add_argument("--check-epochs", type=int, default=8, help="dropout-0 epochs of the accuracy check (0: skip)")
    parser.add_argument("--profile", type=int, default=5, help="epochs of our engine to profile (0: skip)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads [default: torch's]")
    parser.add_argument("--data-root", default=str(SHARED_DATA) if SHARED_DATA.is_dir() else None,
                        help="data root [default: ../shared/data when present, else $DIFFNETS_DATA]")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    config = dataclasses.replace(GRAPH_PRESETS["cora"], inits=args.runs, max_epochs=args.epochs, patience=10**9)
    graph = load_graph("cora", "npz", args.data_root)
    data = prepare_graph(graph, config.laplacian)
    split = draw_split(graph.labels, split_seeds(config.seed, 1)[0], inits=args.runs)
    inits = list(range(args.runs))
    operands = GraphOperands.build(data, config.step_size, config.dropout)
    run_epochs = args.runs * args.epochs
    times: dict[str, list[tuple[float, float]]] = {"original": [], "ours": []}
    accs: dict[str, list[float]] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(args.runs, torch.get_num_threads()))) as pool:
        for round_ in range(args.repeats):
            order = ("original", "ours") if round_ % 2 == 0 else ("ours", "original")
            for path in order:
                fn = ((lambda: train_original(data, split, inits, config)) if path == "original" else
                      (lambda: train_ours(data, split, inits, config, operands, pool)))
                accs[path], wall, cpu = timed(fn)
                times[path].append((wall / run_epochs, cpu / run_epochs))
            print(f"round {round_}: " + ", ".join(f"{p} {times[p][-1][0]:.3f} s wall / {times[p][-1][1]:.3f} s CPU "
                                                  "per run-epoch" for p in times), flush=True)
        check = None
        if args.check_epochs:
            exact = dataclasses.replace(config, dropout=0.0, max_epochs=args.check_epochs)
            check = {"epochs": args.check_epochs, "dropout": 0.0,
                     "original": train_original(data, split, inits, exact),
                     "ours": train_ours(data, split, inits, exact,
                                        GraphOperands.build(data, exact.step_size, 0.0), pool)}
            check["equal"] = bool(np.allclose(check["original"], check["ours"], atol=1e-9))
        profile = profile_ours(data, split, inits, config, operands, pool, args.profile) if args.profile else None

    rows = []
    for path, samples in times.items():
        wall, cpu = statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)
        rows.append({"path": path, "runs": args.runs, "epochs": args.epochs, "rounds": args.repeats,
                     "wall s / run-epoch": round(wall, 4), "CPU s / run-epoch": round(cpu, 4),
                     f"test acc after {args.epochs} epochs (%)": ", ".join(f"{a:.2f}" for a in accs[path])})
    speedup = {"wall": rows[0]["wall s / run-epoch"] / rows[1]["wall s / run-epoch"],
               "cpu": rows[0]["CPU s / run-epoch"] / rows[1]["CPU s / run-epoch"]}
    print(format_table(rows))
    print(f"ours vs the original formulation: {speedup['wall']:.2f}x faster per run-epoch (wall), "
          f"{speedup['cpu']:.2f}x (CPU time)")
    if check is not None:
        print(f"dropout 0, {check['epochs']} epochs from the same init: test acc original {check['original']}, "
              f"ours {check['ours']} -> {'equal' if check['equal'] else 'DIFFERENT'}")
    if profile is not None:
        print(f"where our time goes ({args.profile} epochs, self CPU time by operation):")
        print(format_table(profile))
    if args.output is not None:
        report = {
            "config": dataclasses.asdict(config), "rows": rows, "speedup": speedup,
            "rounds": {p: [{"wall": w, "cpu": c} for w, c in s] for p, s in times.items()},
            "accuracy_check": check, "profile": profile,
            "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                        "torch": torch.__version__, "threads": torch.get_num_threads(),
                        "load_average": os.getloadavg()},
        }
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
