"""The few-shot heads, trained many at once (spec §6).

Heads (the original's ``smallnet.py``): ``linear`` = Linear(d→C); ``mlp`` = Linear(d→128) → ReLU → Linear(128→C).
Each head is trained on its own labelled rows with cross-entropy, Adam (lr 1e-3), minibatches of 32 in a fresh
random order every epoch (the last batch of an epoch may be smaller), for 90 epochs — as a plain
``DataLoader(shuffle=True)`` + ``torch.optim.Adam`` loop would.

Batching: the G heads of one feature file (every labelled-set size × seed) are stacked parameters
``[G, ...]`` evaluated with batched matmuls. Heads with more labelled rows take more steps per epoch; sorted by
their step count, the heads still training at step k are a prefix, and only that prefix is computed and
updated, so each head takes exactly its own steps and follows the trajectory it would follow alone
(:func:`adam_step` is ``torch.optim.Adam``'s update; a test checks the batched heads against one-at-a-time
``torch.optim.Adam`` training).

Seeds: head g's initialisation (PyTorch's default Linear distribution, U(±1/√fan_in)) and its epoch orders come
from a generator seeded by (seed, per_class, head kind), so a head's result does not depend on which other
heads share its batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

HeadKind = Literal["linear", "mlp"]
HEADS: tuple[str, ...] = ("linear", "mlp")


@dataclass(frozen=True)
class HeadRun:
    """One head to train: its labelled rows and, for ``--test-source train-next``, its own evaluation rows.

    ``train_rows`` / ``eval_rows`` index the feature file's train rows; ``eval_rows=None`` means the test split.
    """

    per_class: int
    seed: int
    train_rows: np.ndarray
    eval_rows: np.ndarray | None = None


def head_generator(seed: int, per_class: int, kind: str) -> torch.Generator:
    """The generator of one head's initialisation and data order."""
    state = np.random.SeedSequence([seed, per_class, HEADS.index(kind)]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def _uniform(gen: torch.Generator, shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
    bound = 1.0 / math.sqrt(fan_in)
    return torch.empty(shape).uniform_(-bound, bound, generator=gen)


def init_head(kind: str, dim: int, num_classes: int, hidden: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """One head's parameters in ``nn.Linear`` layout (``weight [out, in]``), drawn as ``nn.Linear`` would."""
    if kind == "linear":
        return {"weight": _uniform(gen, (num_classes, dim), dim), "bias": _uniform(gen, (num_classes,), dim)}
    return {"fc1.weight": _uniform(gen, (hidden, dim), dim), "fc1.bias": _uniform(gen, (hidden,), dim),
            "fc2.weight": _uniform(gen, (num_classes, hidden), hidden),
            "fc2.bias": _uniform(gen, (num_classes,), hidden)}


def head_logits(kind: str, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Logits of G stacked heads. Shapes: ``x`` ``[G, B, d]`` (or ``[B, d]``, shared) → ``[G, B, C]``."""
    if x.dim() == 2:
        x = x.expand(len(next(iter(params.values()))), *x.shape)
    if kind == "linear":
        return torch.baddbmm(params["bias"][:, None], x, params["weight"].transpose(1, 2))
    hidden = F.relu(torch.baddbmm(params["fc1.bias"][:, None], x, params["fc1.weight"].transpose(1, 2)))
    return torch.baddbmm(params["fc2.bias"][:, None], hidden, params["fc2.weight"].transpose(1, 2))


def adam_step(params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], state: dict[str, torch.Tensor],
              step: int, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
    """``torch.optim.Adam``'s update (no weight decay, no amsgrad) of the first ``len(grads[name])`` heads.

    All updated heads are at the same ``step`` (1-based), so the bias corrections are scalars. Shapes: every
    tensor ``[G, ...]``; ``grads`` ``[a, ...]`` with a ≤ G (the heads still training).
    """
    beta1, beta2 = betas
    bias1 = 1 - beta1 ** step
    bias2_sqrt = math.sqrt(1 - beta2 ** step)
    for name, g in grads.items():
        a = len(g)
        m, v = state[f"m.{name}"][:a], state[f"v.{name}"][:a]
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        params[name][:a].addcdiv_(m, (v.sqrt() / bias2_sqrt).add_(eps), value=-lr / bias1)


def _orders(runs: Sequence[HeadRun], gens: Sequence[torch.Generator], epochs: int) -> torch.Tensor:
    """Each head's per-epoch random order of its own rows → ``[G, epochs, n_max]`` (padded with 0)."""
    n_max = max(len(r.train_rows) for r in runs)
    orders = torch.zeros(len(runs), epochs, n_max, dtype=torch.long)
    for g, (run, gen) in enumerate(zip(runs, gens, strict=True)):
        # One generator per head keeps a head's result independent of the batch it is trained in.
        rows = torch.as_tensor(run.train_rows, dtype=torch.long)
        orders[g, :, : len(rows)] = rows[torch.stack([torch.randperm(len(rows), generator=gen)
                                                      for _ in range(epochs)])]
    return orders


def train_heads(kind: str, x: torch.Tensor, y: torch.Tensor, runs: Sequence[HeadRun], num_classes: int, *,
                epochs: int = 90, batch_size: int = 32, lr: float = 1e-3, hidden: int = 128,
                device: str | torch.device = "cpu", cpu_threads: int | None = 1) -> dict[str, torch.Tensor]:
    """Train one head per run, all together; returns the stacked parameters ``{name: [G, ...]}`` in run order.

    Heads are sorted by their number of steps (descending), so the heads still training at step k are a prefix
    ``[:a_k]``: each step computes and updates only that prefix, and every head takes exactly its own steps.
    On a CPU the loop runs on ``cpu_threads`` threads (None: torch's setting): its tensors are a few hundred
    kilobytes, and on a shared machine waiting for a second thread costs more than it gains
    (``tools/bench_diffclassify.py`` measures both). Shapes: ``x`` ``[N, d]`` (the feature file's train rows),
    ``y`` ``[N]``.
    """
    threads = torch.get_num_threads()
    if cpu_threads is not None and torch.device(device).type == "cpu":
        torch.set_num_threads(cpu_threads)
    try:
        return _train_heads(kind, x, y, runs, num_classes, epochs, batch_size, lr, hidden, device)
    finally:
        torch.set_num_threads(threads)


def _train_heads(kind: str, x: torch.Tensor, y: torch.Tensor, runs: Sequence[HeadRun], num_classes: int,
                 epochs: int, batch_size: int, lr: float, hidden: int, device: str | torch.device
                 ) -> dict[str, torch.Tensor]:
    gens = [head_generator(r.seed, r.per_class, kind) for r in runs]
    heads = [init_head(kind, x.shape[1], num_classes, hidden, gen) for gen in gens]
    orders = _orders(runs, gens, epochs)
    n = torch.tensor([len(r.train_rows) for r in runs])
    per_epoch = (n + batch_size - 1) // batch_size
    total = per_epoch * epochs
    by_length = torch.sort(total, descending=True, stable=True).indices
    params = {name: torch.stack([heads[g][name] for g in by_length.tolist()]).to(device) for name in heads[0]}
    orders, n, per_epoch, total = (t[by_length].to(device) for t in (orders, n, per_epoch, total))
    state = {f"{moment}.{name}": torch.zeros_like(p) for name, p in params.items() for moment in ("m", "v")}
    x, y = x.to(device), y.to(device)
    offsets = torch.arange(batch_size, device=device)
    heads_idx = torch.arange(len(runs), device=device)[:, None]
    active = len(runs)
    for step in range(int(total[0])):
        while total[active - 1] <= step:
            active -= 1
        epoch, batch = step // per_epoch[:active], step % per_epoch[:active]
        position = batch[:, None] * batch_size + offsets  # [a, B]
        valid = position < n[:active, None]  # the last batch of an epoch may be short
        rows = orders[heads_idx[:active], epoch[:, None], position.clamp(max=orders.shape[2] - 1)]
        live = {name: p[:active].detach().requires_grad_() for name, p in params.items()}
        logits = head_logits(kind, live, x[rows])
        ce = F.cross_entropy(logits.flatten(0, 1), y[rows].flatten(), reduction="none").view_as(valid)
        per_head = (ce * valid).sum(1) / valid.sum(1)
        grads = dict(zip(live, torch.autograd.grad(per_head.sum(), list(live.values())), strict=True))
        with torch.no_grad():
            adam_step(params, grads, state, step + 1, lr)
    restore = torch.argsort(by_length).to(device)
    return {name: p[restore] for name, p in params.items()}


@torch.no_grad()
def head_accuracy(kind: str, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                  chunk: int = 4096) -> torch.Tensor:
    """Accuracy (%) of every head on one shared evaluation set. Shapes: ``x`` ``[N, d]``, ``y`` ``[N]`` → ``[G]``."""
    device = next(iter(params.values())).device
    correct = torch.zeros(len(next(iter(params.values()))), device=device)
    for start in range(0, len(x), chunk):
        xb, yb = x[start:start + chunk].to(device), y[start:start + chunk].to(device)
        correct += (head_logits(kind, params, xb).argmax(-1) == yb).sum(1)
    return 100.0 * correct.cpu() / len(x)


@torch.no_grad()
def head_accuracy_rows(kind: str, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                       rows: Sequence[np.ndarray]) -> torch.Tensor:
    """Accuracy (%) of head g on its own rows ``rows[g]`` of ``x`` (``--test-source train-next``) → ``[G]``."""
    device = next(iter(params.values())).device
    m = max(len(r) for r in rows)
    index = torch.zeros(len(rows), m, dtype=torch.long)
    valid = torch.zeros(len(rows), m, dtype=torch.bool)
    for g, r in enumerate(rows):
        index[g, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        valid[g, : len(r)] = True
    x, y, index, valid = x.to(device), y.to(device), index.to(device), valid.to(device)
    hits = (head_logits(kind, params, x[index]).argmax(-1) == y[index]) & valid
    return 100.0 * hits.sum(1).float().cpu() / valid.sum(1).float().cpu()
