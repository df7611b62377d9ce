"""DIFFormer at scale: time and peak memory of forward + backward on generated sparse graphs.

Part 1 — the O(N) simple kernel: one DIFFormer-s layer (attention only, and with the GCN branch), PyG's
``SGFormerAttention`` (the same linear-attention idea, the module PyG users already have) and the full model,
on random graphs with N = 10⁴, 10⁵, 10⁶ nodes (d = 64, average degree about 10). The cases are timed
alternately, round after round, so a load change on the machine hits all of them alike; the median is reported.
Part 2 — the sigmoid kernel: our blockwise implementation next to the dense formula, N up to where it fits.

Peak memory is the process's resident-set high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``)
during one forward + backward, minus the resident set before it: what the step allocates, inputs excluded.

    flock /tmp/diffnets-cpu.lock uv run python tools/bench_difformer.py            # full run (~15 min)
    uv run python tools/bench_difformer.py --sizes 10000 --sigmoid-sizes 1000 --rounds 2   # quick look
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffcore.runs import format_table
from difformer.graph import normalized_adjacency, prepare_edges
from difformer.kernels import sigmoid_attention
from difformer.models import DIFFormer, DIFFormerConv
from torch_geometric.nn.attention import SGFormerAttention

WIDTH = 64


def _fix_malloc() -> None:
    """Serve every block of 64 KiB or more with mmap (glibc's threshold would otherwise grow and keep freed
    tensors in the heap), so that freed tensors leave the resident set and VmHWM sees each step's own peak."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
    libc.malloc_trim(0)


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def peak_bytes(step) -> int:
    """Resident-set high-water mark during ``step()`` minus the resident set before it."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current VmRSS
    before = _status("VmRSS")
    step()
    return _status("VmHWM") - before


def timed(step) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def random_graph(n: int, degree: int = 10, seed: int = 0) -> torch.Tensor:
    """n·degree/2 random pairs, symmetrised, one self-loop per node: about ``degree`` + 1 edges per node."""
    g = torch.Generator().manual_seed(seed)
    pairs = torch.randint(0, n, (2, n * degree // 2), generator=g)
    return prepare_edges(pairs, n)[0]


def fwd_bwd(module, inputs, upstream):
    def step():
        out = module(*inputs)
        out.backward(upstream)
        for p in module.parameters():
            p.grad = None
    return step


def simple_cases(n: int) -> tuple[dict, dict]:
    """The part-1 cases at size n (each a zero-argument forward + backward) and facts about the graph."""
    torch.manual_seed(0)
    x = torch.randn(n, WIDTH, requires_grad=True)
    started = time.perf_counter()
    edge_index = random_graph(n)
    graph_seconds = time.perf_counter() - started
    started = time.perf_counter()
    adj = normalized_adjacency(edge_index, n)
    adj_seconds = time.perf_counter() - started
    upstream = torch.randn(n, WIDTH)
    attention = DIFFormerConv(WIDTH, WIDTH, use_graph=False, use_weight=True)
    layer = DIFFormerConv(WIDTH, WIDTH, use_graph=True, use_weight=True)
    pyg = SGFormerAttention(WIDTH, heads=1, head_channels=WIDTH)
    model = DIFFormer(WIDTH, WIDTH, 10, num_layers=3, use_weight=True, use_graph=True, dropout=0.0)
    labels = torch.randint(0, 10, (n,))

    def model_step():
        F.cross_entropy(model(x, adj), labels).backward()
        model.zero_grad(set_to_none=True)

    cases = {
        "DIFFormer-s attention (ours)": fwd_bwd(attention, (x,), upstream),
        "SGFormerAttention (PyG)": fwd_bwd(pyg, (x.unsqueeze(0),), upstream.unsqueeze(0)),
        "DIFFormer-s layer + GCN (ours)": fwd_bwd(layer, (x, adj), upstream),
        "DIFFormer-s model, 3 layers (ours)": model_step,
    }
    facts = {"edges": int(edge_index.shape[1]), "graph_seconds": graph_seconds, "normalize_seconds": adj_seconds}
    return cases, facts


def bench_simple(sizes: list[int], rounds: int) -> list[dict]:
    rows = []
    for n in sizes:
        cases, facts = simple_cases(n)
        for step in cases.values():  # warm-up (and the graph branch's first use)
            step()
        times = {name: [] for name in cases}
        for _ in range(rounds):  # alternate: every case once per round
            for name, step in cases.items():
                times[name].append(timed(step))
        for name, step in cases.items():
            seconds = statistics.median(times[name])
            rows.append({"part": "simple", "case": name, "N": n, "edges": facts["edges"], "seconds": seconds,
                         "us_per_node": 1e6 * seconds / n, "peak_MiB": peak_bytes(step) / 2**20,
                         "rounds": rounds, "times": times[name]})
        pyg = statistics.median(times["SGFormerAttention (PyG)"])
        ours = statistics.median(times["DIFFormer-s attention (ours)"])
        print(f"N={n:,}: attention ours/PyG time = {ours / pyg:.2f}; graph built in {facts['graph_seconds']:.1f}s, "
              f"normalised in {facts['normalize_seconds']:.1f}s", flush=True)
        del cases
        gc.collect()
    return rows


def dense_sigmoid(q, k, v):
    """The formula as written: the N × N weights materialised."""
    weights = torch.sigmoid(torch.einsum("nhm,lhm->nlh", q, k))
    return torch.einsum("nlh,lhd->nhd", weights / weights.sum(1, keepdim=True), v)


def grad_step(fn, inputs: tuple[torch.Tensor, ...], upstream: torch.Tensor):
    def run():
        torch.autograd.grad(fn(*inputs), inputs, upstream)
    return run


def bench_sigmoid(sizes: list[int], rounds: int, dense_limit: int) -> list[dict]:
    rows = []
    for n in sizes:
        torch.manual_seed(0)
        inputs = tuple(torch.randn(n, 1, WIDTH, requires_grad=True) for _ in range(3))
        upstream = torch.randn(n, 1, WIDTH)
        cases = {"sigmoid blockwise (ours)": grad_step(sigmoid_attention, inputs, upstream)}
        if n <= dense_limit:
            cases["sigmoid dense formula"] = grad_step(dense_sigmoid, inputs, upstream)
        times = {name: [] for name in cases}
        for _ in range(rounds):
            for name, run in cases.items():
                times[name].append(timed(run))
        for name, run in cases.items():
            rows.append({"part": "sigmoid", "case": name, "N": n, "seconds": statistics.median(times[name]),
                         "peak_MiB": peak_bytes(run) / 2**20, "rounds": rounds, "times": times[name]})
        if n > dense_limit:
            rows.append({"part": "sigmoid", "case": "sigmoid dense formula", "N": n, "seconds": None,
                         "peak_MiB": None, "note": f"not run: N > --dense-limit {dense_limit} "
                                                   f"(one N×N float32 matrix alone is {4 * n * n / 2**30:.1f} GiB)"})
        print(f"sigmoid N={n:,} done", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="N for part 1 (comma-separated)")
    parser.add_argument("--sigmoid-sizes", default="1000,3000,10000,30000", help="N for part 2")
    parser.add_argument("--dense-limit", type=int, default=10000, help="largest N for the dense sigmoid formula")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per size")
    parser.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's]")
    parser.add_argument("--output", default="packages/difformer/results/bench_difformer.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    _fix_malloc()
    load_before = os.getloadavg()
    simple = bench_simple([int(float(s)) for s in args.sizes.split(",")], args.rounds)
    sigmoid = bench_sigmoid([int(float(s)) for s in args.sigmoid_sizes.split(",")], max(1, args.rounds // 2),
                            args.dense_limit)
    rows = simple + sigmoid
    shown = [{k: r.get(k) for k in ("case", "N", "edges", "seconds", "us_per_node", "peak_MiB") if k in r or
              k in ("seconds", "peak_MiB")} for r in rows]
    print(format_table(shown, floatfmt=".4g"))
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or
            platform.machine(), "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "width": WIDTH, "rounds": args.rounds}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
