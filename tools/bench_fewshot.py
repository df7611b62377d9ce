"""Benchmark: Diff-ResNet few-shot episodes, batched (stacked heads) vs one at a time (a ToyNet per episode).

Runs the §4.3 episode pipeline (spec; Wang et al., TPAMI 2024) on a feature file or on synthetic Gaussian
clusters shaped like miniImageNet's novel split (20 classes × 600 images), for each feature width in
``--dims``. Per round, ``--batch-episodes`` episodes go through :func:`diff_resnet.fewshot.episodes.diffusion_episodes`
at once and the first ``--looped`` of the same episodes through the one-at-a-time reference; rounds alternate
so both paths see the same machine load. Reports episodes per second of each path, their ratio, and whether
the shared episodes got the same accuracies. Prints a table and writes JSON.

    uv run python tools/bench_fewshot.py --output bench_fewshot.json          # 64-d and 512-d, 1-shot
    uv run python tools/bench_fewshot.py --features FILE --dims 0 --rounds 1   # a real feature file
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from diff_resnet.fewshot.config import FEWSHOT_PRESETS
from diff_resnet.fewshot.data import FeatureSet, load_features
from diff_resnet.fewshot.episodes import EpisodeSampler, episode_accuracies
from diffcore.runs import format_table


def synthetic_features(dim: int, classes: int = 20, per_class: int = 600, seed: int = 0) -> FeatureSet:
    """Gaussian clusters (unit centres spread, noise 1.5) standing in for a backbone's novel-class features."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    noisy = torch.randn(classes, dim, generator=g)[labels] * 2 + 1.5 * torch.randn(len(labels), dim, generator=g)
    features = noisy.relu()  # non-negative, like globally pooled ReLU features
    return FeatureSet(features, labels, features.mean(dim=0), {"dataset": f"gaussian-{dim}d"}, "synthetic")


def bench(features: FeatureSet, args: argparse.Namespace) -> dict:
    config = dataclasses.replace(FEWSHOT_PRESETS["mini-resnet18-1shot"], shot=args.shot, epochs=args.epochs,
                                 batch_episodes=args.batch_episodes)
    sampler = EpisodeSampler(features.labels.numpy())
    for batched in (True, False):  # warm-up: one-time imports and allocations stay out of the timings
        episode_accuracies(features.features, features.base_mean, sampler, [0],
                           dataclasses.replace(config, batched=batched, epochs=2))
    timings = {"batched": 0.0, "looped": 0.0}
    counts = {"batched": 0, "looped": 0}
    same = True
    for round_ in range(args.rounds):
        episodes = list(range(round_ * args.batch_episodes, (round_ + 1) * args.batch_episodes))
        results = {}
        for path, chosen, batched in (("batched", episodes, True), ("looped", episodes[: args.looped], False)):
            tick = time.perf_counter()
            results[path] = episode_accuracies(features.features, features.base_mean, sampler, chosen,
                                               dataclasses.replace(config, batched=batched))
            timings[path] += time.perf_counter() - tick
            counts[path] += len(chosen)
        same &= bool(torch.equal(results["batched"][: args.looped], results["looped"]))
    batched_rate, looped_rate = (counts[p] / timings[p] for p in ("batched", "looped"))
    return {"features": features.metadata.get("dataset") or features.path, "dim": features.features.shape[1],
            "shot": args.shot, "epochs": args.epochs, "batch_episodes": args.batch_episodes,
            "episodes": counts, "seconds": timings, "batched_episodes_per_s": batched_rate,
            "looped_episodes_per_s": looped_rate, "speedup": batched_rate / looped_rate, "same_accuracies": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=Path, default=None, help="a feature file [default: synthetic clusters]")
    parser.add_argument("--dims", default="64,512", help="synthetic feature widths (ignored with --features)")
    parser.add_argument("--shot", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=100, help="per-episode SGD steps (the paper: 100)")
    parser.add_argument("--batch-episodes", type=int, default=100, help="episodes per batched call")
    parser.add_argument("--looped", type=int, default=10, help="episodes per round run one at a time")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both paths")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.looped > args.batch_episodes:
        parser.error("--looped must not exceed --batch-episodes (the looped episodes are a prefix of each batch)")

    if args.features:
        sets = [load_features(args.features)]
    else:
        sets = [synthetic_features(int(d)) for d in args.dims.split(",")]
    rows = [bench(features, args) for features in sets]
    print(format_table([{
        "features": r["features"], "dim": r["dim"], "shot": r["shot"],
        "batched ep/s": f"{r['batched_episodes_per_s']:.2f}", "looped ep/s": f"{r['looped_episodes_per_s']:.2f}",
        "speedup": f"{r['speedup']:.1f}×", "same accs": r["same_accuracies"],
    } for r in rows]))
    if args.output:
        machine = {"platform": platform.platform(), "processor": platform.processor(),
                   "torch": torch.__version__, "threads": torch.get_num_threads(), "numpy": np.__version__}
        args.output.write_text(json.dumps({"machine": machine, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
