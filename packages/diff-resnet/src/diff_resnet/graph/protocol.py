"""The gnn-benchmark protocol of Diff-ResNet's node classification (§4.2), one run at a time.

Paper: T. Wang, Z. Dou, C. Bao, Z. Shi, "Diffusion Mechanism in Residual Neural Network: Theory and
Applications", IEEE TPAMI 46(2):667–680, 2024 (``graph/train.py`` of the official code). This module is
the protocol as the paper runs it; :mod:`diff_resnet.graph.engine` trains many runs at once and must
reproduce :func:`train_run_single` run by run (tested).

* Seed chain: the master ``RandomState(seed)`` draws the split seeds; each split's ``RandomState`` draws
  20 train then 30 validation nodes per class (the rest is the test set) and *then* the init seeds
  (quirk 9), each of which seeds torch before a model is built.
* One run: full-batch Adam on the training nodes' cross-entropy; after every epoch the validation loss and
  accuracy (eval mode) feed the loss-OR-accuracy patience rule (:class:`EarlyStopping`, quirk 8); the
  tested weights are the last snapshot (or, with ``legacy_test_last_at_max_epochs``, the last weights of a
  run that reached ``max_epochs``, quirk 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffcore.data import class_balanced_split
from torch import nn

from diff_resnet.graph.config import GraphConfig
from diff_resnet.graph.data import GraphData
from diff_resnet.models import DiffusionNet

#: Seeds are drawn from [0, SEED_RANGE), as in the original (``randint(0, 1_000_000, n)``).
SEED_RANGE = 1_000_000


def split_seeds(seed: int, splits: int) -> np.ndarray:
    """The master chain: ``RandomState(seed).randint(0, 1_000_000, splits)``.

    ``RandomState.randint`` draws its values one after another from the stream, so asking for the
    first ``splits`` seeds gives the prefix of the original's 100: fewer splits select a subset of
    the published runs instead of different ones.
    """
    return np.random.RandomState(seed).randint(0, SEED_RANGE, splits)


@dataclass(frozen=True)
class Split:
    """One split of the chain: node indices and the init seeds drawn after them from the same stream."""

    seed: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    init_seeds: np.ndarray


def draw_split(labels: np.ndarray, seed: int, train_per_class: int = 20, val_per_class: int = 30,
               inits: int = 20) -> Split:
    """``rs = RandomState(seed)``: train per class, then validation per class, then the init seeds.

    The order is the protocol (quirk 9): the init seeds come from ``rs`` *after* the split draws.
    """
    rs = np.random.RandomState(seed)
    train, val, test = class_balanced_split(labels, [train_per_class, val_per_class], rs)
    return Split(int(seed), train, val, test, rs.randint(0, SEED_RANGE, inits))


# ------------------------------------------------------------------------------ early stopping (§4.2)


class EarlyStopping:
    """gnn-benchmark patience rule (quirk 8) for R runs at once.

    Per run: ``best_loss`` (+∞) and ``best_acc`` (0) are tracked independently. An epoch with
    ``val_loss ≤ best_loss`` **or** ``val_acc ≥ best_acc`` is an improvement: both bests are updated
    (min / max), the counter resets and the caller snapshots the weights; otherwise the counter grows,
    and at ``counter ≥ patience`` the run stops (the caller restores its snapshot). Stopped runs never
    change again.

    Shapes: ``val_loss``, ``val_acc`` ``[R]`` → improvement mask ``[R]``.
    """

    def __init__(self, patience: int, num_runs: int = 1):
        self.patience = patience
        self.best_loss = torch.full((num_runs,), math.inf, dtype=torch.float64)
        self.best_acc = torch.zeros(num_runs, dtype=torch.float64)
        self.counter = torch.zeros(num_runs, dtype=torch.long)
        self.stopped = torch.zeros(num_runs, dtype=torch.bool)

    def update(self, val_loss: torch.Tensor, val_acc: torch.Tensor) -> torch.Tensor:
        val_loss, val_acc = val_loss.detach().cpu().double(), val_acc.detach().cpu().double()
        active = ~self.stopped
        improved = active & ((val_loss <= self.best_loss) | (val_acc >= self.best_acc))
        self.best_loss = torch.where(improved, torch.minimum(self.best_loss, val_loss), self.best_loss)
        self.best_acc = torch.where(improved, torch.maximum(self.best_acc, val_acc), self.best_acc)
        self.counter = torch.where(improved, 0, self.counter + active.long())
        self.stopped |= self.counter >= self.patience
        return improved

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the runs at ``index`` (their state is unchanged)."""
        for name in ("best_loss", "best_acc", "counter", "stopped"):
            setattr(self, name, getattr(self, name)[index])


def fit_single(model: nn.Module, train_epoch: Callable[[], None], evaluate: Callable[[], tuple[float, float]],
               patience: int, max_epochs: int, test_last_at_max_epochs: bool = False) -> int:
    """One run of the protocol's loop: train, evaluate, apply :class:`EarlyStopping`, restore.

    ``evaluate`` returns (val loss, val accuracy) of the current weights. On return ``model`` holds
    the weights to test: the last snapshot, except for a run that reached ``max_epochs`` with
    ``test_last_at_max_epochs`` (the original's behaviour, quirk 2), which keeps its last weights.
    Returns the number of epochs trained.
    """
    stopper = EarlyStopping(patience)
    snapshot: dict[str, torch.Tensor] = {}
    epoch = 0
    for epoch in range(max_epochs):  # noqa: B007 (the count is returned)
        train_epoch()
        val_loss, val_acc = evaluate()
        if stopper.update(torch.tensor([val_loss]), torch.tensor([val_acc]))[0]:
            snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if stopper.stopped[0]:
            break
    if stopper.stopped[0] or not test_last_at_max_epochs:
        model.load_state_dict(snapshot)
    return epoch + 1


@dataclass
class RunResult:
    """One run's outcome: accuracies in [0, 1] of the tested weights, epochs trained."""

    split: int
    init: int
    seed: int
    epochs: int
    val_acc: float
    test_acc: float


def build_model(data: GraphData, config: GraphConfig, seed: int) -> DiffusionNet:
    """A fresh :class:`DiffusionNet` with torch seeded by the init seed, as in the original."""
    torch.manual_seed(int(seed))
    return DiffusionNet(data.num_features, data.num_classes, config.step_size, config.layers, config.dropout)


def train_run_single(data: GraphData, split: Split, index: int, init: int, config: GraphConfig,
                     device: torch.device) -> RunResult:
    """One run with a plain :class:`DiffusionNet`: the reference the batched path must reproduce."""
    seed = int(split.init_seeds[init])
    model = build_model(data, config, seed).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    x, labels, laplacian = data.features, data.labels, data.laplacian
    train, val, test = (torch.as_tensor(s, device=device) for s in (split.train, split.val, split.test))

    def train_epoch() -> None:
        model.train()
        loss = F.cross_entropy(model(x, laplacian)[train], labels[train])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def evaluate(rows: torch.Tensor = val) -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            logits = model(x, laplacian)[rows]
        accuracy = (logits.argmax(-1) == labels[rows]).double().mean()
        return F.cross_entropy(logits, labels[rows]).item(), accuracy.item()

    epochs = fit_single(model, train_epoch, evaluate, config.patience, config.max_epochs,
                        config.legacy_test_last_at_max_epochs)
    return RunResult(index, init, seed, epochs, evaluate(val)[1], evaluate(test)[1])
