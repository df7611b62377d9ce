"""Train/validation/test splits of the released scripts (spec §3.2–3.5), drawn as the original draws them.

The original seeds its global RNGs once and then draws the splits of all runs in sequence; we draw from a
private generator seeded the same way, with the same calls in the same order, so split r under seed s is the
original's ``split_idx_lst[r]`` (torch's CPU ``randperm`` for class splits, NumPy's legacy ``permutation``
for random splits) — in particular ``--reuse-first-split`` with seed 123 trains on the original's one Cora
split. A split is a triple of index tensors.
"""

from __future__ import annotations

import numpy as np
import torch

Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def class_split(y: torch.Tensor, per_class: int, valid_num: int, test_num: int | None,
                generator: torch.Generator) -> Split:
    """The original's ``class_rand_splits``: for every class (ascending) a random permutation of its nodes, the
    first ``per_class`` for training (all of a smaller class); the other nodes shuffled, the first
    ``valid_num`` → validation, the next ``test_num`` (None: all the rest) → test. Nodes labelled −1 are never
    used (the original would treat −1 as a class).

    The loop runs over the C classes because each class's ``randperm`` call is part of the random stream.
    """
    train, rest = [], []
    for c in torch.unique(y[y >= 0]).tolist():
        nodes = torch.nonzero(y == c).flatten()
        nodes = nodes[torch.randperm(nodes.numel(), generator=generator)]
        train.append(nodes[:per_class])
        rest.append(nodes[per_class:])
    rest = torch.cat(rest)
    rest = rest[torch.randperm(rest.numel(), generator=generator)]
    end = None if test_num is None else valid_num + test_num
    return torch.cat(train), rest[:valid_num], rest[valid_num:end]


def class_splits(y: torch.Tensor, per_class: int, valid_num: int, test_num: int | None, count: int,
                 seed: int) -> list[Split]:
    """``count`` class splits drawn in sequence from one generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return [class_split(y, per_class, valid_num, test_num, generator) for _ in range(count)]


def random_splits(y: torch.Tensor, train_prop: float, valid_prop: float, count: int, seed: int) -> list[Split]:
    """The original's ``rand_train_test_idx``, ``count`` times from ``np.random.RandomState(seed)``: a permutation
    of the labelled nodes (y ≠ −1; every node for multi-task targets) cut at ``int(n·train_prop)`` and
    ``int(n·valid_prop)``."""
    rng = np.random.RandomState(seed)
    labelled = torch.arange(y.shape[0]) if y.dim() == 2 else torch.nonzero(y != -1).flatten()
    n = labelled.numel()
    n_train, n_valid = int(n * train_prop), int(n * valid_prop)
    splits = []
    for _ in range(count):
        order = labelled[torch.from_numpy(rng.permutation(n))]
        splits.append((order[:n_train], order[n_train:n_train + n_valid], order[n_train + n_valid:]))
    return splits


def mask_split(train_mask: torch.Tensor, val_mask: torch.Tensor, test_mask: torch.Tensor, index: int) -> Split:
    """Split ``index`` of ``[N, R]`` masks (cycling when there are fewer than ``index + 1``)."""
    column = index % train_mask.shape[1]
    return tuple(torch.nonzero(m[:, column]).flatten() for m in (train_mask, val_mask, test_mask))
