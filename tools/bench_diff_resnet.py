"""Benchmark: Diff-ResNet node classification on Cora, batched runs vs one run at a time.

Runs the first ``--splits`` splits × ``--inits`` inits of the gnn-benchmark seed chain (§4.2 of the
spec; Wang et al., TPAMI 2024) twice — all inits of a split trained together
(:func:`diff_resnet.graph.train_split_batched`) and one plain ``DiffusionNet`` after another
(:func:`diff_resnet.graph.train_run_single`) — alternating the two per split so both see the same machine
load. Reports training seconds per run-epoch, the test accuracy (mean ± population std, %) and whether
both paths gave the same runs. Prints a table and writes JSON.

    uv run python tools/bench_diff_resnet.py --output bench.json            # 5 splits × 2 inits
    uv run python tools/bench_diff_resnet.py --splits 1 --max-epochs 20     # a quick look
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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
    parser.add_argument("--max-epochs", type=int, default=None, help="epoch cap [default: the protocol's 10,000]")
    parser.add_argument("--data-root", default=str(SHARED_DATA) if SHARED_DATA.is_dir() else None,
                        help="data root [default: ../shared/data when present, else $DIFFNETS_DATA]")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()

    config = dataclasses.replace(GRAPH_PRESETS[args.dataset], format=args.format, splits=args.splits,
                                 inits=args.inits)
    if args.max_epochs is not None:
        config = dataclasses.replace(config, max_epochs=args.max_epochs)
    graph = load_graph(config.dataset, config.format, args.data_root)
    data = prepare_graph(graph, config.laplacian)
    operands = GraphOperands.build(data, config.step_size, config.dropout)
    device = torch.device("cpu")
    seconds = {"batched": 0.0, "looped": 0.0}
    runs: dict[str, list] = {"batched": [], "looped": []}
    with ThreadPoolExecutor(max_workers=max(1, min(config.inits, torch.get_num_threads()))) as pool:
        for index, seed in enumerate(split_seeds(config.seed, config.splits)):
            split = draw_split(graph.labels, seed, config.train_per_class, config.val_per_class, config.inits)
            tick = time.perf_counter()
            runs["batched"] += train_split_batched(data, split, index, config, device, pool, operands)
            seconds["batched"] += time.perf_counter() - tick
            tick = time.perf_counter()
            runs["looped"] += [train_run_single(data, split, index, i, config, device) for i in range(config.inits)]
            seconds["looped"] += time.perf_counter() - tick
            print(f"split {index}: batched {seconds['batched']:.0f} s, looped {seconds['looped']:.0f} s so far",
                  flush=True)

    rows = []
    for path in ("batched", "looped"):
        accs = 100 * np.array([r.test_acc for r in runs[path]])
        epochs = sum(r.epochs for r in runs[path])
        rows.append({
            "path": path, "runs": len(accs), "epochs": epochs, "train s": round(seconds[path], 1),
            "s / run-epoch": round(seconds[path] / epochs, 4), "test acc (%)": f"{accs.mean():.2f} ± {accs.std():.2f}",
            "test_acc_mean": float(accs.mean()), "test_acc_std": float(accs.std()),
        })
    same_epochs = [r.epochs for r in runs["batched"]] == [r.epochs for r in runs["looped"]]
    max_acc_diff = max(abs(a.test_acc - b.test_acc) for a, b in zip(runs["batched"], runs["looped"], strict=True))
    speedup = rows[1]["s / run-epoch"] / rows[0]["s / run-epoch"]
    print(format_table([{k: v for k, v in row.items() if not k.startswith("test_acc_")} for row in rows]))
    print(f"speed-up per run-epoch: {speedup:.2f}x; same epochs per run: {same_epochs}; "
          f"largest per-run test-accuracy difference: {100 * max_acc_diff:.4f} points")
    if args.output is not None:
        report = {
            "config": dataclasses.asdict(config), "rows": rows, "speedup": speedup, "same_epochs": same_epochs,
            "max_test_acc_difference": 100 * max_acc_diff,
            "per_run": {path: [dataclasses.asdict(r) for r in runs[path]] for path in runs},
            "machine": {"platform": platform.platform(), "processor": platform.processor(),
                        "torch": torch.__version__, "threads": torch.get_num_threads()},
        }
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
