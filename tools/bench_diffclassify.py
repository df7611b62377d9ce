"""Benchmark: the few-shot heads trained together against one at a time, and the U-Net step eager vs compiled.

1. Heads (spec §6 protocol: Adam 1e-3, batch 32, 90 epochs): for a features file of dimension d (80 = the
   MNIST U-Net's features, 784 = MNIST pixels), the 18 heads of one sweep row group (sizes 1, 2, 5, 10, 20,
   50 labels per class × 3 seeds) are trained (a) together by ``diffclassify.heads.train_heads`` and
   (b) one at a time — the same function called with one run, i.e. the plain per-head loop a user would write.
   Both on 1 and on 2 CPU threads. The variants alternate within every round, so each sees the same machine
   load; the table gives the median wall time per variant and the looped/batched ratio per round (median).
2. U-Net training step (batch 128, MNIST 28×28): eager against ``model.compile()``, alternating.

Prints tables and writes JSON (``--output``).

    flock /tmp/diffnets-cpu.lock uv run python tools/bench_diffclassify.py --output bench_diffclassify.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from diffclassify.heads import HeadRun, train_heads
from diffclassify.models import MyUNet
from diffcore.runs import format_table

SIZES = (1, 2, 5, 10, 20, 50)


def heads_case(dim: int, kind: str, threads: int, batched: bool, epochs: int) -> float:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5000, dim, generator=g), torch.arange(10).repeat(500)
    runs = [HeadRun(s, seed, np.concatenate([np.flatnonzero(y.numpy() == c)[:s] for c in range(10)]))
            for s in SIZES for seed in range(3)]
    started = time.perf_counter()
    if batched:
        train_heads(kind, x, y, runs, 10, epochs=epochs, cpu_threads=threads)
    else:
        for run in runs:
            train_heads(kind, x, y, [run], 10, epochs=epochs, cpu_threads=threads)
    return time.perf_counter() - started


def bench_heads(rounds: int, epochs: int) -> list[dict]:
    rows = []
    for dim in (80, 784):
        for kind in ("linear", "mlp"):
            for threads in (1, 2):
                times: dict[str, list[float]] = {"batched": [], "looped": []}
                for r in range(rounds):
                    order = ("batched", "looped") if r % 2 == 0 else ("looped", "batched")
                    for variant in order:
                        times[variant].append(heads_case(dim, kind, threads, variant == "batched", epochs))
                ratios = [lo / ba for lo, ba in zip(times["looped"], times["batched"], strict=True)]
                rows.append({"dim": dim, "head": kind, "threads": threads, "heads": 3 * len(SIZES),
                             "epochs": epochs, "batched_s": statistics.median(times["batched"]),
                             "looped_s": statistics.median(times["looped"]),
                             "looped/batched": statistics.median(ratios)})
                print(format_table([rows[-1]], floatfmt=".3g"), flush=True)
    return rows


def bench_unet(rounds: int, steps: int) -> list[dict]:
    torch.manual_seed(0)
    x, t = torch.randn(128, 1, 28, 28), torch.randint(0, 1000, (128,))
    eager, compiled = MyUNet(), MyUNet()
    compiled.compile()
    compiled(x, t).square().mean().backward()  # compile outside the timing
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for r in range(rounds):
        for name in (("eager", "compiled") if r % 2 == 0 else ("compiled", "eager")):
            model = eager if name == "eager" else compiled
            started = time.perf_counter()
            for _ in range(steps):
                model.zero_grad(set_to_none=True)
                model(x, t).square().mean().backward()
            times[name].append((time.perf_counter() - started) / steps)
    ratios = [e / c for e, c in zip(times["eager"], times["compiled"], strict=True)]
    return [{"batch": 128, "threads": torch.get_num_threads(), "eager_s_per_step": statistics.median(times["eager"]),
             "compiled_s_per_step": statistics.median(times["compiled"]), "eager/compiled": statistics.median(ratios)}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=90, help="head epochs (the protocol's 90)")
    parser.add_argument("--unet-steps", type=int, default=5)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    heads = bench_heads(args.rounds, args.epochs)
    unet = bench_unet(args.rounds, args.unet_steps)
    print(format_table(heads, floatfmt=".3g"))
    print(format_table(unet, floatfmt=".3g"))
    if args.output:
        args.output.write_text(json.dumps({"heads": heads, "unet_step": unet, "torch": torch.__version__,
                                           "platform": platform.platform(), "rounds": args.rounds}, indent=2) + "\n")


if __name__ == "__main__":
    main()
