"""The ``fit`` stage: heads for every labelled-set size × seed of one features file, trained together (spec §6).

Labelled sets come from the file's training rows (which keep dataset order): the first s of every class
(``split="first"``, the original) or s drawn per seed (``split="random"``). Evaluation: the file's test rows
(the dataset's test split, optionally its first k per class) or, with ``test_source="train-next"``, the
original's next k training images of every class. Train and evaluation rows never overlap (checked).

Result rows (one per size; accuracies in percent): ``source``, ``head``, ``per_class``, ``timestep``
(``None`` for sources without one; a list for multi-t features), ``acc_mean``, ``acc_std`` (sample std over
seeds, 0 for one seed), ``seeds`` (how many), ``accs`` (per seed), ``dim``, ``test_images``, ``leaky``,
``standardized``.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from diffcore.device import resolve_device
from diffcore.errors import ConfigError

from diffclassify.config import HeadConfig
from diffclassify.data import class_counts, first_per_class, next_per_class, random_per_class
from diffclassify.features import FeatureSet
from diffclassify.heads import HeadRun, head_accuracy, head_accuracy_rows, train_heads


def check_features(features: FeatureSet, path: str, dataset: str | None = None, source: str | None = None) -> None:
    """A :class:`ConfigError` when the file was made from another dataset or source than expected."""
    meta = features.meta
    if dataset is not None and meta.get("dataset") != dataset:
        raise ConfigError(f"{path} holds features of dataset {meta.get('dataset')!r}, not {dataset!r}; "
                          f"extract features of {dataset} first")
    if source is not None and meta.get("source") != source:
        raise ConfigError(f"{path} holds {meta.get('source')!r} features, not {source!r}; "
                          f"extract with --source {source} first")


def plan_runs(features: FeatureSet, sizes: Sequence[int], seeds: Sequence[int], protocol: HeadConfig,
              path: str = "the features file") -> list[HeadRun]:
    """One :class:`HeadRun` per (size, seed), size-major; every size is checked against the class counts."""
    labels = features.train_labels.numpy()
    counts = class_counts(labels, features.num_classes)
    if protocol.split == "random" and protocol.test_source == "train-next":
        raise ConfigError("--test-source train-next follows the first s images of each class: "
                          "use it with --split first")
    extracted = features.meta.get("train_per_class")
    for size in sizes:
        n_test = (protocol.test_per_class or size) if protocol.test_source == "train-next" else 0
        smallest = int(counts.argmin())
        if counts[smallest] < size + n_test:
            extra = f" plus {n_test} train-next test images" if n_test else ""
            hint = (f"; it was extracted with --train-per-class {extracted}: extract more" if extracted
                    else "; choose a smaller --per-class")
            raise ConfigError(f"--per-class {size}{extra} is larger than class {smallest}, which has "
                              f"{int(counts[smallest])} training images in {path}{hint}")
    if protocol.test_source == "test" and protocol.test_per_class is not None:
        test_counts = class_counts(features.test_labels.numpy(), features.num_classes)
        if test_counts.min() < protocol.test_per_class:
            raise ConfigError(f"--test-per-class {protocol.test_per_class} is larger than class "
                              f"{int(test_counts.argmin())}, which has {int(test_counts.min())} test images in {path}")
    runs = []
    for size in sizes:
        for seed in seeds:
            if protocol.split == "first":
                rows = first_per_class(labels, size)
            else:
                rows = random_per_class(labels, size, np.random.default_rng([seed, size]))
            eval_rows = None
            if protocol.test_source == "train-next":
                eval_rows = next_per_class(labels, size, protocol.test_per_class or size)
                assert not set(rows.tolist()) & set(eval_rows.tolist()), "train and test rows overlap"
            runs.append(HeadRun(size, seed, rows, eval_rows))
    return runs


def _timestep(meta: dict[str, Any]) -> int | list[int] | None:
    steps = meta.get("timesteps") or []
    return None if not steps else steps[0] if len(steps) == 1 else list(steps)


def standardized(features: FeatureSet) -> FeatureSet:
    """z-scored features: mean and std of every dimension over the file's training rows (no labels used)."""
    mean, std = features.train_features.mean(0), features.train_features.std(0).clamp(min=1e-6)
    return dataclasses.replace(features, train_features=(features.train_features - mean) / std,
                               test_features=(features.test_features - mean) / std)


def fit_heads(features: FeatureSet, head: str, sizes: Sequence[int], seeds: Sequence[int], protocol: HeadConfig,
              path: str = "the features file") -> list[dict[str, Any]]:
    """Train and evaluate ``len(sizes) × len(seeds)`` heads of one kind together; one result row per size."""
    runs = plan_runs(features, sizes, seeds, protocol, path)
    if protocol.standardize:
        features = standardized(features)
    params = train_heads(head, features.train_features, features.train_labels, runs, features.num_classes,
                         epochs=protocol.epochs, batch_size=protocol.batch_size, lr=protocol.lr,
                         hidden=protocol.hidden, device=resolve_device(protocol.device))
    if protocol.test_source == "test":
        test_rows = np.arange(len(features.test_labels))
        if protocol.test_per_class is not None:
            test_rows = np.sort(first_per_class(features.test_labels.numpy(), protocol.test_per_class))
        rows_t = torch.as_tensor(test_rows)
        accs = head_accuracy(head, params, features.test_features[rows_t], features.test_labels[rows_t])
        test_images = [len(test_rows)] * len(runs)
    else:
        accs = head_accuracy_rows(head, params, features.train_features, features.train_labels,
                                  [r.eval_rows for r in runs])
        test_images = [len(r.eval_rows) for r in runs]
    results = []
    for k, size in enumerate(sizes):
        values = [float(a) for a in accs[k * len(seeds):(k + 1) * len(seeds)]]
        results.append({
            "source": features.meta.get("source"), "head": head, "per_class": size,
            "timestep": _timestep(features.meta), "acc_mean": statistics.fmean(values),
            "acc_std": statistics.stdev(values) if len(values) > 1 else 0.0, "seeds": len(values),
            "accs": values, "dim": features.dim, "test_images": test_images[k * len(seeds)],
            "leaky": bool(features.meta.get("leaky", False)), "standardized": protocol.standardize,
        })
    return results
