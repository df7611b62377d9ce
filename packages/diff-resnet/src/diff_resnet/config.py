"""Configs and the paper's presets (Wang et al., TPAMI 2024; official code shwangtangjun/Diff-ResNet)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from diffcore.config import Presets
from diffcore.errors import ConfigError


@dataclass(frozen=True)
class ToyConfig:
    """One synthetic example of §4.1: a 2-D residual block, T diffusion steps, a linear classifier.

    ``n_top`` and ``sigma`` define the kNN Gaussian weights (σ², not 2σ², in the exponent);
    ``layers`` = T (0 = no diffusion); ``iterations`` counts evaluations (iteration 0 = untrained).
    """

    example: Literal["two_moon", "two_circle", "two_spiral", "xor"] = "two_moon"
    n_per_class: int = 500
    noise: float = 0.05
    sigma: float = 0.5
    n_top: int = 25
    layers: int = 60
    step_size: float = 1.0
    lr: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    iterations: int = 21
    seed: int = 40
    legacy_fresh_optimizer: bool = False


TOY_PRESETS: Presets[ToyConfig] = Presets({
    "two_moon": (ToyConfig("two_moon", noise=0.05, n_top=25, layers=60, lr=1.0, seed=40), "synthetic/two_moon.py"),
    "two_circle": (ToyConfig("two_circle", noise=0.05, n_top=50, layers=200, lr=1.0, seed=42),
                   "synthetic/two_circle.py"),
    "two_spiral": (ToyConfig("two_spiral", noise=0.1, n_top=25, layers=900, lr=0.8, seed=42),
                   "synthetic/two_spiral.py"),
    "xor": (ToyConfig("xor", n_per_class=200, noise=0.0, n_top=20, layers=0, iterations=201, seed=42),
            "synthetic/xor.py (pure diffusion; `iterations` = plotted diffusion iterations)"),
})

#: ``--example`` names on the command line → preset names.
TOY_EXAMPLES = {"moons": "two_moon", "circles": "two_circle", "spirals": "two_spiral", "xor": "xor"}


@dataclass(frozen=True)
class GraphConfig:
    """Semi-supervised node classification, gnn-benchmark protocol (§4.2).

    ``splits`` × ``inits`` runs from the seed chain of ``seed``; ``step_size`` = γ and ``layers`` = T
    have published values only for Cora (the README command); other datasets need them given.
    ``batch_runs`` trains the ``inits`` runs of a split together (same results as one at a time, up to
    rounding); ``device`` is a torch device string (``cuda`` for the full protocol).
    """

    dataset: Literal["cora", "citeseer", "pubmed"] = "cora"
    format: Literal["npz", "planetoid"] = "npz"
    step_size: float | None = None
    layers: int | None = None
    dropout: float = 0.5
    lr: float = 0.01
    weight_decay: float = 5e-4
    max_epochs: int = 10_000
    patience: int = 50
    splits: int = 100
    inits: int = 20
    seed: int = 42
    train_per_class: int = 20
    val_per_class: int = 30
    laplacian: Literal["renormalized", "identity"] = "renormalized"
    legacy_test_last_at_max_epochs: bool = False
    batch_runs: bool = True
    device: str = "cpu"


GRAPH_PRESETS: Presets[GraphConfig] = Presets({
    "cora": (GraphConfig("cora", step_size=0.25, layers=20, dropout=0.25), "README graph command"),
    "citeseer": (GraphConfig("citeseer"), "no published setting in the repository: pass --step-size and --layers"),
    "pubmed": (GraphConfig("pubmed"), "no published setting in the repository: pass --step-size and --layers"),
})


def check_options(checks: Iterable[tuple[bool, str]], device: str | None = None) -> None:
    """Raise :class:`ConfigError` with the message of the first failed ``(ok, message)`` check, then check that
    ``device`` (when given) is a torch device string. torch is imported only for that last check."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if device is not None:
        import torch

        try:
            torch.device(device)
        except RuntimeError as err:
            raise ConfigError(f"device={device!r} is not a torch device ({err})") from None
