"""Split helpers shared by graph and image protocols."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from diffcore.errors import DataError


def class_balanced_split(
    labels: np.ndarray, per_class: Sequence[int], rng: np.random.RandomState,
) -> list[np.ndarray]:
    """gnn-benchmark split: for each size in ``per_class`` draw that many nodes of every class.

    Classes are visited in index order, candidates in node order, with
    ``rng.choice(candidates, size, replace=False)``; each later set excludes the earlier ones. The
    remaining nodes form the last returned set (the test set). Returns ``len(per_class) + 1`` index
    arrays. The draw order is part of the protocol: it fixes which runs a seed defines.
    """
    labels = np.asarray(labels)
    taken = np.zeros(len(labels), dtype=bool)
    sets = []
    for size in per_class:
        chosen = []
        for c in range(int(labels.max()) + 1):
            candidates = np.flatnonzero((labels == c) & ~taken)
            if len(candidates) < size:
                raise DataError(f"class {c} has {len(candidates)} free nodes, fewer than the {size} requested")
            chosen.append(rng.choice(candidates, size, replace=False))
        picked = np.concatenate(chosen)
        taken[picked] = True
        sets.append(picked)
    sets.append(np.flatnonzero(~taken))
    return sets
