"""Benchmark: forward+backward throughput of each DIANet model against its plain and SE twins.

For every family (``dia_resnet164``, ``dia_preresnet164``, ``dia_wrn52_4``, ``dia_resnext101_8x32d`` by
default) it builds the plain twin (``_base``), the SE twin (``_se``), the DIA model, the DIA model with the
fused gate switched off (``DIAStage.fused = False``: the same maths through plain autograd ops, the way the
official code computes it) and, for PreResNet and WRN, the DIA model without the extra BatchNorm that the
official DIA files add (``extra_bn=False``: the attention's cost alone). It times one training step
without the optimiser (zero_grad, forward, cross-entropy, backward) at batch 32 on 32×32 inputs
(CIFAR-100 heads). The variants are timed in turn in every round (the order rotates from round to round),
so all of them see the same machine load; each ratio is the median over rounds of the step time divided
by the plain twin's step time in the same round (wall clock, and CPU time of the process, which ignores
time it spent descheduled on a shared machine). ``--compile`` times ``torch.compile``d models instead.
Prints a table and writes JSON (``--output``).

    uv run python tools/bench_dianet.py --threads 1 --output bench_dianet.json   # 4 families
    uv run python tools/bench_dianet.py --families dia_resnet164 --rounds 3   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import dianet  # noqa: F401  (registers the models with timm)
import timm
import torch
from dianet.models import arch_kwargs
from diffcore.runs import format_table

FAMILIES = ("dia_resnet164", "dia_preresnet164", "dia_wrn52_4", "dia_resnext101_8x32d")
VARIANTS = {"plain": "_base", "SE": "_se", "DIA": "", "DIA unfused": "", "DIA without extra BN": ""}


def variants(family: str, compile_: bool) -> list[str]:
    """The extra-BN row only where the DIA model has one (PreResNet, WRN); no unfused row when compiled."""
    names = [v for v in VARIANTS if not (compile_ and v == "DIA unfused")]
    return names if arch_kwargs(family).get("extra_bn") else [v for v in names if v != "DIA without extra BN"]


def build(family: str, variant: str, compile_: bool) -> torch.nn.Module:
    extra = {"extra_bn": False} if variant == "DIA without extra BN" else {}
    model = timm.create_model(family + VARIANTS[variant], num_classes=100, **extra)
    if variant == "DIA unfused":
        for stage in model.stages:
            stage.fused = False
    if compile_:
        model.compile()  # compiled, the stages use the plain ops whatever `fused` says; inductor fuses them
    return model.train()


def step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one forward+backward."""
    wall, cpu = time.perf_counter(), time.process_time()
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_family(family: str, batch: int, rounds: int, warmup: int, compile_: bool) -> list[dict]:
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 100, (batch,))
    names = variants(family, compile_)
    models = {v: build(family, v, compile_) for v in names}
    for model in models.values():
        for _ in range(warmup):
            step(model, x, y)
    times: dict[str, list[tuple[float, float]]] = {v: [] for v in names}
    for r in range(rounds):
        for v in names[r % len(names):] + names[:r % len(names)]:
            times[v].append(step(models[v], x, y))
    rows = []
    for v in names:
        wall = [t[0] for t in times[v]]
        ratios = [t[0] / p[0] for t, p in zip(times[v], times["plain"], strict=True)]
        cpu_ratios = [t[1] / p[1] for t, p in zip(times[v], times["plain"], strict=True)]
        rows.append({
            "family": family, "variant": v + (" (compiled)" if compile_ else ""),
            "params": sum(p.numel() for p in models[v].parameters()),
            "step_ms": 1000 * statistics.median(wall), "images_per_s": batch / statistics.median(wall),
            "ratio_vs_plain": statistics.median(ratios), "cpu_ratio_vs_plain": statistics.median(cpu_ratios),
            "step_s": wall, "cpu_s": [t[1] for t in times[v]],
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=[*FAMILIES, "dia_resnet50"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="timed steps per variant (alternating)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads [default: torch's]")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model (plain, SE, DIA)")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows = [row for family in args.families
            for row in bench_family(family, args.batch_size, args.rounds, args.warmup, args.compile)]
    table = [{k: (f"{v:,}" if k == "params" else v) for k, v in row.items() if k not in ("step_s", "cpu_s")}
             for row in rows]
    print(format_table(table, floatfmt=".3g"))
    if args.output:
        meta = {"batch_size": args.batch_size, "input": "3x32x32", "rounds": args.rounds, "warmup": args.warmup,
                "threads": torch.get_num_threads(), "compile": args.compile, "torch": torch.__version__,
                "cpu": platform.processor(),
                "cores": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                "seconds": time.perf_counter() - started}
        args.output.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
