"""Train/validation/test splits of the released scripts (spec §3.2–3.5), vectorised.

A split is a triple of node (or instance) index tensors. Every function takes a ``torch.Generator`` so that
split r of a protocol is reproducible on its own (:func:`split_generator`).
"""

from __future__ import annotations

import numpy as np
import torch

Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def split_generator(seed: int, index: int) -> torch.Generator:
    """Generator of split ``index`` under ``seed``, decorrelated from the model's own seed stream."""
    state = np.random.SeedSequence([seed, 0x5EED, index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


def class_split(y: torch.Tensor, per_class: int, valid_num: int, test_num: int | None,
                generator: torch.Generator) -> Split:
    """``per_class`` random training nodes of every class (all of a smaller class); the other labelled nodes
    shuffled, the first ``valid_num`` → validation, the next ``test_num`` (None: all the rest) → test.

    The original's ``class_rand_splits`` (spec §3.2, §3.5), without a loop over classes: a random order,
    stably sorted by class, gives each node its rank inside its class. Nodes labelled −1 are never used.
    """
    labelled = torch.nonzero(y >= 0).flatten()
    order = labelled[torch.randperm(labelled.numel(), generator=generator)]
    order = order[torch.sort(y[order], stable=True).indices]
    counts = torch.bincount(y[order])
    first = torch.cumsum(counts, 0) - counts  # position where each class starts in `order`
    rank = torch.arange(order.numel()) - first[y[order]]
    train, rest = order[rank < per_class], order[rank >= per_class]
    rest = rest[torch.randperm(rest.numel(), generator=generator)]
    end = None if test_num is None else valid_num + test_num
    return train, rest[:valid_num], rest[valid_num:end]


def random_split(y: torch.Tensor, train_prop: float, valid_prop: float, generator: torch.Generator) -> Split:
    """The original's ``rand_train_test_idx``: a random permutation of the labelled nodes (y ≠ −1; every node
    for multi-task targets) cut at ``int(n·train_prop)`` and ``int(n·valid_prop)``."""
    labelled = torch.arange(y.shape[0]) if y.dim() == 2 else torch.nonzero(y != -1).flatten()
    n = labelled.numel()
    order = labelled[torch.randperm(n, generator=generator)]
    n_train, n_valid = int(n * train_prop), int(n * valid_prop)
    return order[:n_train], order[n_train:n_train + n_valid], order[n_train + n_valid:]


def mask_split(train_mask: torch.Tensor, val_mask: torch.Tensor, test_mask: torch.Tensor, index: int) -> Split:
    """Split ``index`` of ``[N, R]`` masks (cycling when there are fewer than ``index + 1``)."""
    column = index % train_mask.shape[1]
    return tuple(torch.nonzero(m[:, column]).flatten() for m in (train_mask, val_mask, test_mask))
