"""The graph task's config and presets (Wang et al., TPAMI 2024, §4.2; official code ``graph/``).

Imports neither torch nor numpy: the CLI reads these to build ``--help``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from diffcore.config import Presets, require
from diffcore.device import check_device

from diff_resnet.config import require_non_negative, require_positive, require_seed


@dataclass(frozen=True)
class GraphConfig:
    """Semi-supervised node classification, gnn-benchmark protocol (§4.2).

    ``splits`` × ``inits`` runs from the seed chain of ``seed``; ``step_size`` = γ and ``layers`` = T
    have published values only for Cora (the README command); other datasets need them given.
    ``batch_runs`` trains the runs of a split together (same results as one at a time, up to rounding), as
    many as fit in ``batch_memory_gb`` (dropout masks and hidden states); ``device`` is a torch device string
    or ``auto`` (``cuda`` for the full protocol; under a multi-process launch each process uses its own GPU).
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
    batch_memory_gb: float = 8.0
    device: str = "cpu"

    def check(self) -> None:
        require(self.step_size is not None and self.layers is not None,
                f"{self.dataset} has no published step size / layer count here "
                f"({GRAPH_PRESETS.source(self.dataset)}); pass --step-size F and --layers N")
        require(math.isfinite(self.step_size) and self.step_size > 0,
                f"--step-size (γ) must be a finite number > 0, got {self.step_size} (γ ≤ 0 is no diffusion or "
                "anti-diffusion; use --layers 0 for the model without diffusion)")
        require(self.layers >= 0, f"--layers (diffusion steps T) must be ≥ 0, got {self.layers}")
        require(0 <= self.dropout < 1, f"--dropout must lie in [0, 1), got {self.dropout}")
        require_positive("lr", self.lr)
        require_non_negative("weight_decay", self.weight_decay)
        require(self.max_epochs >= 1, f"--max-epochs must be ≥ 1, got {self.max_epochs}")
        require(self.patience >= 1, f"patience must be ≥ 1, got {self.patience}")
        require(self.splits >= 1, f"--splits must be ≥ 1, got {self.splits}")
        require(self.inits >= 1, f"--inits must be ≥ 1, got {self.inits}")
        require_seed(self.seed)
        require(self.train_per_class >= 1 and self.val_per_class >= 1,
                f"train_per_class and val_per_class must be ≥ 1, got {self.train_per_class} and {self.val_per_class}")
        require_positive("batch_memory_gb", self.batch_memory_gb)
        check_device(self.device)


GRAPH_PRESETS: Presets[GraphConfig] = Presets({
    "cora": (GraphConfig("cora", step_size=0.25, layers=20, dropout=0.25), "README graph command"),
    "citeseer": (GraphConfig("citeseer"), "no published setting in the repository: pass --step-size and --layers"),
    "pubmed": (GraphConfig("pubmed"), "no published setting in the repository: pass --step-size and --layers"),
})
