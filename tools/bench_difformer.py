"""DIFFormer at scale: time and peak memory of forward + backward on generated sparse graphs.

Part 1 — the O(N) simple kernel: one DIFFormer-s layer (attention only, and with the GCN branch), PyG's
``SGFormerAttention`` (the same linear-attention idea, the module PyG users already have) and the full model,
on random graphs with N = 10⁴, 10⁵, 10⁶ nodes (d = 64, average degree about 10). The cases are timed
alternately, round after round, so a load change on the machine hits all of them alike; the median is reported.
Part 2 — the sigmoid kernel: our blockwise implementation next to the dense formula, N up to where it fits.
Part 3 — one Cora epoch (training step + full evaluation) of the cora-s / cora-a presets: our model next to
the original's computation (re-written from the spec as a timing reference), alternating epoch by epoch.

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
from difformer.node import available_memory
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
    }
    # the model keeps about 40 [N, 64] float tensors for its backward; skip it rather than swap a shared machine
    if 40 * n * WIDTH * 4 < 0.7 * available_memory(torch.device("cpu")):
        cases["DIFFormer-s model, 3 layers (ours)"] = model_step
    else:
        print(f"N={n:,}: model case skipped, not enough free memory", flush=True)
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


# ------------------------------------------------------------------------------- Cora epoch vs the original


def original_forward(model: DIFFormer, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """The computation of the official ``difformer.py`` (commit 89af3b2), re-written here from spec §2 and used
    only as a timing reference on the same parameters: dense input features, the GCN normalisation and a COO
    adjacency rebuilt in every layer of every forward with one sparse product per head (quirk 13), the simple
    kernel's Σ_j v_j tiled to L rows, and the sigmoid kernel's normaliser repeated to an N × L × H tensor."""
    n = x.shape[0]

    def gcn(value):
        row, col = edge_index
        deg = torch.bincount(col, minlength=n).float()
        weight = torch.nan_to_num(deg[col].rsqrt() * deg[row].rsqrt(), nan=0.0, posinf=0.0, neginf=0.0)
        adj = torch.sparse_coo_tensor(torch.stack([col, row]), weight, (n, n)).coalesce()
        return torch.stack([torch.sparse.mm(adj, value[:, i]) for i in range(value.shape[1])], dim=1)

    def attention(q, k, v, kernel):
        if kernel == "simple":
            q, k = q / torch.norm(q, p=2), k / torch.norm(k, p=2)
            num = torch.einsum("nhm,hmd->nhd", q, torch.einsum("lhm,lhd->hmd", k, v))
            num = num + torch.einsum("l,lhd->hd", torch.ones(v.shape[0]), v).unsqueeze(0).repeat(v.shape[0], 1, 1)
            den = torch.einsum("nhm,hm->nh", q, torch.einsum("lhm,l->hm", k, torch.ones(k.shape[0]))).unsqueeze(-1)
            return num / (den + torch.ones_like(den) * n)
        weights = torch.sigmoid(torch.einsum("nhm,lhm->nlh", q, k))
        den = torch.einsum("nlh,l->nh", weights, torch.ones(k.shape[0])).unsqueeze(1).repeat(1, k.shape[0], 1)
        return torch.einsum("nlh,lhd->nhd", weights / den, v)

    h = F.dropout(F.relu(model.bns[0](model.fcs[0](x))), model.dropout, model.training)
    previous = h
    for i, conv in enumerate(model.convs):
        heads, width = conv.num_heads, conv.out_channels
        q, k = conv.Wq(h).reshape(-1, heads, width), conv.Wk(h).reshape(-1, heads, width)
        v = conv.Wv(h).reshape(-1, heads, width) if conv.use_weight else h.reshape(-1, 1, width)
        out = (attention(q, k, v, conv.kernel) + gcn(v)).mean(dim=1)
        h = model.bns[i + 1](model.alpha * out + (1 - model.alpha) * previous)
        h = previous = F.dropout(h, model.dropout, model.training)
    return model.fcs[1](h)


def cora_epoch(model, optimizer, forward, x, data, train) -> None:
    model.train()
    optimizer.zero_grad()
    F.cross_entropy(forward(model, x, data.edge_index)[train], data.y[train]).backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        forward(model, x, data.edge_index)


def bench_cora(root: str, epochs: int) -> list[dict]:
    """One epoch = a training step on the 140 training nodes + an eval-mode forward of the whole graph, for the
    cora-s and cora-a presets; our model and the original's computation alternate epoch by epoch."""
    from difformer.config import NODE_PRESETS
    from difformer.data import load_node_dataset
    from difformer.node import build_model, node_splits, sparse_if_sparse

    dataset = load_node_dataset("cora", root)
    data = dataset.data
    variants = {"ours": (lambda m, x, e: m(x, e), sparse_if_sparse(data.x)),
                "original computation": (original_forward, data.x)}
    rows = []
    for preset in ("cora-s", "cora-a"):
        config = NODE_PRESETS[preset]
        train = node_splits(config, dataset)[1][0][0]
        torch.manual_seed(0)
        model = build_model(config.model, data.num_features, dataset.num_classes)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        times = {name: [] for name in variants}
        for _ in range(epochs):
            for name, (forward, x) in variants.items():
                started = time.perf_counter()
                cora_epoch(model, optimizer, forward, x, data, train)
                times[name].append(time.perf_counter() - started)
        for name, values in times.items():
            rows.append({"part": "cora", "case": f"{preset} epoch, {name}", "N": data.num_nodes,
                         "seconds": statistics.median(values), "rounds": epochs, "times": values})
        ratio = rows[-2]["seconds"] / rows[-1]["seconds"]
        print(f"{preset}: ours / original computation = {ratio:.2f} per epoch", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="N for part 1 (comma-separated)")
    parser.add_argument("--sigmoid-sizes", default="1000,3000,10000,30000", help="N for part 2")
    parser.add_argument("--dense-limit", type=int, default=10000, help="largest N for the dense sigmoid formula")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per size")
    parser.add_argument("--cora-epochs", type=int, default=10, help="alternating epochs per Cora preset (0: skip)")
    parser.add_argument("--data-root", default="../shared/data", help="where planetoid/Cora/raw is")
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
    cora = bench_cora(args.data_root, args.cora_epochs) if args.cora_epochs else []
    rows = simple + sigmoid + cora
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
