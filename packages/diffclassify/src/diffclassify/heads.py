"""The few-shot heads, trained many at once (spec §6).

Heads (the original's ``smallnet.py``): ``linear`` = Linear(d→C); ``mlp`` = Linear(d→128) → ReLU → Linear(128→C).
Each head is trained on its own labelled rows with cross-entropy, Adam (lr 1e-3), minibatches of 32 in a fresh
random order every epoch (the last batch of an epoch may be smaller), for 90 epochs — as a plain
``DataLoader(shuffle=True)`` + ``torch.optim.Adam`` loop would.

Batching: the G heads of one feature file (every labelled-set size × seed) are stacked parameters
``[G, ...]`` evaluated with batched matmuls. Heads with more labelled rows take more steps per epoch, so
step k of the joint loop is step k of every head that still has one; the others are masked out — their loss
is excluded and their Adam state (moments *and* step count) is left untouched, so each head follows exactly
the trajectory it would follow alone (:func:`masked_adam_step` is ``torch.optim.Adam``'s update with a mask;
a test checks the batched heads against one-at-a-time ``torch.optim.Adam`` training).

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


def masked_adam_step(params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
                     state: dict[str, torch.Tensor], active: torch.Tensor, lr: float,
                     betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
    """``torch.optim.Adam``'s update (no weight decay, no amsgrad) for the ``active`` heads only.

    Shapes: every tensor ``[G, ...]``; ``active`` ``[G]`` bool. ``state`` holds ``step [G]`` and the moments.
    """
    beta1, beta2 = betas
    state["step"] += active.to(state["step"].dtype)
    for name, p in params.items():
        g = grads[name]
        mask = active.view(-1, *([1] * (p.dim() - 1)))
        m, v = state[f"m.{name}"], state[f"v.{name}"]
        m.copy_(torch.where(mask, torch.lerp(m, g, 1 - beta1), m))
        v.copy_(torch.where(mask, v * beta2 + (1 - beta2) * g * g, v))
        step = state["step"].clamp(min=1).view(-1, *([1] * (p.dim() - 1))).to(p.dtype)
        bias1 = 1 - beta1 ** step
        bias2_sqrt = (1 - beta2 ** step).sqrt()
        update = (lr / bias1) * m / (v.sqrt() / bias2_sqrt + eps)
        p.sub_(torch.where(mask, update, torch.zeros_like(update)))


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
                device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Train one head per run, all together; returns the stacked parameters ``{name: [G, ...]}``.

    Shapes: ``x`` ``[N, d]`` (the feature file's train rows), ``y`` ``[N]``.
    """
    gens = [head_generator(r.seed, r.per_class, kind) for r in runs]
    heads = [init_head(kind, x.shape[1], num_classes, hidden, gen) for gen in gens]
    params = {name: torch.stack([h[name] for h in heads]).to(device) for name in heads[0]}
    orders = _orders(runs, gens, epochs).to(device)
    x, y = x.to(device), y.to(device)
    n = torch.tensor([len(r.train_rows) for r in runs], device=device)
    per_epoch = (n + batch_size - 1) // batch_size
    total = per_epoch * epochs
    state = {"step": torch.zeros(len(runs), device=device)}
    for name, p in params.items():
        state[f"m.{name}"] = torch.zeros_like(p)
        state[f"v.{name}"] = torch.zeros_like(p)
    offsets = torch.arange(batch_size, device=device)
    heads_idx = torch.arange(len(runs), device=device)[:, None]
    for step in range(int(total.max())):
        active = step < total
        epoch = torch.minimum(step // per_epoch, torch.full_like(per_epoch, epochs - 1))
        position = (step % per_epoch)[:, None] * batch_size + offsets  # [G, B]
        valid = (position < n[:, None]) & active[:, None]
        rows = orders[heads_idx, epoch[:, None], position.clamp(max=orders.shape[2] - 1)]
        for p in params.values():
            p.requires_grad_(True)
        logits = head_logits(kind, params, x[rows])
        ce = F.cross_entropy(logits.flatten(0, 1), y[rows].flatten(), reduction="none").view_as(valid)
        per_head = (ce * valid).sum(1) / valid.sum(1).clamp(min=1)
        grads = dict(zip(params, torch.autograd.grad(per_head.sum(), list(params.values())), strict=True))
        with torch.no_grad():
            for p in params.values():
                p.requires_grad_(False)
            masked_adam_step(params, grads, state, active, lr)
    return {name: p.detach() for name, p in params.items()}


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
