"""Checks shared by the three tasks' configs, and the toy examples' config and presets (Wang et al., TPAMI 2024;
official code shwangtangjun/Diff-ResNet). The graph and few-shot configs live in their subpackages
(:mod:`diff_resnet.graph.config`, :mod:`diff_resnet.fewshot.config`).

Each config validates its own fields in ``check()`` (called by ``diffcore.cli.start_run`` before any run
directory exists, and by ``--dry-run``). Imports neither torch nor numpy: the CLI reads these for ``--help``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from diffcore.config import Presets, require

#: The distribution name: run directories go to ``runs/diff-resnet/`` and ``--version`` reads its metadata.
PACKAGE = "diff-resnet"
#: Seeds feed numpy.random.RandomState and torch.manual_seed, which take [0, 2³²).
SEED_LIMIT = 2**32
#: Dense N × N toy weights: 20,000 points already need 1.6 GB per matrix.
MAX_TOY_POINTS = 20_000
#: The smallest positive normal float32: a squared length scale below it underflows to 0 in the weights.
FLOAT32_TINY = 1.1754943508222875e-38


def require_positive(name: str, value: float) -> None:
    """``value`` is a finite number > 0 (a NaN or inf from ``--set`` is refused as well)."""
    require(math.isfinite(value) and value > 0, f"{name} must be a finite number > 0, got {value}")


def require_non_negative(name: str, value: float) -> None:
    require(math.isfinite(value) and value >= 0, f"{name} must be a finite number ≥ 0, got {value}")


def require_momentum(value: float) -> None:
    require(0 <= value < 1, f"momentum must lie in [0, 1), got {value}")


def require_seed(seed: int) -> None:
    require(0 <= seed < SEED_LIMIT, f"seed must lie in [0, 2**32), got {seed}")


def require_milestones(milestones: tuple[float, ...]) -> None:
    require(all(0 < m <= 1 for m in milestones) and list(milestones) == sorted(milestones),
            f"milestones are increasing fractions of the epochs in (0, 1], got {list(milestones)}")


@dataclass(frozen=True)
class ToyConfig:
    """One synthetic example of §4.1: a 2-D residual block, T diffusion steps, a linear classifier.

    ``n_top`` and ``sigma`` define the kNN Gaussian weights (σ², not 2σ², in the exponent);
    ``layers`` = T (0 = no diffusion); ``iterations`` counts evaluations (iteration 0 = untrained).

    ``momentum`` defaults to 0: the original scripts construct ``SGD(momentum=0.9)`` but build a new one
    before every step (quirk 3), so the momentum buffer is always empty and the published figures come
    from plain SGD with weight decay. ``momentum=0.9`` trains with one optimiser and real momentum; with
    the spiral's learning rate 0.8 that overshoots after reaching 100 %.
    """

    example: Literal["two_moon", "two_circle", "two_spiral", "xor"] = "two_moon"
    n_per_class: int = 500
    noise: float = 0.05
    sigma: float = 0.5
    n_top: int = 25
    layers: int = 60
    step_size: float = 1.0
    lr: float = 1.0
    momentum: float = 0.0
    weight_decay: float = 5e-4
    iterations: int = 21
    seed: int = 40

    @property
    def num_points(self) -> int:
        return 2 * self.n_per_class

    def check(self) -> None:
        prefix = f"{self.example}: "
        require(self.n_per_class >= 2, f"{prefix}n_per_class must be ≥ 2, got {self.n_per_class}")
        require(self.example != "xor" or self.n_per_class % 2 == 0,
                f"{prefix}n_per_class must be even (two discs per class), got {self.n_per_class}")
        require_non_negative(f"{prefix}noise", self.noise)
        require(math.isfinite(self.sigma) and self.sigma > 0 and self.sigma**2 >= FLOAT32_TINY,
                f"{prefix}sigma is the Gaussian length scale of the weights and must be a finite number > 0 "
                f"(σ² ≥ {FLOAT32_TINY:.3g}), got {self.sigma}")
        require(1 <= self.n_top <= self.num_points,
                f"{prefix}n_top must lie in [1, {self.num_points}] (neighbours kept per point, self included, "
                f"of the {self.num_points} points), got {self.n_top}")
        require(self.layers >= 0, f"{prefix}layers (diffusion steps T) must be ≥ 0, got {self.layers}")
        require_positive(f"{prefix}step_size", self.step_size)
        require_positive(f"{prefix}lr", self.lr)
        require_momentum(self.momentum)
        require_non_negative(f"{prefix}weight_decay", self.weight_decay)
        require(self.iterations >= 1, f"{prefix}iterations must be ≥ 1 (iteration 0 is the untrained network), "
                                      f"got {self.iterations}")
        require_seed(self.seed)
        require(self.num_points <= MAX_TOY_POINTS,
                f"{prefix}the toy examples use dense N × N weights; {self.num_points} points is too many "
                f"(at most {MAX_TOY_POINTS}, n_per_class ≤ {MAX_TOY_POINTS // 2})")


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
