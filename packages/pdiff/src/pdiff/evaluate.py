"""Evaluation of many parameter sets at once, the memorisation baselines and the similarity metrics
(spec §9, §16; arXiv 2506.07998).

:func:`predict_many` stacks M vectors of S and runs the host once per chunk of models with
``torch.func.vmap(functional_call)``: the frozen part of the network before the first generated tensor sees
unbatched weights and inputs, so vmap computes it once for the whole chunk, and the rest runs as one batched
(grouped) computation. :func:`predict_looped` is the one-model-at-a-time reference.

Similarity: for model m let W_m be its set of misclassified test examples; IoU(a, b) = |W_a ∩ W_b| / |W_a ∪ W_b|
(1 when both are empty), computed for all pairs with one matrix product of the 0/1 error matrices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from pdiff.params import ParamSpec

Prepare = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def predict_many(host: nn.Module, spec: ParamSpec, flats: torch.Tensor, images: torch.Tensor, prepare: Prepare,
                 batch_size: int = 1000, chunk: int = 16) -> torch.Tensor:
    """Predicted classes ``(M, N)`` of the host with each row of ``flats`` ``(M, D)`` as its S, on ``images``.

    ``host`` is used in eval mode (BatchNorm running statistics of the host). Memory: about ``chunk`` ×
    ``batch_size`` activations of the layers after the first generated tensor.
    """
    host.eval()
    device = next(host.parameters()).device

    def logits(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(host, params, (x,), strict=False)

    batched = torch.func.vmap(logits, in_dims=(0, None))
    out = torch.empty(len(flats), len(images), dtype=torch.long)
    for start in range(0, len(images), batch_size):
        x = prepare(images[start: start + batch_size].to(device))
        for m in range(0, len(flats), chunk):
            params = spec.unflatten(flats[m: m + chunk].to(device))
            out[m: m + chunk, start: start + len(x)] = batched(params, x).argmax(-1).cpu()
    return out


@torch.no_grad()
def predict_looped(host: nn.Module, spec: ParamSpec, flats: torch.Tensor, images: torch.Tensor, prepare: Prepare,
                   batch_size: int = 1000) -> torch.Tensor:
    """Reference for :func:`predict_many`: one ``functional_call`` per model and image batch."""
    host.eval()
    device = next(host.parameters()).device
    out = torch.empty(len(flats), len(images), dtype=torch.long)
    for start in range(0, len(images), batch_size):
        x = prepare(images[start: start + batch_size].to(device))
        for m, flat in enumerate(flats):
            params = spec.unflatten(flat.to(device))
            logits = torch.func.functional_call(host, params, (x,), strict=False)
            out[m, start: start + len(x)] = logits.argmax(-1).cpu()
    return out


def predict(host: nn.Module, spec: ParamSpec, flats: torch.Tensor, images: torch.Tensor, prepare: Prepare,
            batch_size: int = 1000, chunk: int = 16, batched: bool = True) -> torch.Tensor:
    """:func:`predict_many` (``batched``) or :func:`predict_looped`; same predictions, different speed (whole-
    network generation of conv nets is faster looped on a CPU: vmapped convolutions become grouped ones)."""
    if batched:
        return predict_many(host, spec, flats, images, prepare, batch_size, chunk)
    return predict_looped(host, spec, flats, images, prepare, batch_size)


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(M, N)`` predictions → ``(M,)`` accuracy in percent."""
    return (predictions == labels).double().mean(1) * 100


def accuracy_stats(test_acc: torch.Tensor, val_acc: torch.Tensor | None = None, select_on: str = "val"
                   ) -> dict[str, float]:
    """best / mean / median / min / std (population) of test accuracies in percent.

    ``best`` is the test accuracy of the model with the best *validation* accuracy (``select_on="val"``), or
    the maximum test accuracy (``"test"``, what the official code reports).
    """
    test_acc = test_acc.double()
    if select_on == "val" and val_acc is not None:
        best = test_acc[int(torch.argmax(val_acc))].item()
    else:
        best = test_acc.max().item()
    return {"best": best, "mean": test_acc.mean().item(), "median": test_acc.median().item(),
            "min": test_acc.min().item(), "std": test_acc.std(unbiased=False).item(), "count": len(test_acc)}


def iou_matrix(wrong_a: torch.Tensor, wrong_b: torch.Tensor) -> torch.Tensor:
    """IoU of the error sets: ``(A, N)``, ``(B, N)`` booleans → ``(A, B)``, 1 where both sets are empty."""
    a, b = wrong_a.double(), wrong_b.double()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))


def mean_offdiagonal(matrix: torch.Tensor) -> float:
    """Mean over pairs of distinct models (NaN for a single model)."""
    n = len(matrix)
    if n < 2:
        return math.nan
    return ((matrix.sum() - matrix.diagonal().sum()) / (n * (n - 1))).item()


def similarity(wrong_original: torch.Tensor, wrong_other: torch.Tensor, same: bool = False) -> dict[str, Any]:
    """O-O, X-X, O-X mean and O-X max (the mean over X models of their max IoU to any original), plus the
    per-model max IoU for scatter plots. ``same=True`` (X are the originals) leaves out each model's IoU with
    itself, so O-X max is the IoU to the *nearest other* original."""
    ox = iou_matrix(wrong_other, wrong_original)
    if same:
        ox.fill_diagonal_(math.nan)
    max_iou = ox.nan_to_num(-1.0).max(1).values
    return {"oo": mean_offdiagonal(iou_matrix(wrong_original, wrong_original)),
            "gg": mean_offdiagonal(iou_matrix(wrong_other, wrong_other)),
            "og_mean": ox.nanmean().item(), "og_max": max_iou.mean().item(), "max_iou": max_iou}


def nearest_distance(points: torch.Tensor, references: torch.Tensor, exclude_self: bool = False) -> torch.Tensor:
    """L2 distance of each row of ``points`` ``(M, D)`` to its nearest row of ``references`` ``(K, D)``."""
    dist = torch.cdist(points.double(), references.double())
    if exclude_self:
        dist.fill_diagonal_(math.inf)
    return dist.min(1).values


# ---------------------------------------------------------------------------------------------- baselines


def weight_average(checkpoints: torch.Tensor) -> torch.Tensor:
    """The "ensemble" of the p-diff tables: element-wise mean of the K vectors, ``(K, D)`` → ``(1, D)``
    (summed in float64, so K identical vectors average to exactly that vector)."""
    return checkpoints.double().mean(0, keepdim=True).to(checkpoints.dtype)


def average_of_random(checkpoints: torch.Tensor, count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` models, each the mean of ``size`` checkpoints drawn without replacement: ``(count, D)``."""
    size = min(size, len(checkpoints))
    picks = torch.rand(count, len(checkpoints), generator=generator).argsort(1)[:, :size]
    return checkpoints[picks].double().mean(1).to(checkpoints.dtype)


def gaussian_fit(checkpoints: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` draws of a per-coordinate Gaussian N(mean_k, std_k²) fitted to the checkpoints: ``(count, D)``."""
    mean, std = checkpoints.mean(0), checkpoints.std(0, unbiased=False)
    return mean + std * torch.randn(count, checkpoints.shape[1], generator=generator, dtype=checkpoints.dtype)


def perturbed(checkpoints: torch.Tensor, count: int, scale: torch.Tensor | float, generator: torch.Generator
              ) -> torch.Tensor:
    """``count`` random originals plus ``scale · ε`` (``scale`` a number or per coordinate ``(D,)``)."""
    picks = torch.randint(len(checkpoints), (count,), generator=generator)
    noise = torch.randn(count, checkpoints.shape[1], generator=generator, dtype=checkpoints.dtype)
    return checkpoints[picks] + scale * noise


# ------------------------------------------------------------------------------------------------- plots


def plot_histogram(groups: Mapping[str, torch.Tensor], path: str) -> None:
    """Histogram of test accuracies per group (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    values = torch.cat([v for v in groups.values() if len(v)])
    lo, hi = values.min().item(), values.max().item()
    bins = torch.linspace(lo - 0.05, hi + 0.05, 41).tolist()
    for name, acc in groups.items():
        if len(acc) > 1:
            ax.hist(acc.tolist(), bins=bins, alpha=0.5, label=f"{name} ({len(acc)})")
        elif len(acc) == 1:
            ax.axvline(acc.item(), linestyle="--", color="k", label=f"{name}")
    ax.set_xlabel("test accuracy (%)")
    ax.set_ylabel("models")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_scatter(groups: Mapping[str, tuple[torch.Tensor, torch.Tensor]], path: str) -> None:
    """Max IoU to any original versus test accuracy, one colour per group (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, (max_iou, acc) in groups.items():
        ax.scatter(max_iou.tolist(), acc.tolist(), s=10, alpha=0.6, label=name)
    ax.set_xlabel("max IoU of wrong predictions to any original (memorisation →)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
