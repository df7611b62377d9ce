"""Transductive few-shot classification with Diff-ResNet, many episodes at once (§4.3c–f).

Paper: T. Wang, Z. Dou, C. Bao, Z. Shi, "Diffusion Mechanism in Residual Neural Network: Theory and
Applications", IEEE TPAMI 46(2):667–680, 2024 (``fewshot/train.py`` of the official code).

One ``way``-way ``shot``-shot episode with ``query`` queries per class (S = way·shot support rows first,
then Q = way·query queries, both class-major; N = S + Q) goes through:

1. centring and normalisation: ``x ← (x − base_mean) / ‖x − base_mean‖₂`` (support and query);
2. cross-domain shift (``laplacian``, ``diffusion``): queries ``+= mean(support) − mean(query)``
   (steps 1–2 are skipped with ``raw_features``, the ablation of Table 2);
3. ``simple``: nearest support mean (Euclidean). ``laplacian``: rectified prototypes p̃ (below), unary
   ``a_qc = ‖x_q − p̃_c‖``, binary kNN graph W_q over the queries (each query's ``laplacian_knn`` nearest
   other queries), ``y ← softmax(−a + λ W_q y)`` from ``y⁰ = softmax(−a)`` until the relative change of
   ``E = Σ y ⊙ (log y + a − λ W_q y)`` drops below ``tol``. ``diffusion``: W′ of §3.4 over all N points,
   ``L = diag(W′1) − W′``, and a fresh head ``h = x + fc2(ReLU(fc1(x)))``, T steps ``h ← h − γ L h``,
   ``logits = classifier(h)`` trained ``epochs`` full-batch SGD steps on the support cross-entropy
   (+ α · Σ_q Σ_c softmax(logits_q)_c ‖x_q − p̃_c‖ when α > 0, + μ · Σ_ij W′_ij ‖z_i − z_j‖² on the logits z of
   all N points when μ > 0); predict the argmax on the queries.

Rectified prototypes: ``p_c`` = support mean, ``s_ic = 10·cos(x_i, p_c)`` over all N points,
``ŷ_i = argmax_c s_ic``, ``p̃_c = mean_{i: ŷ_i = c} softmax_c(s_i)_c · x_i``; computed only where used
(laplacian, or α > 0), and a class no point is assigned to keeps its support mean (quirk 10; the
original produces NaN there).

Batching: B episodes are stacked along a leading axis. The weights, Laplacians and ``(I − γL)^T`` are
``[B, N, N]``; the B heads are stacked parameters ``[B, ...]`` evaluated with batched matmuls and trained
by one ``torch.optim.SGD`` on the stacked tensors — SGD with momentum and weight decay is elementwise,
and the summed loss gives each episode the gradient of its own loss, so this *is* B independent
trainings. The T steps are folded into ``M = (I − γL)^T``; M is linear with unit row sums, so the rows the
loss needs are ``M[rows] x + (M[rows] ReLU(fc1 x)) W₂ᵀ + b₂`` (:func:`head_logits`): while training, fc2 and
the classifier see only the S support rows.

Seeds: episode i's task (classes, images) comes from ``SeedSequence(seed, spawn_key=(i, 0))`` and its head's
initialisation (PyTorch's default Linear distribution, U(±1/√d)) from ``spawn_key=(i, 1)``, so the batch size,
the order of batches and the one-at-a-time reference (:func:`reference_diffusion_episode`, a plain
:class:`~diff_resnet.models.ToyNet` per episode) all see the same episodes (quirk 16: statistical, not
bitwise, parity with the original's ``random`` stream).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffcore.device import resolve_device
from diffcore.errors import ConfigError, DataError
from diffcore.runs import RunDir, format_table

from diff_resnet.diffusion import diffusion_matrix, fewshot_weights, laplacian
from diff_resnet.distributed import gather_lists, process_share, world_size
from diff_resnet.fewshot.config import FewShotConfig
from diff_resnet.fewshot.data import FeatureSet
from diff_resnet.models import ToyNet

#: Parameter names (and order of initialisation draws) of one episode's head; ToyNet's state-dict keys.
HEAD_KEYS = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "classifier.weight", "classifier.bias")


# ------------------------------------------------------------------------------------------ episodes


def episode_seed(seed: int, episode: int, stream: int) -> np.random.SeedSequence:
    """Seed of episode ``episode``'s ``stream`` (0 = task, 1 = head initialisation), independent of batching."""
    return np.random.SeedSequence(seed, spawn_key=(int(episode), stream))


class EpisodeSampler:
    """Draws episodes from labelled rows: per episode ``way`` classes, then ``per_class`` distinct rows each.

    Episode i uses its own generator (:func:`episode_seed`): ``classes = choice(C, way)`` without
    replacement (their order gives the episode labels 0…way−1), then for each class ``choice(n_c, per_class)``
    without replacement; the first ``shot`` rows of a class are its support.

    Shapes: ``labels`` ``[N]`` → :meth:`draw` ``[E, way, per_class]`` row indices.
    """

    def __init__(self, labels: np.ndarray | torch.Tensor):
        labels = np.asarray(labels)
        self.classes, counts = np.unique(labels, return_counts=True)
        order = np.argsort(labels, kind="stable")
        self.rows = np.split(order, np.cumsum(counts)[:-1])  # rows of each class, in file order
        self.counts = counts

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def check(self, way: int, per_class: int, what: str = "--shot + --query") -> None:
        """Clear errors for episodes the rows cannot supply (quirk 11)."""
        if way < 1 or per_class < 1:
            raise ConfigError(f"way and {what} must be ≥ 1, got {way} and {per_class}")
        if way > self.num_classes:
            raise ConfigError(f"way={way} needs {way} classes, but the features have {self.num_classes}")
        short = self.counts < per_class
        if short.any():
            pairs = zip(self.classes[short][:5], self.counts[short][:5], strict=True)
            names = ", ".join(f"{c} ({n})" for c, n in pairs)
            raise ConfigError(
                f"{what} = {per_class} rows per class, but {int(short.sum())} class(es) have fewer: {names} "
                f"(label (rows)); the smallest class has {int(self.counts.min())}"
            )

    def draw(self, seed: int, episodes: Sequence[int] | np.ndarray, way: int, per_class: int) -> np.ndarray:
        picks = np.empty((len(episodes), way, per_class), dtype=np.int64)
        for slot, episode in enumerate(episodes):  # one generator per episode: the seed scheme, not the maths
            rng = np.random.default_rng(episode_seed(seed, episode, 0))
            for row, c in enumerate(rng.choice(self.num_classes, size=way, replace=False)):
                picks[slot, row] = self.rows[c][rng.choice(self.counts[c], size=per_class, replace=False)]
        return picks


def gather_episodes(features: torch.Tensor, picks: torch.Tensor, shot: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Support and query rows of drawn episodes, class-major.

    Shapes: ``features`` ``[N_rows, d]``, ``picks`` ``[B, way, shot + query]`` → ``[B, way·shot, d]``,
    ``[B, way·query, d]``.
    """
    return features[picks[:, :, :shot]].flatten(1, 2), features[picks[:, :, shot:]].flatten(1, 2)


def init_head(seed: int, episode: int, dim: int, way: int) -> dict[str, torch.Tensor]:
    """Episode ``episode``'s head parameters, drawn from its own generator (keys :data:`HEAD_KEYS`).

    PyTorch's default Linear initialisation (Kaiming-uniform a = √5 and the bias rule give U(±1/√fan_in);
    fan_in = d for all three layers), drawn in the order of :data:`HEAD_KEYS`.
    """
    state = episode_seed(seed, episode, 1).generate_state(1, dtype=np.uint64)[0]
    generator = torch.Generator().manual_seed(int(state))
    bound = 1.0 / math.sqrt(dim)
    shapes = {"fc1.weight": (dim, dim), "fc1.bias": (dim,), "fc2.weight": (dim, dim), "fc2.bias": (dim,),
              "classifier.weight": (way, dim), "classifier.bias": (way,)}
    return {key: torch.empty(shapes[key]).uniform_(-bound, bound, generator=generator) for key in HEAD_KEYS}


# ------------------------------------------------------------------------------- per-episode steps


def preprocess(support: torch.Tensor, query: torch.Tensor, base_mean: torch.Tensor,
               shift: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre on the base mean, L2-normalise, and (``shift``) move the query mean onto the support mean.

    Shapes: ``support`` ``[B, S, d]``, ``query`` ``[B, Q, d]``, ``base_mean`` ``[d]`` → same shapes.
    """
    support = F.normalize(support - base_mean, dim=-1)
    query = F.normalize(query - base_mean, dim=-1)
    if shift:
        query = query + (support.mean(dim=1, keepdim=True) - query.mean(dim=1, keepdim=True))
    return support, query


def prototypes(support: torch.Tensor, way: int) -> torch.Tensor:
    """Class means of class-major support rows: ``[B, way·shot, d]`` → ``[B, way, d]``."""
    return support.unflatten(1, (way, -1)).mean(dim=2)


def nearest_prototype(support: torch.Tensor, query: torch.Tensor, way: int) -> torch.Tensor:
    """SimpleShot's rule: each query takes the class of the nearest support mean (Euclidean).

    Shapes: ``support`` ``[B, S, d]``, ``query`` ``[B, Q, d]`` → predictions ``[B, Q]``.
    """
    return torch.cdist(query, prototypes(support, way)).argmin(dim=-1)


def rectified_prototypes(support: torch.Tensor, points: torch.Tensor, way: int, scale: float = 10.0) -> torch.Tensor:
    """Prototype rectification: ``p̃_c = mean_{i: ŷ_i = c} softmax_c(s_i)_c x_i`` with ``s_ic = scale·cos(x_i, p_c)``.

    A class with no pseudo-labelled point keeps its support mean (quirk 10).
    Shapes: ``support`` ``[B, S, d]``, ``points`` (support and queries) ``[B, N, d]`` → ``[B, way, d]``.
    """
    proto = prototypes(support, way)
    similarity = scale * F.normalize(points, dim=-1) @ F.normalize(proto, dim=-1).mT  # [B, N, way]
    assigned = F.one_hot(similarity.argmax(dim=-1), way).to(points.dtype)
    weights = assigned * similarity.softmax(dim=-1)
    counts = assigned.sum(dim=1)  # [B, way]
    rectified = (weights.mT @ points) / counts.clamp_min(1).unsqueeze(-1)
    return torch.where(counts.unsqueeze(-1) > 0, rectified, proto)


def laplacian_shot(support: torch.Tensor, query: torch.Tensor, way: int, lamda: float = 0.5, knn: int = 2,
                   max_iter: int = 20, tol: float = 1e-6, scale: float = 10.0) -> torch.Tensor:
    """LaplacianShot-style bound updates on rectified prototypes, batched over episodes (§4.3d).

    Each episode stops on its own at the first update whose relative energy change is below ``tol``.
    Shapes: ``support`` ``[B, S, d]``, ``query`` ``[B, Q, d]`` → predictions ``[B, Q]``.
    """
    proto = rectified_prototypes(support, torch.cat([support, query], dim=1), way, scale)
    unary = torch.cdist(query, proto)  # [B, Q, way]
    distances = torch.cdist(query, query)
    distances.diagonal(dim1=-2, dim2=-1).fill_(math.inf)  # neighbours are *other* queries
    neighbours = distances.topk(knn, dim=-1, largest=False).indices
    graph = torch.zeros_like(distances).scatter_(-1, neighbours, 1.0)  # binary, not symmetrised

    def energy(y: torch.Tensor) -> torch.Tensor:
        return (torch.xlogy(y, y) + y * (unary - lamda * graph @ y)).sum(dim=(1, 2))

    y = (-unary).softmax(dim=-1)
    current = energy(y)
    active = torch.ones(len(y), dtype=torch.bool, device=y.device)
    for _ in range(max_iter):
        y = torch.where(active[:, None, None], (lamda * graph @ y - unary).softmax(dim=-1), y)
        new = energy(y)
        converged = ((new - current) / current).abs() < tol
        current = torch.where(active, new, current)
        active &= ~converged
        if not active.any():
            break
    return y.argmax(dim=-1)


# ------------------------------------------------------------------------ the per-episode network


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat subnormal floats as zero on the CPU while heads train, then restore the default (off).

    Once a 1-shot head fits its support, its gradients and momentum buffers decay through the subnormal
    range, where CPU arithmetic is many times slower; their size there (< 1e-38) changes no prediction.
    """
    changed = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if changed:
            torch.set_flush_denormal(False)


def stack_heads(seed: int, episodes: Sequence[int], dim: int, way: int) -> dict[str, torch.Tensor]:
    """The heads of ``episodes`` stacked along a leading episode axis: ``[B, ...]`` per key."""
    heads = [init_head(seed, e, dim, way) for e in episodes]
    return {key: torch.stack([h[key] for h in heads]) for key in HEAD_KEYS}


def head_logits(params: dict[str, torch.Tensor], x: torch.Tensor, propagator: torch.Tensor | None,
                rows: slice = slice(None)) -> torch.Tensor:
    """Logits of B stacked heads on ``rows``: ``(M h)[rows] W_cᵀ + b_c``, ``h = x + fc2(ReLU(fc1(x)))``, M = (I − γL)^T.

    M is linear with unit row sums (``L1 = 0``), so ``(M h)[rows] = M[rows] x + (M[rows] ReLU(fc1(x))) W₂ᵀ + b₂``:
    only fc1 sees all N rows; fc2 and the classifier act on the rows asked for (the S support rows while
    training) — the same numbers as T diffusion steps on all of h, for a fraction of the work. Without
    diffusion (``propagator`` None) the rows do not interact and only they are computed.

    Shapes: ``params`` as :func:`stack_heads`, ``x`` ``[B, N, d]``, ``propagator`` ``[B, N, N]`` or None
    → ``[B, n_rows, way]``.
    """
    if propagator is None:
        x = x[:, rows]
    hidden = torch.baddbmm(params["fc1.bias"].unsqueeze(1), x, params["fc1.weight"].mT).relu()
    if propagator is not None:
        mixing = propagator[:, rows]
        x, hidden = mixing @ x, mixing @ hidden
    h = torch.baddbmm(params["fc2.bias"].unsqueeze(1), hidden, params["fc2.weight"].mT) + x
    return torch.baddbmm(params["classifier.bias"].unsqueeze(1), h, params["classifier.weight"].mT)


def smoothness_penalty(logits: torch.Tensor, laplacian: torch.Tensor) -> torch.Tensor:
    """The ablation's graph loss ``Σ_ij W′_ij ‖z_i − z_j‖²`` per episode, as ``2 Σ_i z_i · (L z)_i``.

    For a symmetric W′ with ``L = diag(W′1) − W′``, ``Σ_ij W′_ij ‖z_i − z_j‖² = 2 tr(zᵀ L z)``: one batched
    matmul instead of the N × N × C pairwise differences.
    Shapes: ``logits`` ``[B, N, C]``, ``laplacian`` ``[B, N, N]`` → ``[B]``.
    """
    return 2 * (logits * (laplacian @ logits)).sum(dim=(-2, -1))


def _optimizer(params: Any, config: FewShotConfig) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.MultiStepLR]:
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    milestones = [int(m * config.epochs) for m in config.milestones]
    return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)


def _support_labels(config: FewShotConfig, device: torch.device) -> torch.Tensor:
    return torch.arange(config.way, device=device).repeat_interleave(config.shot)


@flush_denormals()
def diffusion_episodes(support: torch.Tensor, query: torch.Tensor, episodes: Sequence[int],
                       config: FewShotConfig) -> torch.Tensor:
    """Train one fresh head per episode, all B together, and predict the queries (§4.3c steps 4–8).

    Shapes: ``support`` ``[B, S, d]``, ``query`` ``[B, Q, d]`` (preprocessed and shifted) → ``[B, Q]``.
    """
    x = torch.cat([support, query], dim=1)
    num_support, (batch, _, dim) = support.shape[1], x.shape
    with torch.no_grad():
        graph_laplacian = laplacian(fewshot_weights(x, config.n_top, config.sigma))
        propagator = diffusion_matrix(graph_laplacian, config.step_size, config.layers) if config.layers else None
        distance = None
        if config.alpha > 0:
            proto = rectified_prototypes(support, x, config.way, config.rectify_scale)
            distance = torch.cdist(query, proto)  # [B, Q, way], a constant of the loss
    heads = stack_heads(config.seed, episodes, dim, config.way)
    params = {key: value.to(x.device).requires_grad_() for key, value in heads.items()}
    optimizer, scheduler = _optimizer(params.values(), config)
    targets = _support_labels(config, x.device).repeat(batch)
    # The prototype loss needs the query logits and the smoothness loss all N; the cross-entropy only the support.
    train_rows = slice(None) if distance is not None or config.mu > 0 else slice(0, num_support)
    for _ in range(config.epochs):
        logits = head_logits(params, x, propagator, train_rows)
        cross_entropy = F.cross_entropy(logits[:, :num_support].flatten(0, 1), targets, reduction="none")
        loss = cross_entropy.view(batch, num_support).mean(dim=1).sum()  # Σ over episodes of each one's loss
        if distance is not None:
            loss = loss + config.alpha * (logits[:, num_support:].softmax(dim=-1) * distance).sum()
        if config.mu > 0:
            loss = loss + config.mu * smoothness_penalty(logits, graph_laplacian).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    with torch.no_grad():
        return head_logits(params, x, propagator, slice(num_support, None)).argmax(dim=-1)


@flush_denormals()
def reference_diffusion_episode(support: torch.Tensor, query: torch.Tensor, episode: int,
                                config: FewShotConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One episode the way the original runs it: a :class:`ToyNet` head, stepwise diffusion, torch SGD.

    The reference :func:`diffusion_episodes` must reproduce. Shapes: ``support`` ``[S, d]``,
    ``query`` ``[Q, d]`` → (predictions ``[Q]``, query logits ``[Q, way]``).
    """
    x = torch.cat([support, query])
    num_support = len(support)
    with torch.no_grad():
        weights = fewshot_weights(x, config.n_top, config.sigma)
        graph_laplacian = laplacian(weights)
        distance = None
        if config.alpha > 0:
            proto = rectified_prototypes(support[None], x[None], config.way, config.rectify_scale)[0]
            distance = torch.cdist(query, proto)
    model = ToyNet(x.shape[1], config.way, config.step_size, config.layers).to(x.device)
    model.load_state_dict(init_head(config.seed, episode, x.shape[1], config.way))
    optimizer, scheduler = _optimizer(model.parameters(), config)
    targets = _support_labels(config, x.device)
    for _ in range(config.epochs):
        logits = model(x, graph_laplacian)
        loss = F.cross_entropy(logits[:num_support], targets)
        if distance is not None:
            loss = loss + config.alpha * (logits[num_support:].softmax(dim=-1) * distance).sum()
        if config.mu > 0:  # the ablation script's pairwise form
            loss = loss + config.mu * (weights * (logits[None] - logits[:, None]).square().sum(dim=-1)).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    with torch.no_grad():
        logits = model(x, graph_laplacian)[num_support:]
    return logits.argmax(dim=-1), logits


# ---------------------------------------------------------------------------------------- protocol


def episode_accuracies(features: torch.Tensor, base_mean: torch.Tensor, sampler: EpisodeSampler,
                       episodes: Sequence[int], config: FewShotConfig) -> torch.Tensor:
    """Query accuracy (%) of each of ``episodes``: batched, or one at a time with ``config.batched=False``.

    Shapes: ``features`` ``[N_rows, d]``, ``base_mean`` ``[d]`` → ``[len(episodes)]``.
    """
    picks = torch.from_numpy(sampler.draw(config.seed, episodes, config.way, config.shot + config.query))
    support, query = gather_episodes(features, picks.to(features.device), config.shot)
    labels = torch.arange(config.way, device=features.device).repeat_interleave(config.query)
    if not config.raw_features:
        support, query = preprocess(support, query, base_mean, shift=config.method != "simple")
    if config.method == "simple":
        predictions = nearest_prototype(support, query, config.way)
    elif config.method == "laplacian":
        predictions = laplacian_shot(support, query, config.way, config.lamda, config.laplacian_knn,
                                     config.laplacian_iters, config.laplacian_tol, config.rectify_scale)
    elif config.batched:
        predictions = diffusion_episodes(support, query, episodes, config)
    else:
        predictions = torch.stack([reference_diffusion_episode(s, q, e, config)[0]
                                   for s, q, e in zip(support, query, episodes, strict=True)])
    return 100.0 * (predictions == labels).double().mean(dim=1)


def confidence_interval(accuracies: np.ndarray) -> tuple[float, float]:
    """Mean and 95 % half-width ``1.96 · std(ddof 0) / √n`` (§4.3f)."""
    accuracies = np.asarray(accuracies, dtype=np.float64)
    return float(accuracies.mean()), float(1.96 * accuracies.std() / math.sqrt(len(accuracies)))


def validate_features(features: FeatureSet, config: FewShotConfig) -> None:
    """What only the feature file can tell: enough classes and rows per class, and no group of identical
    rows large enough to give an episode a zero local scale (NaN weights, §3.4). (:func:`load_features`
    has already refused wrong shapes and non-finite values.)"""
    EpisodeSampler(features.labels.numpy()).check(config.way, config.shot + config.query)
    rows = features.features
    if not config.raw_features:  # the rows the episodes see: centred on the base mean, L2-normalised
        rows = F.normalize(rows - features.base_mean, dim=-1)
    copies = torch.unique(rows, dim=0, return_counts=True)[1].max().item()
    if copies == len(rows):
        raise DataError(f"{features.path}: all {len(rows)} feature rows are identical"
                        f"{'' if config.raw_features else ' after centring and normalisation'}, so no method can "
                        "tell the classes apart (a collapsed or untrained backbone?); re-extract the features")
    smallest_rank = min(config.n_top, config.sigma)
    if config.method == "diffusion" and copies >= smallest_rank:
        raise DataError(
            f"{features.path}: {copies} feature rows are copies of one vector; an episode that draws {smallest_rank} "
            f"of them has a zero local scale (--n-top {config.n_top}, --sigma {config.sigma}) and NaN weights; "
            "remove the duplicate rows"
        )


def run_fewshot(features: FeatureSet, config: FewShotConfig, run: RunDir | None = None) -> dict[str, Any]:
    """``config.episodes`` episodes on a feature file, ``batch_episodes`` at a time; the results.json dict.

    Under a multi-process launch (``accelerate launch`` / ``torchrun``) each process takes a contiguous share
    of the episodes; every episode is seeded on its own, so the gathered accuracies equal the one-process
    run's. ``run``'s metrics.jsonl gets one line per batch of the first process (its episodes done, their
    running mean accuracy, seconds).
    """
    from tqdm.auto import tqdm

    config.check()
    validate_features(features, config)
    device = resolve_device(config.device)
    sampler = EpisodeSampler(features.labels.numpy())
    rows, base_mean = features.features.to(device), features.base_mean.to(device)
    size = config.batch_episodes if config.batched else 1
    share = process_share(config.episodes)
    local = np.empty(len(share))
    started = time.perf_counter()
    bar = tqdm(total=len(share), desc=f"{config.method} {config.way}-way {config.shot}-shot", unit="episode",
               disable=None if run is None or run.is_main else True)
    for offset in range(0, len(share), size):
        episodes = share[offset : offset + size]
        done = offset + len(episodes)
        local[offset:done] = episode_accuracies(rows, base_mean, sampler, list(episodes), config).cpu().numpy()
        if run is not None:
            run.log_metrics({"episodes": done, "acc_mean": float(local[:done].mean()),
                             "seconds": time.perf_counter() - started})
        bar.update(len(episodes))
        bar.set_postfix_str(f"acc {local[:done].mean():.2f}%")
    bar.close()
    accuracies = np.array(gather_lists(local.tolist()))
    seconds = time.perf_counter() - started
    mean, half_width = confidence_interval(accuracies)
    return {
        "method": config.method, "way": config.way, "shot": config.shot, "query": config.query,
        "episodes": config.episodes, "acc_mean": mean, "acc_ci95": half_width, "acc_std": float(accuracies.std()),
        "episode_accs": accuracies.tolist(), "features": features.summary(), "seed": config.seed,
        "raw_features": config.raw_features, "mu": config.mu, "batched": config.batched, "batch_episodes": size,
        "world_size": world_size(), "seconds": seconds, "episodes_per_second": config.episodes / seconds,
    }


def print_fewshot_results(results: dict[str, Any]) -> None:
    """One-row summary: features, method, task, accuracy mean ± 95 % CI, speed."""
    import click

    source = results["features"]
    row = {
        "features": f"{source.get('dataset') or Path(source['path']).name} ({source['dim']}-d)",
        "method": results["method"],
        "task": f"{results['way']}-way {results['shot']}-shot",
        "episodes": results["episodes"],
        "acc (%)": f"{results['acc_mean']:.2f} ± {results['acc_ci95']:.2f}",
        "episodes/s": f"{results['episodes_per_second']:.1f}",
    }
    click.echo(format_table([row]))
