"""Semi-supervised node classification with Diff-ResNet under the gnn-benchmark protocol (§4.2).

Paper: T. Wang, Z. Dou, C. Bao, Z. Shi, "Diffusion Mechanism in Residual Neural Network: Theory and
Applications", IEEE TPAMI 46(2):667–680, 2024 (``graph/`` of the official code). The model is
:class:`~diff_resnet.models.DiffusionNet`::

    h = X + ReLU(X W₁ᵀ + b₁);   T times: h ← M · Dropout_p(h),  M = I − γ L;   logits = h W₂ᵀ + b₂

on the largest connected component, with binary-then-row-normalised features X,
``Â = D̃^{-1/2}(A + I)D̃^{-1/2}`` and ``L = diag(rowsum Â) − Â`` (or ``I − Â``).

Protocol: the master ``RandomState(seed)`` draws the split seeds; each split's ``RandomState`` draws
20 train then 30 validation nodes per class (the rest is the test set) and then the init seeds, each of
which seeds torch before a model is built. Every run trains full-batch with Adam and the loss-OR-accuracy
patience rule; the pooled test accuracies give mean ± population std.

The ``inits`` runs of a split share the graph and the split, so they are trained together
(:class:`StackedDiffusionNet`): one sparse matmul ``X @ [W₁ᵀ⁽¹⁾ … W₁ᵀ⁽ᴿ⁾]`` for the residual block and one
sparse matmul of M with the ``[N, R·F]`` hidden state per diffusion step. Each run keeps its own
initialisation, dropout stream (a generator continuing the torch RNG exactly where a lone run's dropout
would), Adam moments (Adam is elementwise, and the summed loss gives each run its own gradient) and
patience state, so on the CPU it reproduces one-run-at-a-time training (``batch_runs=False``) up to
floating-point rounding.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from diffcore.data import SparseGraph, class_balanced_split, load_npz_graph, load_planetoid, sparse_to_torch
from diffcore.errors import ConfigError
from diffcore.runs import RunDir, format_table
from torch import nn

from diff_resnet.config import GraphConfig, check_options
from diff_resnet.diffusion import (
    dropout_keep_mask,
    dropout_scale,
    fused_operator,
    gcn_normalized_adjacency,
    graph_laplacian,
    max_eigenvalue,
    propagate,
)
from diff_resnet.models import DiffusionNet

#: Seeds are drawn from [0, SEED_RANGE), as in the original (``randint(0, 1_000_000, n)``).
SEED_RANGE = 1_000_000


# ------------------------------------------------------------------------------------- data (§4.2)


def load_graph(dataset: str, fmt: str = "npz", data_root: str | Path | None = None) -> SparseGraph:
    """The standardised graph: unweighted, symmetric, loop-free, largest connected component only.

    ``fmt="npz"`` reads the gnn-benchmark ``<dataset>.npz`` (the original's data); ``fmt="planetoid"``
    reads PyG's Planetoid files and puts them through the same pipeline (its node order differs, so
    the same seed gives different splits). Missing files raise :class:`~diffcore.errors.DataError`.
    """
    if fmt == "npz":
        graph = load_npz_graph(dataset, data_root)
    elif fmt == "planetoid":
        graph = planetoid_graph(load_planetoid(dataset, data_root))
    else:
        raise ConfigError(f"format must be 'npz' or 'planetoid', got {fmt!r}")
    return graph.standardize()


def planetoid_graph(data: Any) -> SparseGraph:
    """A PyG ``Data`` (``edge_index``, ``x``, ``y``) as a gnn-benchmark :class:`SparseGraph`."""
    n = int(data.num_nodes)
    row, col = data.edge_index.cpu().numpy()
    adj = sp.csr_matrix((np.ones(len(row), dtype=np.float32), (row, col)), shape=(n, n))
    return SparseGraph(adj=adj, attr=sp.csr_matrix(data.x.cpu().numpy()), labels=data.y.cpu().numpy())


def preprocess_features(attr: sp.spmatrix) -> sp.csr_matrix:
    """Binarise (every non-zero becomes 1), then divide each row by its sum; an all-zero row stays zero.

    Shapes: ``attr`` ``[N, F]`` → CSR ``[N, F]`` float32.
    """
    binary = sp.csr_matrix(attr, dtype=np.float32, copy=True)
    binary.eliminate_zeros()
    binary.data[:] = 1.0
    counts = np.asarray(binary.sum(axis=1)).ravel()
    inverse = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
    return sp.csr_matrix(sp.diags(inverse.astype(np.float32)) @ binary)


@dataclass
class GraphData:
    """One preprocessed graph as tensors: sparse features, the operator L and the labels.

    Shapes: ``features`` sparse CSR ``[N, F]``; ``laplacian`` sparse CSR ``[N, N]``; ``labels`` ``[N]``.
    """

    features: torch.Tensor
    laplacian: torch.Tensor
    labels: torch.Tensor
    num_edges: int

    @property
    def num_nodes(self) -> int:
        return self.labels.shape[0]

    @property
    def num_features(self) -> int:
        return self.features.shape[1]

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1

    def to(self, device: torch.device) -> GraphData:
        return GraphData(self.features.to(device), self.laplacian.to(device), self.labels.to(device),
                         self.num_edges)


def prepare_graph(graph: SparseGraph, laplacian: str = "renormalized") -> GraphData:
    """Features (binary, row-normalised), ``Â = D̃^{-1/2}(A + I)D̃^{-1/2}`` and the operator
    ``diag(rowsum Â) − Â`` (``laplacian="renormalized"``, the released method) or ``I − Â``."""
    adj_hat = gcn_normalized_adjacency(graph.adj)
    return GraphData(
        features=sparse_to_torch(preprocess_features(graph.attr)),
        laplacian=graph_laplacian(adj_hat, kind=laplacian),
        labels=torch.as_tensor(np.asarray(graph.labels), dtype=torch.long),
        num_edges=graph.num_edges,
    )


# ------------------------------------------------------------------------------------ seeds (§4.2)


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


# -------------------------------------------------------------------------------- batched runs


class SparseMatrix:
    """A constant sparse matrix for ``matrix @ dense`` products.

    On the CPU the product runs through scipy's CSR kernel on zero-copy NumPy views: torch's CPU
    ``csr @ dense`` copies the dense operands around its MKL call and was 1.5–2.5× slower than scipy for
    Cora's ``M @ [N, R·F]`` products in our measurements. Elsewhere it is torch's sparse CSR product.

    Shapes: ``matrix`` torch sparse ``[n, m]``; ``self @ dense`` with ``dense`` ``[m, k]`` → ``[n, k]``.
    """

    def __init__(self, matrix: torch.Tensor):
        self.matrix = matrix.to_sparse_csr()
        self.shape = self.matrix.shape
        self.scipy = None
        if self.matrix.device.type == "cpu":
            self.scipy = sp.csr_matrix(
                (self.matrix.values().numpy(), self.matrix.col_indices().numpy(), self.matrix.crow_indices().numpy()),
                shape=tuple(self.shape),
            )

    def __matmul__(self, dense: torch.Tensor) -> torch.Tensor:
        if self.scipy is None:
            return self.matrix @ dense
        return torch.from_numpy(self.scipy @ dense.detach().numpy())

    def transpose(self) -> SparseMatrix:
        return SparseMatrix(self.matrix.t())

    def __mul__(self, scale: float) -> SparseMatrix:
        return SparseMatrix(self.matrix * scale)


@dataclass(frozen=True)
class GraphOperands:
    """The constant operands of one training pass, built once per split.

    ``operator`` is ``M = I − γL`` and ``dropout_operator`` is ``M / (1 − p̃)`` (:func:`dropout_scale`):
    folding the dropout rescaling into M turns "dropout, then diffuse" into ``M′ (h ⊙ mask)``. M is
    symmetric (Â is), so the same product serves the backward pass.

    Shapes: ``x`` ``[N, F]``, ``x_t`` ``[F, N]``, ``operator`` / ``dropout_operator`` ``[N, N]`` (all
    :class:`SparseMatrix`); ``x_dense`` ``[N, F]`` (only added, never multiplied).
    """

    x: SparseMatrix
    x_t: SparseMatrix
    x_dense: torch.Tensor
    operator: SparseMatrix
    dropout_operator: SparseMatrix

    @classmethod
    def build(cls, data: GraphData, step_size: float, dropout: float) -> GraphOperands:
        x, operator = SparseMatrix(data.features), SparseMatrix(fused_operator(data.laplacian, step_size))
        return cls(x, x.transpose(), data.features.to_dense(), operator, operator * dropout_scale(dropout))


class _SparseAffine(torch.autograd.Function):
    """``X W + b`` for a constant sparse X, with the precomputed ``Xᵀ`` for the weight gradient."""

    @staticmethod
    def forward(ctx: Any, x: SparseMatrix, x_t: SparseMatrix, weight: torch.Tensor, bias: torch.Tensor):
        ctx.x_t = x_t
        return (x @ weight).add_(bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        return None, None, ctx.x_t @ grad, grad.sum(dim=0)


class _DropoutDiffusionStep(torch.autograd.Function):
    """One training step ``h ← M′ (h ⊙ mask)`` for a symmetric sparse M′; only the bool mask is saved."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, mask: torch.Tensor, operator: SparseMatrix):
        ctx.save_for_backward(mask)
        ctx.operator = operator
        return operator @ (h * mask.to(h.dtype))  # float × float: several times faster than float × bool

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return (ctx.operator @ grad) * mask.to(grad.dtype), None, None


class StackedDiffusionNet(nn.Module):
    """R independent :class:`~diff_resnet.models.DiffusionNet` s on one graph, evaluated in one pass.

    Parameters are the runs' stacked along a run axis: ``linear_weight`` ``[F_in, R, F_out]`` (each run's
    ``linear.weight`` transposed, so ``X @ linear_weight.view(F, R·F)`` is a single sparse matmul),
    ``linear_bias`` ``[R, F]``, ``classifier_weight`` ``[R, C, F]``, ``classifier_bias`` ``[R, C]``.
    Training: T steps ``h ← M (Dropout(h))`` on ``h`` ``[N, R·F]``, one sparse matmul each, with the
    per-run keep-masks given by the caller. Evaluation: without dropout the diffusion is linear and
    commutes with the classifier, ``(Mᵀh)W₂ᵀ = Mᵀ(hW₂ᵀ)``, so the steps act on ``[N, R·C]`` instead of
    ``[N, R·F]``.

    Shapes: ``graph`` (:class:`GraphOperands`) with N nodes and F features, ``masks`` bool
    ``[T, N, R, F]``, ``rows`` ``[n]`` → logits ``[n, R, C]`` (all N rows when ``rows`` is None).
    """

    #: The run axis of each parameter.
    RUN_DIM: ClassVar[dict[str, int]] = {
        "linear_weight": 1, "linear_bias": 0, "classifier_weight": 0, "classifier_bias": 0,
    }

    def __init__(self, models: Sequence[DiffusionNet]):
        super().__init__()
        self.num_steps = models[0].diffusion.num_steps
        self.linear_weight = nn.Parameter(torch.stack([m.linear.weight.detach().t() for m in models], dim=1))
        self.linear_bias = nn.Parameter(torch.stack([m.linear.bias.detach() for m in models]))
        self.classifier_weight = nn.Parameter(torch.stack([m.classifier.weight.detach() for m in models]))
        self.classifier_bias = nn.Parameter(torch.stack([m.classifier.bias.detach() for m in models]))

    @property
    def num_runs(self) -> int:
        return self.linear_bias.shape[0]

    def convection(self, graph: GraphOperands) -> torch.Tensor:
        """``h = X + ReLU(X W₁ᵀ + b₁)`` for every run: → ``[N, R, F]``."""
        n, width = graph.x_dense.shape
        z = _SparseAffine.apply(graph.x, graph.x_t, self.linear_weight.view(width, -1), self.linear_bias.view(-1))
        return torch.relu(z.view(n, self.num_runs, width)) + graph.x_dense.unsqueeze(1)

    def forward(self, graph: GraphOperands, masks: torch.Tensor | None = None,
                rows: torch.Tensor | None = None) -> torch.Tensor:
        h = self.convection(graph)
        n, runs, width = h.shape
        if not self.training:
            logits = torch.einsum("nrf,rcf->nrc", h, self.classifier_weight)
            logits = propagate(logits.reshape(n, -1), graph.operator, self.num_steps).view(n, runs, -1)
            logits = logits + self.classifier_bias
            return logits if rows is None else logits[rows]
        h = h.view(n, runs * width)
        for step in range(self.num_steps):
            if masks is None:
                h = _DropoutDiffusionStep.apply(h, h.new_ones((), dtype=torch.bool), graph.operator)
            else:
                h = _DropoutDiffusionStep.apply(h, masks[step].view(n, -1), graph.dropout_operator)
        h = h.view(n, runs, width)
        h = h if rows is None else h[rows]
        return torch.einsum("nrf,rcf->nrc", h, self.classifier_weight) + self.classifier_bias

    def keep_runs(self, index: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Drop the other runs from the batch: parameters and their Adam moments are sliced.

        New Parameter objects replace the old ones, in the module and in ``optimizer`` (autograd caches a
        leaf's shape, so resizing ``param.data`` in place would break the next backward pass).
        """
        for name, dim in self.RUN_DIM.items():
            old = getattr(self, name)
            index_d = index.to(old.device)
            new = nn.Parameter(old.detach().index_select(dim, index_d))
            setattr(self, name, new)
            state = optimizer.state.pop(old, {})
            optimizer.state[new] = {key: value.index_select(dim, index_d) if key.startswith("exp_avg") else value
                                    for key, value in state.items()}
            for group in optimizer.param_groups:
                group["params"] = [new if p is old else p for p in group["params"]]

    def run_state_dict(self, run: int) -> dict[str, torch.Tensor]:
        """Run ``run``'s weights under :class:`DiffusionNet`'s keys."""
        return {
            "linear.weight": self.linear_weight[:, run].t().detach().clone(),
            "linear.bias": self.linear_bias[run].detach().clone(),
            "classifier.weight": self.classifier_weight[run].detach().clone(),
            "classifier.bias": self.classifier_bias[run].detach().clone(),
        }

    def extra_repr(self) -> str:
        return f"runs={self.num_runs}, num_steps={self.num_steps}"


def _build_model(data: GraphData, config: GraphConfig, seed: int) -> DiffusionNet:
    """A fresh :class:`DiffusionNet` with torch seeded by the init seed, as in the original."""
    torch.manual_seed(int(seed))
    return DiffusionNet(data.num_features, data.num_classes, config.step_size, config.layers, config.dropout)


def _dropout_generator(device: torch.device, seed: int) -> torch.Generator:
    """The random stream a lone run's dropout draws from, right after its model was built.

    On the CPU that is the global generator after the initialisation draws (so the masks equal those of
    the lone run's :class:`~diff_resnet.diffusion.FastDropout`); on an accelerator it is the device
    generator seeded by ``manual_seed``.
    """
    generator = torch.Generator(device=device)
    if device.type == "cpu":
        generator.set_state(torch.get_rng_state())
    else:
        generator.manual_seed(int(seed))
    return generator


@dataclass
class RunResult:
    """One run's outcome: accuracies in [0, 1] of the tested weights, epochs trained."""

    split: int
    init: int
    seed: int
    epochs: int
    val_acc: float
    test_acc: float


def _per_run_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each run: ``[n, R, C]``, ``[n]`` → ``[R]``."""
    targets = labels.unsqueeze(1).expand(-1, logits.shape[1])
    return F.cross_entropy(logits.permute(0, 2, 1), targets, reduction="none").mean(dim=0)


def _per_run_acc(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Accuracy of each run: ``[n, R, C]``, ``[n]`` → ``[R]``."""
    return (logits.argmax(dim=-1) == labels.unsqueeze(1)).double().mean(dim=0)


class _MaskStream:
    """Dropout keep-masks of the active runs, drawn one epoch ahead on background threads.

    Run r's masks come from its own generator in the order a lone run draws them: T per epoch, each a
    :func:`~diff_resnet.diffusion.dropout_keep_mask` of shape ``[N, F]`` (the draw of
    :class:`~diff_resnet.diffusion.FastDropout`). Drawing them while the previous epoch trains therefore
    changes no value, only the wall-clock time.

    Shapes: :meth:`next` → bool ``[T, N, R, F]``, or None without dropout.
    """

    def __init__(self, generators: Sequence[torch.Generator], dropout: float, num_steps: int,
                 shape: torch.Size, pool: ThreadPoolExecutor):
        self.generators = list(generators)
        self.dropout = dropout
        self.num_steps = num_steps
        self.shape = tuple(shape)
        self.pool = pool
        self.pending = self._submit() if dropout > 0 and num_steps > 0 else None

    def _submit(self) -> tuple[torch.Tensor, list[Future]]:
        n, width = self.shape
        masks = torch.empty(self.num_steps, n, len(self.generators), width, dtype=torch.bool,
                            device=self.generators[0].device)
        return masks, [self.pool.submit(self._draw, masks, run) for run in range(len(self.generators))]

    def _draw(self, masks: torch.Tensor, run: int) -> None:
        for step in range(self.num_steps):
            dropout_keep_mask(self.shape, self.dropout, generator=self.generators[run], out=masks[step, :, run])

    def _wait(self) -> torch.Tensor:
        masks, futures = self.pending
        for future in futures:
            future.result()
        return masks

    def next(self) -> torch.Tensor | None:
        """This epoch's masks; the next epoch's start drawing."""
        if self.pending is None:
            return None
        masks = self._wait()
        self.pending = self._submit()
        return masks

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the runs at ``index`` (their pre-drawn masks included)."""
        if self.pending is not None:
            masks = self._wait().index_select(2, index.to(self.pending[0].device))
            self.generators = [self.generators[i] for i in index.tolist()]
            self.pending = masks, []

    def close(self) -> None:
        if self.pending is not None:
            self._wait()


def train_split_batched(data: GraphData, split: Split, index: int, config: GraphConfig,
                        device: torch.device, pool: ThreadPoolExecutor, operands: GraphOperands | None = None,
                        on_epoch: Callable[[int, int], None] | None = None) -> list[RunResult]:
    """All init seeds of one split trained together; runs that stop leave the batch.

    The tested weights of a run are its snapshot, whose test accuracy was measured (eval mode,
    deterministic) in the epoch the snapshot was taken, so no weights need copying. ``operands`` can be
    shared between splits (built from ``data`` when None); ``on_epoch(epoch, active_runs)`` reports progress.
    """
    generators, models = [], []
    for seed in split.init_seeds:
        models.append(_build_model(data, config, seed))
        generators.append(_dropout_generator(device, seed))
    net = StackedDiffusionNet(models).to(device)
    del models
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    stopper = EarlyStopping(config.patience, net.num_runs)
    graph = operands or GraphOperands.build(data, config.step_size, config.dropout)
    labels = data.labels
    train, val, test = (torch.as_tensor(s, device=device) for s in (split.train, split.val, split.test))

    runs = len(split.init_seeds)
    alive = torch.arange(runs)  # batch slot → run index
    epochs = torch.full((runs,), config.max_epochs)
    stopped = torch.zeros(runs, dtype=torch.bool)
    snap_val, snap_test, last_val, last_test = (torch.zeros(runs, dtype=torch.float64) for _ in range(4))
    masks = _MaskStream(generators, config.dropout, net.num_steps, graph.x_dense.shape, pool)
    for epoch in range(config.max_epochs):
        net.train()
        loss = _per_run_loss(net(graph, masks.next(), rows=train), labels[train]).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        net.eval()
        with torch.no_grad():
            logits = net(graph)
        val_acc, test_acc = _per_run_acc(logits[val], labels[val]), _per_run_acc(logits[test], labels[test])
        improved = stopper.update(_per_run_loss(logits[val], labels[val]), val_acc)
        val_acc, test_acc = val_acc.cpu(), test_acc.cpu()
        snap_val[alive[improved]] = val_acc[improved]
        snap_test[alive[improved]] = test_acc[improved]
        last_val[alive], last_test[alive] = val_acc, test_acc
        if on_epoch is not None:
            on_epoch(epoch, len(alive))
        if stopper.stopped.any():
            epochs[alive[stopper.stopped]] = epoch + 1
            stopped[alive[stopper.stopped]] = True
            keep = torch.nonzero(~stopper.stopped).flatten()
            if len(keep) == 0:
                break
            net.keep_runs(keep, optimizer)
            stopper.keep(keep)
            masks.keep(keep)
            alive = alive[keep]
    masks.close()
    if config.legacy_test_last_at_max_epochs:  # quirk 2: runs that hit max_epochs keep their last weights
        snap_val[~stopped], snap_test[~stopped] = last_val[~stopped], last_test[~stopped]
    return [RunResult(index, r, int(split.init_seeds[r]), int(epochs[r]), float(snap_val[r]),
                      float(snap_test[r])) for r in range(runs)]


def train_run_single(data: GraphData, split: Split, index: int, init: int, config: GraphConfig,
                     device: torch.device) -> RunResult:
    """One run with a plain :class:`DiffusionNet`: the reference the batched path must reproduce."""
    seed = int(split.init_seeds[init])
    model = _build_model(data, config, seed).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    x, labels, operator = data.features, data.labels, data.laplacian
    train, val, test = (torch.as_tensor(s, device=device) for s in (split.train, split.val, split.test))

    def train_epoch() -> None:
        model.train()
        loss = F.cross_entropy(model(x, operator)[train], labels[train])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def evaluate(rows: torch.Tensor = val) -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            logits = model(x, operator)[rows]
        accuracy = (logits.argmax(-1) == labels[rows]).double().mean()
        return F.cross_entropy(logits, labels[rows]).item(), accuracy.item()

    epochs = fit_single(model, train_epoch, evaluate, config.patience, config.max_epochs,
                        config.legacy_test_last_at_max_epochs)
    return RunResult(index, init, seed, epochs, evaluate(val)[1], evaluate(test)[1])


# ----------------------------------------------------------------------------------- the protocol


def run_graph(config: GraphConfig, run: RunDir | None = None,
              data_root: str | Path | None = None) -> dict[str, Any]:
    """Load ``config.dataset`` in ``config.format`` and run the protocol (:func:`run_protocol`)."""
    graph = load_graph(config.dataset, config.format, data_root)
    return run_protocol(graph, config, run)


def run_protocol(graph: SparseGraph, config: GraphConfig, run: RunDir | None = None) -> dict[str, Any]:
    """``splits × inits`` runs on a standardised graph; returns the results.json dictionary.

    One line per run goes to ``run``'s ``metrics.jsonl`` (split, init, seed, epochs, val/test accuracy
    in %). Accuracies in the results are percentages; ``test_acc_std`` is the population std (ddof 0).
    """
    from tqdm.auto import tqdm

    validate_graph_config(config)
    started = time.perf_counter()
    device = torch.device(config.device)
    data = prepare_graph(graph, config.laplacian)
    lambda_max = max_eigenvalue(data.laplacian)
    data = data.to(device)
    # Built once for all splits; fused_operator warns here when γ·λ_max > 2 (a lone DiffusionNet warns itself).
    operands = GraphOperands.build(data, config.step_size, config.dropout) if config.batch_runs else None
    labels = np.asarray(graph.labels)
    splits = [draw_split(labels, s, config.train_per_class, config.val_per_class, config.inits)
              for s in split_seeds(config.seed, config.splits)]

    results: list[RunResult] = []
    train_seconds = 0.0
    bar = tqdm(total=config.splits * config.inits, desc=f"{config.dataset} runs", unit="run", disable=None)
    with ThreadPoolExecutor(max_workers=max(1, min(config.inits, torch.get_num_threads()))) as pool:
        for index, split in enumerate(splits):
            tick = time.perf_counter()
            if config.batch_runs:
                batch = train_split_batched(data, split, index, config, device, pool, operands,
                                            functools.partial(_report_epoch, bar, index))
            else:
                batch = [train_run_single(data, split, index, i, config, device) for i in range(config.inits)]
            train_seconds += time.perf_counter() - tick
            for result in batch if run is not None else ():
                run.log_metrics({"split": result.split, "init": result.init, "seed": result.seed,
                                 "epochs": result.epochs, "val_acc": 100 * result.val_acc,
                                 "test_acc": 100 * result.test_acc})
            results += batch
            bar.update(len(batch))
            bar.set_postfix_str(f"test acc {100 * np.mean([r.test_acc for r in results]):.2f}%")
    bar.close()

    test_accs = 100 * np.array([r.test_acc for r in results])
    epochs = [r.epochs for r in results]
    return {
        "test_acc_mean": float(test_accs.mean()),
        "test_acc_std": float(test_accs.std(ddof=0)),
        "test_accs": test_accs.tolist(),
        "val_accs": [100 * r.val_acc for r in results],
        "epochs": epochs,
        "split_seeds": [s.seed for s in splits],
        "init_seeds": [s.init_seeds.tolist() for s in splits],
        "dataset": {
            "name": config.dataset, "format": config.format, "nodes": data.num_nodes, "edges": data.num_edges,
            "features": data.num_features, "classes": data.num_classes, "train": len(splits[0].train),
            "val": len(splits[0].val), "test": len(splits[0].test),
        },
        "lambda_max": lambda_max,
        "step_size_times_lambda_max": config.step_size * lambda_max,
        "seconds": time.perf_counter() - started,
        "seconds_per_run_epoch": train_seconds / max(1, sum(epochs)),
    }


def _report_epoch(bar: Any, split: int, epoch: int, active: int) -> None:
    bar.set_postfix_str(f"split {split} epoch {epoch + 1}, {active} runs active")


def validate_graph_config(config: GraphConfig) -> None:
    """Every field of the protocol in range, and the device usable."""
    if config.step_size is None or config.layers is None:
        raise ConfigError(f"{config.dataset}: step_size and layers have no default; pass --step-size and --layers")
    checks = [
        (config.layers >= 0, f"layers must be ≥ 0, got {config.layers}"),
        (0 <= config.dropout < 1, f"dropout must lie in [0, 1), got {config.dropout}"),
        (min(config.splits, config.inits) >= 1, f"splits and inits must be ≥ 1, got {config.splits}/{config.inits}"),
        (config.max_epochs >= 1, f"max_epochs must be ≥ 1, got {config.max_epochs}"),
        (config.patience >= 1, f"patience must be ≥ 1, got {config.patience}"),
    ]
    check_options(checks, config.device)


def print_graph_results(results: dict[str, Any]) -> None:
    """One-row summary: dataset, runs, test accuracy mean ± std (%), epochs, time."""
    import click

    stats = results["dataset"]
    row = {
        "dataset": f"{stats['name']} ({stats['format']})",
        "nodes": stats["nodes"],
        "runs": len(results["test_accs"]),
        "test acc (%)": f"{results['test_acc_mean']:.2f} ± {results['test_acc_std']:.2f}",
        "epochs (mean)": f"{np.mean(results['epochs']):.0f}",
        "s / run-epoch": f"{results['seconds_per_run_epoch']:.3f}",
        "total (s)": f"{results['seconds']:.0f}",
    }
    click.echo(format_table([row]))
