"""Benchmark: Diff-ResNet node classification on Cora — accuracy and time per epoch, batched vs looped.

For the first ``--splits`` splits × ``--inits`` inits of the gnn-benchmark seed chain (§4.2 of the spec;
Wang et al., TPAMI 2024) it measures, split by split so that every path sees the same machine load:

* ``protocol``: the full protocol (patience 50, up to 10,000 epochs) with all inits of a split trained
  together (:func:`diff_resnet.graph.train_split_batched`, what ``diff-resnet graph`` runs): test accuracy
  (mean ± population std, %) and training seconds per run-epoch;
* ``batched`` and ``looped``: every run of the split for exactly ``--epochs`` epochs (fewer than the
  patience, so no run stops early), once batched and once as one plain ``DiffusionNet`` after another
  (:func:`diff_resnet.graph.train_run_single`), alternately. Their seconds per run-epoch give the speed-up,
  and their per-run accuracies must agree (the two paths compute the same runs).

Prints a table and writes JSON:

    uv run python tools/bench_diff_resnet.py --output bench.json         # 5 splits × 2 inits
    uv run python tools/bench_diff_resnet.py --splits 1 --epochs 5       # a quick look
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from diff_resnet.config import GRAPH_PRESETS
from diff_resnet.graph import (
    GraphOperands,
    draw_split,
    load_graph,
    prepare_graph,
    split_seeds,
    train_run_single,
    train_split_batched,
)
from diffcore.runs import format_table

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="cora", choices=["cora"], help="dataset with a published setting")
    parser.add_argument("--format", default="npz", choices=["npz", "planetoid"])
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--inits", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=20, help="epochs per run of the batched-vs-looped timing")
    parser.add_argument("--data-root", default=str(SHARED_DATA) if SHARED_DATA.is_dir() else None,
                        help="data root [default: ../shared/data when present, else $DIFFNETS_DATA]")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()

    protocol = dataclasses.replace(GRAPH_PRESETS[args.dataset], format=args.format, splits=args.splits,
                                   inits=args.inits)
    capped = dataclasses.replace(protocol, max_epochs=args.epochs)
    if capped.max_epochs >= capped.patience:
        parser.error(f"--epochs must stay below the patience ({capped.patience}) so that no run stops early")
    graph = load_graph(protocol.dataset, protocol.format, args.data_root)
    data = prepare_graph(graph, protocol.laplacian)
    operands = GraphOperands.build(data, protocol.step_size, protocol.dropout)
    device = torch.device("cpu")
    seconds = {"protocol": 0.0, "batched": 0.0, "looped": 0.0}
    runs: dict[str, list] = {path: [] for path in seconds}
    with ThreadPoolExecutor(max_workers=max(1, min(protocol.inits, torch.get_num_threads()))) as pool:
        for index, seed in enumerate(split_seeds(protocol.seed, protocol.splits)):
            split = draw_split(graph.labels, seed, protocol.train_per_class, protocol.val_per_class, protocol.inits)
            for path, config in (("protocol", protocol), ("batched", capped), ("looped", capped)):
                tick = time.perf_counter()
                if path == "looped":
                    runs[path] += [train_run_single(data, split, index, i, config, device) for i in range(config.inits)]
                else:
                    runs[path] += train_split_batched(data, split, index, config, device, pool, operands)
                seconds[path] += time.perf_counter() - tick
            print(f"split {index}: " + ", ".join(f"{p} {s:.0f} s" for p, s in seconds.items()) + " so far", flush=True)

    rows = []
    for path in seconds:
        accs = 100 * np.array([r.test_acc for r in runs[path]])
        epochs = sum(r.epochs for r in runs[path])
        rows.append({
            "path": path, "epochs per run": "patience 50" if path == "protocol" else args.epochs,
            "runs": len(accs), "run-epochs": epochs, "train s": round(seconds[path], 1),
            "s / run-epoch": round(seconds[path] / epochs, 4), "test acc (%)": f"{accs.mean():.2f} ± {accs.std():.2f}",
            "test_acc_mean": float(accs.mean()), "test_acc_std": float(accs.std()),
        })
    speedup = rows[2]["s / run-epoch"] / rows[1]["s / run-epoch"]
    max_acc_diff = max(abs(a.test_acc - b.test_acc) for a, b in zip(runs["batched"], runs["looped"], strict=True))
    print(format_table([{k: v for k, v in row.items() if not k.startswith("test_acc_")} for row in rows]))
    print(f"batched vs looped, {args.epochs} epochs per run: {speedup:.2f}x faster per run-epoch; largest "
          f"per-run test-accuracy difference {100 * max_acc_diff:.4f} points")
    if args.output is not None:
        report = {
            "protocol_config": dataclasses.asdict(protocol), "timing_epochs": args.epochs, "rows": rows,
            "speedup": speedup, "max_test_acc_difference": 100 * max_acc_diff,
            "per_run": {path: [dataclasses.asdict(r) for r in runs[path]] for path in runs},
            "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                        "torch": torch.__version__, "threads": torch.get_num_threads(),
                        "load_average": os.getloadavg()},
        }
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
