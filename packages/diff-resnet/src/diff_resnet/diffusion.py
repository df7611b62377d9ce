"""The diffusion layer of Diff-ResNet and the graphs it diffuses on.

Paper: T. Wang, Z. Dou, C. Bao, Z. Shi, "Diffusion Mechanism in Residual Neural Network: Theory and
Applications", IEEE TPAMI 46(2):667–680, 2024 (arXiv 2105.03155).

Rows of ``X ∈ ℝ^{N×d}`` are the samples (points, nodes, images of an episode); ``W ∈ ℝ^{N×N}`` holds
non-negative weights between them; the Laplacian is ``L = D − W`` with ``D = diag(W·1)``. One
explicit-Euler step of the heat equation ``dX/dt = −L X`` is::

    X ← X − γ L X = M X,   M = I − γ L   (the propagation matrix),   i.e.   x_i ← x_i − γ Σ_j W_ij (x_i − x_j)

and a diffusion layer is T such steps with the same L: no parameters, no nonlinearity. Because L mixes
rows, the whole graph / episode must be in one forward pass. Explicit Euler is stable when
``γ·λ_max(L) ≤ 2``; :func:`check_stability` warns otherwise (it never refuses to run).

Names: an argument called ``laplacian`` is always L; one called ``propagator`` is always a product of
steps, ``M = I − γL`` (:func:`propagation_matrix`) or ``M^T`` (:func:`diffusion_matrix`).

Every function accepts dense tensors and ``torch.sparse`` COO or CSR matrices (sparse stays sparse);
dense matrices may carry a leading batch dimension ``[B, N, N]`` (one graph per episode). Weights,
Laplacians and step sizes that are not finite, and kNN ranks outside the batch, are refused with a
:class:`~diffcore.errors.ConfigError` (a ``ValueError``) that says what to change.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from diffcore.data import sparse_to_torch
from diffcore.errors import ConfigError
from torch import nn

from diff_resnet.dropout import FastDropout

#: Explicit Euler on dX/dt = −L X is stable while γ·λ_max(L) stays at or below this bound.
STABILITY_BOUND = 2.0


def _is_sparse(matrix: torch.Tensor) -> bool:
    return matrix.layout != torch.strided


def _coalesced_coo(matrix: torch.Tensor) -> torch.Tensor:
    return matrix.to_sparse_coo().coalesce()


def _stored_values(matrix: torch.Tensor) -> torch.Tensor:
    """The entries a matrix stores: all of a dense one, the non-zeros of a sparse one."""
    if not _is_sparse(matrix):
        return matrix
    return matrix.values() if matrix.layout == torch.sparse_csr else _coalesced_coo(matrix).values()


def require_finite(matrix: torch.Tensor, what: str) -> None:
    """Refuse a matrix with NaN or ±inf entries: one clear error instead of NaN features (or, inside
    LAPACK's eigenvalue routines, a crash) further on."""
    values = _stored_values(matrix.detach())
    if not bool(torch.isfinite(values).all()):
        bad = int((~torch.isfinite(values)).sum())
        raise ConfigError(f"{what} has {bad} non-finite (NaN or inf) entries; check the inputs it was built from "
                          "(a zero or underflowing sigma, duplicate points, NaN features)")


def _require_step_size(step_size: float) -> None:
    if not (math.isfinite(step_size) and step_size > 0):
        raise ConfigError(f"diffusion step size must be a finite number > 0, got {step_size} "
                          "(use num_steps = 0 for no diffusion)")


def _require_steps(num_steps: int) -> None:
    if num_steps < 0:
        raise ConfigError(f"num_steps must be ≥ 0, got {num_steps}")


def _row_sums(matrix: torch.Tensor) -> torch.Tensor:
    """``matrix · 1`` as a dense vector (``[N]``, or ``[B, N]`` for a dense batch)."""
    if not _is_sparse(matrix):
        return matrix.sum(dim=-1)
    coo = _coalesced_coo(matrix)
    rows = coo.indices()[0]
    return torch.zeros(coo.shape[0], dtype=coo.dtype, device=coo.device).index_add_(0, rows, coo.values())


def _diagonal_plus(diagonal: torch.Tensor, matrix: torch.Tensor, scale: float) -> torch.Tensor:
    """``diag(diagonal) + scale · matrix`` in the layout of ``matrix`` (dense, COO or CSR)."""
    if not _is_sparse(matrix):
        return torch.diag_embed(diagonal) + scale * matrix
    coo = _coalesced_coo(matrix)
    n = coo.shape[0]
    diag_index = torch.arange(n, device=coo.device).expand(2, n)
    result = torch.sparse_coo_tensor(
        torch.cat([coo.indices(), diag_index], dim=1), torch.cat([scale * coo.values(), diagonal.to(coo.dtype)]),
        coo.shape, check_invariants=False,  # indices built here are valid by construction
    ).coalesce()
    return result.to_sparse_csr() if matrix.layout == torch.sparse_csr else result


def laplacian(weights: torch.Tensor) -> torch.Tensor:
    """Graph Laplacian ``L = D − W`` with ``D = diag(W·1)`` (row sums of the W actually used, §2).

    For a row-normalised W (toy examples) this is ``I − W``. ``L·1 = 0``, so constant feature columns
    are fixed points of diffusion. Non-finite weights are refused.

    Shapes: ``weights`` ``[N, N]`` dense / sparse COO / sparse CSR, or dense ``[B, N, N]``;
    returns the same shape and layout.
    """
    require_finite(weights, "the weight matrix W")
    return _diagonal_plus(_row_sums(weights), weights, -1.0)


def propagation_matrix(laplacian: torch.Tensor, step_size: float) -> torch.Tensor:
    """``M = I − γ L``, so that one diffusion step is ``X ← M X``.

    Build it once per graph: each step is then a single (sparse) matmul instead of a matmul plus an
    update. Warns when ``γ·λ_max(L) > 2`` (see :func:`check_stability`).

    Shapes: ``laplacian`` ``[N, N]`` (dense, COO or CSR) or dense ``[B, N, N]`` → same shape and layout.
    """
    check_stability(laplacian, step_size)
    ones = torch.ones(laplacian.shape[:-1], dtype=laplacian.dtype, device=laplacian.device)
    return _diagonal_plus(ones, laplacian, -step_size)


def diffusion_matrix(laplacian: torch.Tensor, step_size: float, num_steps: int) -> torch.Tensor:
    """All T steps folded into one dense matrix ``(I − γ L)^T`` (by repeated squaring, in float64).

    Worth it for a fixed dense Laplacian with many steps (the two-spiral toy example has T = 900): the
    forward pass becomes one matmul. Equal to T calls of :func:`propagate` up to rounding.

    Shapes: ``laplacian`` ``[N, N]`` or ``[B, N, N]`` (a sparse one is densified) → dense, same shape.
    """
    _require_steps(num_steps)
    step = propagation_matrix(laplacian, step_size)
    dense = step.to_dense() if _is_sparse(step) else step
    power = torch.linalg.matrix_power(dense.double(), num_steps)
    # Entries below the smallest normal float of the target dtype (far-apart nodes after many steps) would
    # become subnormal, which slows CPU matmuls by an order of magnitude; they are zero to that precision.
    tiny = torch.finfo(laplacian.dtype).tiny
    return torch.where(power.abs() < tiny, 0.0, power).to(laplacian.dtype)


def propagate(x: torch.Tensor, propagator: torch.Tensor, num_steps: int) -> torch.Tensor:
    """``x ← M x`` repeated ``num_steps`` times with ``M = I − γL`` from :func:`propagation_matrix`.

    Shapes: ``x`` ``[N, d]`` with ``propagator`` ``[N, N]`` (dense, COO or CSR), or ``x`` ``[B, N, d]``
    with a dense ``propagator`` ``[B, N, N]``; returns the shape of ``x``.
    """
    for _ in range(num_steps):
        x = propagator @ x
    return x


def diffusion_step(x: torch.Tensor, laplacian: torch.Tensor, step_size: float, num_steps: int = 1) -> torch.Tensor:
    """T explicit-Euler steps of the heat equation: ``x ← x − γ L x`` (Wang et al., TPAMI 2024, §2).

    ``laplacian`` is L (see :func:`laplacian`); ``num_steps = 0`` returns ``x`` unchanged (the plain
    residual network baseline). Usable on any tensor; for a fixed graph and many calls prefer
    :class:`Diffusion`, which builds ``I − γL`` once. No stability check here (it would cost an
    eigenvalue per call): call :func:`check_stability` once per graph.

    Shapes: ``x`` ``[N, d]`` with ``laplacian`` ``[N, N]`` (dense, COO or CSR), or ``x`` ``[B, N, d]``
    with a dense ``laplacian`` ``[B, N, N]``; returns the shape of ``x``.
    """
    _require_steps(num_steps)
    if num_steps == 0:
        return x
    _require_step_size(step_size)
    require_finite(laplacian, "the Laplacian L")
    for _ in range(num_steps):
        x = x - step_size * (laplacian @ x)
    return x


# ------------------------------------------------------------------------------------------ stability


def _to_scipy(matrix: torch.Tensor) -> sp.coo_matrix:
    coo = _coalesced_coo(matrix.detach().cpu())
    rows, cols = coo.indices().numpy()
    return sp.coo_matrix((coo.values().double().numpy(), (rows, cols)), shape=tuple(coo.shape))


def max_eigenvalue(matrix: torch.Tensor) -> float:
    """Spectral radius of ``matrix`` (= λ_max for a symmetric positive semi-definite Laplacian).

    Dense: ``eigvalsh`` when symmetric, else the largest ``|eigvals|``; a batch returns the maximum over
    it. Sparse: ARPACK (``scipy.sparse.linalg.eigsh`` / ``eigs``) for one extreme eigenvalue; small
    sparse matrices are densified. A non-finite matrix is refused (LAPACK may crash on NaN).

    Shapes: ``matrix`` ``[N, N]`` (dense, COO or CSR) or dense ``[B, N, N]``.
    """
    require_finite(matrix, "the matrix")
    if _is_sparse(matrix) and matrix.shape[-1] > 512:
        from scipy.sparse.linalg import eigs, eigsh

        scipy_matrix = _to_scipy(matrix).tocsr()
        if abs(scipy_matrix - scipy_matrix.T).max() <= 1e-6 * abs(scipy_matrix).max():
            return float(eigsh(scipy_matrix, k=1, which="LA", return_eigenvectors=False)[0])
        return float(np.abs(eigs(scipy_matrix, k=1, which="LM", return_eigenvectors=False)).max())
    dense = (matrix.to_dense() if _is_sparse(matrix) else matrix).detach().double()
    if torch.allclose(dense, dense.mT):
        return float(torch.linalg.eigvalsh(dense).abs().max())
    return float(torch.linalg.eigvals(dense).abs().max())


def check_stability(laplacian: torch.Tensor, step_size: float) -> float:
    """Warn (once per call site and value) when ``γ·λ_max(L) > 2``; return ``γ·λ_max`` (or its bound).

    The cheap Gershgorin bound ``max_i Σ_j |L_ij|`` settles most cases (a row-normalised W gives a
    bound below 2 at γ = 1); the eigenvalue is computed only when the bound exceeds the limit.
    A non-finite L or a step size that is not a finite number > 0 is refused.
    """
    _require_step_size(step_size)
    require_finite(laplacian, "the Laplacian L")
    gershgorin = float(_row_sums(laplacian.abs()).max())
    if step_size * gershgorin <= STABILITY_BOUND:
        return step_size * gershgorin
    product = step_size * max_eigenvalue(laplacian)
    if product > STABILITY_BOUND:
        warnings.warn(
            f"diffusion step size γ = {step_size:g} with λ_max(L) = {product / step_size:.4g} gives "
            f"γ·λ_max = {product:.4g} > 2: explicit Euler is unstable (features may blow up); "
            f"use γ ≤ {STABILITY_BOUND * step_size / product:.4g}",
            RuntimeWarning, stacklevel=2,
        )
    return product


# ------------------------------------------------------------------------------------ weights (§3.4)


def _require_rank(name: str, value: int, low: int, n: int, meaning: str) -> None:
    if isinstance(value, bool) or int(value) != value:
        raise ConfigError(f"{name} is a rank (an integer), got {value!r}")
    if not low <= value <= n:
        raise ConfigError(f"{name}={value} must lie in [{low}, {n}] for N = {n} points ({meaning})")


def toy_weights(points: torch.Tensor, sigma: float = 0.5, n_top: int = 25) -> torch.Tensor:
    """Row-normalised kNN Gaussian weights of the toy examples (§3.4, ``synthetic/*.py``).

    ``W_ij = exp(−‖p_i − p_j‖² / σ²)`` (σ², not 2σ²); each row keeps its ``n_top`` largest entries, self
    included (``W_ii = 1`` is the maximum), the rest are zeroed, and the row is divided by its sum. The
    result is a random-walk matrix (rows sum to 1, not symmetric), so ``laplacian(W) = I − W``.
    ``sigma`` is a length (> 0); ``n_top`` lies in [1, N].

    Shapes: ``points`` ``[N, d]`` or ``[B, N, d]`` → dense ``[N, N]`` or ``[B, N, N]``.
    """
    if not (math.isfinite(sigma) and sigma > 0):
        raise ConfigError(f"toy_weights: sigma is the Gaussian length scale and must be a finite number > 0, "
                          f"got {sigma}")
    _require_rank("n_top", n_top, 1, points.shape[-2], "entries kept per row, self included")
    require_finite(points, "the points")
    gaussian = torch.exp(-torch.cdist(points, points).square() / sigma**2)
    top = gaussian.topk(n_top, dim=-1)
    weights = torch.zeros_like(gaussian).scatter_(-1, top.indices, top.values)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    if not bool(torch.isfinite(weights).all()):  # σ² underflows to 0: 0/0 on the diagonal
        raise ConfigError(f"toy_weights: sigma={sigma:g} is too small for {points.dtype} (σ² underflows and "
                          "the weights become NaN); use a larger sigma")
    return weights


def fewshot_weights(features: torch.Tensor, n_top: int = 8, sigma: int = 4, symmetrize: bool = True) -> torch.Tensor:
    """Symmetric locally-scaled kNN weights of one or many few-shot episodes (§3.4, ``fewshot/``).

    With ``d_ij = ‖x_i − x_j‖₂``, ``r_i`` the ``n_top``-th and ``s_i`` the ``sigma``-th smallest distance
    of row i (self, at 0, counts as the first; both are *ranks* in [2, N]):
    ``W_ij = exp(−(d_ij / s_i)²)`` if ``d_ij < r_i`` (strict: n_top − 1 entries per row, ties at the cut
    dropped) else 0; then ``W ← D^{-1/2} W D^{-1/2}`` with D the row sums of that (unsymmetric) W, and
    ``W′ = (W + Wᵀ)/2`` (skipped with ``symmetrize=False``, which returns the normalised, unsymmetric W).
    Treat the result as a constant (compute it under ``torch.no_grad``). A point with ``sigma − 1`` or
    more exact duplicates has ``s_i = 0`` and would get NaN weights: that is refused with a clear error.

    Shapes: ``features`` ``[N, d]`` or ``[B, N, d]`` (a batch of episodes) → ``[N, N]`` or ``[B, N, N]``.
    """
    n = features.shape[-2]
    _require_rank("n_top", n_top, 2, n, "self = 1st; the strict cut keeps n_top − 1 entries per row")
    _require_rank("sigma", sigma, 2, n, "the local scale is the distance to the sigma-th nearest point, self = 1st")
    require_finite(features, "the features")
    self_pairs = torch.eye(n, dtype=torch.bool, device=features.device)
    # Exact zero self-distance: the matmul-based cdist leaves rounding noise on the diagonal.
    distances = torch.cdist(features, features).masked_fill(self_pairs, 0.0)
    smallest = distances.topk(max(n_top, sigma), dim=-1, largest=False).values
    cutoff, scale = smallest[..., n_top - 1 : n_top], smallest[..., sigma - 1 : sigma]
    degenerate = (scale == 0) | (cutoff == 0)
    if bool(degenerate.any()):
        raise ConfigError(
            f"fewshot_weights: {int(degenerate.sum())} point(s) have {min(n_top, sigma) - 1} or more exact "
            f"duplicates among the {n} points, so their local scale or kNN radius is 0 and their weights would be "
            "NaN; remove duplicate feature rows (identical rows usually mean a collapsed backbone)"
        )
    weights = torch.where(distances < cutoff, torch.exp(-(distances / scale).square()), 0.0)
    inv_sqrt_degree = weights.sum(dim=-1).rsqrt()
    weights = inv_sqrt_degree.unsqueeze(-1) * weights * inv_sqrt_degree.unsqueeze(-2)
    return (weights + weights.mT) / 2 if symmetrize else weights


def gcn_normalized_adjacency(adj: sp.spmatrix | sp.sparray | torch.Tensor) -> torch.Tensor:
    """GCN renormalisation ``Â = D̃^{-1/2} (A + I) D̃^{-1/2}`` with ``D̃ = diag((A + I)·1)`` (§3.4, graph).

    Shapes: ``adj`` ``[N, N]`` scipy sparse or torch sparse (COO/CSR) or dense → torch sparse CSR ``[N, N]``.
    """
    if isinstance(adj, sp.spmatrix | sp.sparray):
        adj = sparse_to_torch(sp.csr_matrix(adj))
    require_finite(adj, "the adjacency matrix")
    ones = torch.ones(adj.shape[0], dtype=adj.dtype, device=adj.device)
    with_loops = _diagonal_plus(ones, adj.to_sparse_coo(), 1.0)  # coalesced COO
    rows, cols = with_loops.indices()
    inv_sqrt_degree = _row_sums(with_loops).rsqrt()
    values = inv_sqrt_degree[rows] * with_loops.values() * inv_sqrt_degree[cols]
    return torch.sparse_coo_tensor(with_loops.indices(), values, with_loops.shape,
                                   check_invariants=False).coalesce().to_sparse_csr()


def graph_laplacian(
    adj_hat: torch.Tensor, kind: Literal["renormalized", "identity"] = "renormalized"
) -> torch.Tensor:
    """Laplacian of the graph task: ``diag(rowsum Â) − Â`` (the released method) or ``I − Â``.

    Shapes: ``adj_hat`` ``[N, N]`` torch sparse (COO/CSR) → torch sparse CSR ``[N, N]``.
    """
    if kind == "renormalized":
        result = laplacian(adj_hat)
    elif kind == "identity":
        require_finite(adj_hat, "the normalised adjacency Â")
        result = _diagonal_plus(torch.ones(adj_hat.shape[0], dtype=adj_hat.dtype, device=adj_hat.device),
                                adj_hat, -1.0)
    else:
        raise ConfigError(f"kind must be 'renormalized' or 'identity', got {kind!r}")
    return result.to_sparse_csr()


# ------------------------------------------------------------------------------------------- modules


class Diffusion(nn.Module):
    """Parameter-free diffusion layer: T steps ``x ← x − γ L x`` with a given Laplacian (§2).

    Drop it between your own blocks: ``h = Diffusion(0.25, 20)(h, L)``. The propagation matrix
    ``M = I − γL`` (or, with ``fold_steps``, ``M^T``) is built once per Laplacian and reused while the
    same Laplacian object is passed again; L is treated as a constant (one that requires grad is
    re-fused every call). ``dropout`` (:class:`~diff_resnet.dropout.FastDropout`) is applied before every
    step (the graph model, §3.2); ``num_steps = 0`` is the identity (no-diffusion baseline).

    Shapes: ``x`` ``[N, d]`` with ``laplacian`` ``[N, N]`` (dense, COO or CSR), or ``[B, N, d]`` with
    dense ``[B, N, N]``; returns the shape of ``x``.
    """

    def __init__(self, step_size: float, num_steps: int, dropout: float = 0.0, fold_steps: bool = False):
        super().__init__()
        _require_steps(num_steps)
        _require_step_size(step_size)
        if fold_steps and dropout > 0:
            raise ConfigError("fold_steps needs dropout = 0: dropout between steps cannot be folded")
        self.step_size = step_size
        self.num_steps = num_steps
        self.fold_steps = fold_steps
        self.dropout = FastDropout(dropout)
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def propagator(self, laplacian: torch.Tensor) -> torch.Tensor:
        """``M = I − γL`` (or ``M^T`` with ``fold_steps``), cached for the last Laplacian seen."""
        if self._cache is not None and self._cache[0] is laplacian:
            return self._cache[1]
        if self.fold_steps:
            matrix = diffusion_matrix(laplacian, self.step_size, self.num_steps)
        else:
            matrix = propagation_matrix(laplacian, self.step_size)
        if not laplacian.requires_grad:
            self._cache = (laplacian, matrix)
        return matrix

    def forward(self, x: torch.Tensor, laplacian: torch.Tensor) -> torch.Tensor:
        if self.num_steps == 0:
            return x
        propagator = self.propagator(laplacian)
        if self.fold_steps:
            return propagator @ x
        for _ in range(self.num_steps):
            x = propagator @ self.dropout(x)
        return x

    def __getstate__(self) -> dict:
        # Sparse CSR tensors cannot be deep-copied or pickled; the cache is rebuilt on the next forward.
        return {**self.__dict__, "_cache": None}

    def extra_repr(self) -> str:
        folded = ", fold_steps=True" if self.fold_steps else ""
        return f"step_size={self.step_size:g}, num_steps={self.num_steps}{folded}"


#: Defaults of each weight construction: ``toy`` (σ a length) and ``fewshot`` (σ a rank), as in the paper's code.
KNN_DEFAULTS = {"toy": {"n_top": 25, "sigma": 0.5}, "fewshot": {"n_top": 8, "sigma": 4}}


class KNNDiffusion(nn.Module):
    """Diffusion on a kNN graph built from the batch itself (§3.4), treated as a constant.

    ``weights="toy"`` uses :func:`toy_weights` (row-normalised Gaussian kNN, ``sigma`` a length, default
    n_top 25, σ 0.5); ``weights="fewshot"`` uses :func:`fewshot_weights` (symmetric, ``n_top`` and ``sigma``
    ranks, default 8 and 4). The weights are computed from the detached input under ``torch.no_grad``;
    gradients flow through the steps only. ``n_top`` (and a ``fewshot`` ``sigma``) must not exceed the number
    of rows the layer is called with.

    Shapes: ``x`` ``[N, d]`` (or ``[B, N, d]``: one graph per leading index) → same shape.
    """

    def __init__(self, step_size: float, num_steps: int, weights: Literal["toy", "fewshot"] = "toy",
                 n_top: int | None = None, sigma: float | None = None):
        super().__init__()
        if weights not in KNN_DEFAULTS:
            raise ConfigError(f"weights must be 'toy' or 'fewshot', got {weights!r}")
        self.weights = weights
        self.n_top = KNN_DEFAULTS[weights]["n_top"] if n_top is None else n_top
        self.sigma = KNN_DEFAULTS[weights]["sigma"] if sigma is None else sigma
        low = 2 if weights == "fewshot" else 1
        _require_rank("n_top", self.n_top, low, max(self.n_top, low), "entries kept per row")
        if weights == "fewshot":
            _require_rank("sigma", self.sigma, 2, max(self.sigma, 2), "a rank for fewshot weights, self = 1st")
        elif not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ConfigError(f"sigma is the toy weights' length scale and must be a finite number > 0, "
                              f"got {self.sigma}")
        self.diffusion = Diffusion(step_size, num_steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.weights == "toy":
                weights = toy_weights(x, self.sigma, self.n_top)
            else:
                weights = fewshot_weights(x, self.n_top, int(self.sigma))
        return self.diffusion(x, laplacian(weights))

    def extra_repr(self) -> str:
        return f"weights={self.weights!r}, n_top={self.n_top}, sigma={self.sigma:g}"
