"""Figures: accuracy versus labels per class and versus timestep, and image grids (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

LINESTYLES = {"linear": "-", "mlp": "--"}


def _label(row: dict[str, Any]) -> str:
    t = row.get("timestep")
    suffix = "" if t is None else f", t={t if not isinstance(t, list) else '+'.join(map(str, t))}"
    return f"{row['source']}{suffix} · {row['head']}" + (" (leaky)" if row.get("leaky") else "")


def plot_accuracy_vs_labels(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """One line per (source, head): mean test accuracy ± std over seeds against labels per class (log x)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(_label(row), []).append(row)
    colours = {}
    for label, group in groups.items():
        group = sorted(group, key=lambda r: r["per_class"])
        source = group[0]["source"]
        colour = colours.setdefault(source, f"C{len(colours)}")
        ax.errorbar([r["per_class"] for r in group], [r["acc_mean"] for r in group],
                    yerr=[r["acc_std"] for r in group], label=label, color=colour,
                    linestyle=LINESTYLES.get(group[0]["head"], ":"), marker="o", markersize=3, capsize=2)
    ax.set_xscale("log")
    sizes = sorted({r["per_class"] for r in rows})
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("labelled images per class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "few-shot accuracy by feature source")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_accuracy_vs_timestep(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """One line per (head, labels per class): accuracy of the DDPM features against the feature timestep."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["head"], row["per_class"]), []).append(row)
    for (head, size), group in groups.items():
        group = sorted(group, key=lambda r: r["timestep"])
        ax.errorbar([r["timestep"] for r in group], [r["acc_mean"] for r in group],
                    yerr=[r["acc_std"] for r in group], label=f"{head}, {size}/class",
                    linestyle=LINESTYLES.get(head, ":"), marker="o", markersize=3, capsize=2)
    ax.set_xscale("log")
    ax.set_xlabel("timestep t of the features (of 1000)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "DDPM features: accuracy against the noise level")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, title: str = "") -> Path:
    """Images in [0, 1] ``[N, C, H, W]`` → one PNG grid (nearest-neighbour, so small digits stay sharp)."""
    from torchvision.utils import make_grid

    n = len(images)
    nrow = nrow or max(1, round(n ** 0.5))
    grid = make_grid(images.clamp(0, 1).float().cpu(), nrow=nrow, padding=2, pad_value=1.0)
    fig, ax = plt.subplots(figsize=(max(3.0, grid.shape[2] / 40), max(3.0, grid.shape[1] / 40)))
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    from diffcore.io import atomic_path

    path = Path(path)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path
