"""The batched engine of the graph protocol: many runs of one split trained as one stacked model.

Reproduces :func:`diff_resnet.graph.protocol.train_run_single` run by run (tested: same epochs, same
accuracies up to floating-point rounding), only faster. What it changes is arithmetic, never the protocol:

* the runs of a split share the graph and the split, so their parameters are stacked along a run axis
  (:class:`StackedDiffusionNet`): one sparse matmul ``X @ [W₁ᵀ⁽¹⁾ … W₁ᵀ⁽ᴿ⁾]`` for the residual block and
  one sparse matmul of ``M = I − γL`` with the ``[N, R·F]`` hidden state per diffusion step; each run keeps
  its own initialisation, Adam moments (Adam is elementwise and the summed loss gives each run its own
  gradient) and patience state;
* dropout: each run draws its masks from its own generator continuing the torch RNG exactly where a lone
  run's :class:`~diff_resnet.dropout.FastDropout` would, one epoch ahead on background threads
  (:class:`_MaskStream`); the rescaling ``1/(1 − p)`` is folded into the propagation matrix, and the T
  steps are one autograd function (:class:`_DropoutDiffusion`) that applies the masks in place and keeps
  only the boolean masks for the backward pass (M is symmetric, so the backward pass is the same product);
* evaluation: without dropout the diffusion is linear and commutes with the classifier, so the T steps
  act on the ``[N, R·C]`` logits instead of the ``[N, R·F]`` hidden state; and the residual block computed
  for the evaluation (with its autograd graph) is the next epoch's training input, since the weights do not
  change in between: one sparse ``X W₁ᵀ`` per epoch fewer;
* on the CPU, sparse products run through scipy's CSR kernel on zero-copy NumPy views (:class:`SparseMatrix`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from diff_resnet.diffusion import propagate, propagation_matrix
from diff_resnet.dropout import dropout_keep_mask, dropout_scale
from diff_resnet.graph.config import GraphConfig
from diff_resnet.graph.data import GraphData
from diff_resnet.graph.protocol import EarlyStopping, RunResult, Split, build_model
from diff_resnet.models import DiffusionNet


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
    """The constant operands of one training pass, built once per graph.

    ``propagator`` is ``M = I − γL`` and ``dropout_propagator`` is ``M / (1 − p̃)`` (:func:`dropout_scale`):
    folding the dropout rescaling into M turns "dropout, then diffuse" into ``M′ (h with the dropped entries
    zeroed)``. M is symmetric (Â is), so the same product serves the backward pass.

    Shapes: ``x`` ``[N, F]``, ``x_t`` ``[F, N]``, ``propagator`` / ``dropout_propagator`` ``[N, N]`` (all
    :class:`SparseMatrix`); ``x_dense`` ``[N, F]`` (only added, never multiplied).
    """

    x: SparseMatrix
    x_t: SparseMatrix
    x_dense: torch.Tensor
    propagator: SparseMatrix
    dropout_propagator: SparseMatrix

    @classmethod
    def build(cls, data: GraphData, step_size: float, dropout: float) -> GraphOperands:
        x, propagator = SparseMatrix(data.features), SparseMatrix(propagation_matrix(data.laplacian, step_size))
        return cls(x, x.transpose(), data.features.to_dense(), propagator, propagator * dropout_scale(dropout))


class _SparseAffine(torch.autograd.Function):
    """``X W + b`` for a constant sparse X, with the precomputed ``Xᵀ`` for the weight gradient."""

    @staticmethod
    def forward(ctx: Any, x: SparseMatrix, x_t: SparseMatrix, weight: torch.Tensor, bias: torch.Tensor):
        ctx.x_t = x_t
        return (x @ weight).add_(bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        return None, None, ctx.x_t @ grad, grad.sum(dim=0)


class _DropoutDiffusion(torch.autograd.Function):
    """T training steps ``h ← M′ (h ⊙ keep[t])`` for a symmetric sparse M′; ``keep`` None means ``h ← M h``.

    Only the boolean masks are kept for the backward pass, ``g ← (M′ g) ⊙ keep[t]`` in reverse order. The
    masks multiply in place as uint8 views of the bool tensors: on the CPU that is 2–3× cheaper than
    ``masked_fill_`` or a float copy of the mask (measured), and it allocates nothing.
    Shapes: ``h`` ``[N, K]``, ``keep`` bool ``[T, N, K]`` → ``[N, K]``.
    """

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, keep: torch.Tensor | None, propagator: SparseMatrix, num_steps: int):
        ctx.save_for_backward(keep)
        ctx.propagator, ctx.num_steps = propagator, num_steps
        for step in range(num_steps):
            if keep is not None:  # the input belongs to autograd: the first step writes a copy
                mask = keep[step].view(torch.uint8)
                h = h.mul_(mask) if step else h * mask
            h = propagator @ h
        return h

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        for step in reversed(range(ctx.num_steps)):
            grad = ctx.propagator @ grad
            if keep is not None:
                grad.mul_(keep[step].view(torch.uint8))
        return grad, None, None, None


class StackedDiffusionNet(nn.Module):
    """R independent :class:`~diff_resnet.models.DiffusionNet` s on one graph, evaluated in one pass.

    Parameters are the runs' stacked along a run axis: ``linear_weight`` ``[F_in, R, F_out]`` (each run's
    ``linear.weight`` transposed, so ``X @ linear_weight.view(F, R·F)`` is a single sparse matmul),
    ``linear_bias`` ``[R, F]``, ``classifier_weight`` ``[R, C, F]``, ``classifier_bias`` ``[R, C]``.
    Training: T steps ``h ← M (Dropout(h))`` on ``h`` ``[N, R·F]``, one sparse matmul each, with the
    per-run keep-masks given by the caller. Evaluation: without dropout the diffusion is linear and
    commutes with the classifier, ``(Mᵀh)W₂ᵀ = Mᵀ(hW₂ᵀ)``, so the steps act on ``[N, R·C]`` instead of
    ``[N, R·F]``.

    Shapes: ``graph`` (:class:`GraphOperands`) with N nodes and F features, ``keep`` bool
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

    def forward(self, graph: GraphOperands, keep: torch.Tensor | None = None, rows: torch.Tensor | None = None,
                hidden: torch.Tensor | None = None) -> torch.Tensor:
        """Logits; ``hidden`` is :meth:`convection` when the caller already has it for the current weights."""
        h = self.convection(graph) if hidden is None else hidden
        n, runs, width = h.shape
        if not self.training:
            logits = torch.einsum("nrf,rcf->nrc", h, self.classifier_weight)
            logits = propagate(logits.reshape(n, -1), graph.propagator, self.num_steps).view(n, runs, -1)
            logits = logits + self.classifier_bias
            return logits if rows is None else logits[rows]
        if keep is None:
            h = _DropoutDiffusion.apply(h.view(n, -1), None, graph.propagator, self.num_steps)
        else:
            h = _DropoutDiffusion.apply(h.view(n, -1), keep.view(self.num_steps, n, -1), graph.dropout_propagator,
                                        self.num_steps)
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
    :func:`~diff_resnet.dropout.dropout_keep_mask` of shape ``[N, F]`` (the draw of
    :class:`~diff_resnet.dropout.FastDropout`). Drawing them while the previous epoch trains therefore
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


def train_runs_batched(data: GraphData, split: Split, index: int, inits: Sequence[int], config: GraphConfig,
                       device: torch.device, pool: ThreadPoolExecutor, operands: GraphOperands | None = None,
                       on_epoch: Callable[[int, int], None] | None = None) -> list[RunResult]:
    """The runs ``inits`` (indices into ``split.init_seeds``) of split ``index``, trained together.

    Runs that stop leave the batch. The tested weights of a run are its snapshot, whose test accuracy was
    measured (eval mode, deterministic) in the epoch the snapshot was taken, so no weights need copying.
    ``operands`` can be shared between splits (built from ``data`` when None); ``on_epoch(epoch,
    active_runs)`` reports progress.
    """
    seeds = [int(split.init_seeds[i]) for i in inits]
    generators, models = [], []
    for seed in seeds:
        models.append(build_model(data, config, seed))
        generators.append(_dropout_generator(device, seed))
    net = StackedDiffusionNet(models).to(device)
    del models
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    stopper = EarlyStopping(config.patience, net.num_runs)
    graph = operands or GraphOperands.build(data, config.step_size, config.dropout)
    labels = data.labels
    train, val, test = (torch.as_tensor(s, device=device) for s in (split.train, split.val, split.test))

    runs = len(seeds)
    alive = torch.arange(runs)  # batch slot → position in ``inits``
    epochs = torch.full((runs,), config.max_epochs)
    stopped = torch.zeros(runs, dtype=torch.bool)
    snap_val, snap_test, last_val, last_test = (torch.zeros(runs, dtype=torch.float64) for _ in range(4))
    masks = _MaskStream(generators, config.dropout, net.num_steps, graph.x_dense.shape, pool)
    hidden = None  # the residual block's output for the current weights, with its autograd graph
    for epoch in range(config.max_epochs):
        net.train()
        loss = _per_run_loss(net(graph, masks.next(), rows=train, hidden=hidden), labels[train]).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        net.eval()
        # The weights evaluated now are the ones the next epoch trains from: one residual block serves both.
        hidden = net.convection(graph)
        with torch.no_grad():
            logits = net(graph, hidden=hidden.detach())
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
            hidden = None  # new parameter tensors: the next epoch recomputes the residual block
            stopper.keep(keep)
            masks.keep(keep)
            alive = alive[keep]
    masks.close()
    if config.legacy_test_last_at_max_epochs:  # quirk 2: runs that hit max_epochs keep their last weights
        snap_val[~stopped], snap_test[~stopped] = last_val[~stopped], last_test[~stopped]
    return [RunResult(index, init, seed, int(epochs[r]), float(snap_val[r]), float(snap_test[r]))
            for r, (init, seed) in enumerate(zip(inits, seeds, strict=True))]
