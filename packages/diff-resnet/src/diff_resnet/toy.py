"""The four synthetic examples of Wang et al., TPAMI 2024 (spec §4.1, ``synthetic/*.py``).

* ``two_moon``, ``two_circle``, ``two_spiral``: 1000 noisy 2-D points in two classes, a :class:`ToyNet`
  trained full batch with SGD for 21 iterations, once without diffusion (T = 0, the plain residual
  network) and once with the preset's T diffusion steps on the fixed graph ``L = I − W`` built from the
  input points (:func:`toy_weights`). Each iteration first evaluates (accuracy on the training points,
  iteration 0 = untrained, figure of the hidden ``h``) and then takes one step.
* ``xor``: no network; the 400 points of four discs are diffused directly (``W`` from the initial
  points, fixed), and the distance–diameter ratio l/d (minimum distance between groups over maximum
  group diameter) is tracked, grouped by the two classes and by the four discs.

Figures go to ``<run>/figures/<example>/`` (PNG per iteration, ``raw.png``, one animated GIF).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffcore.io import atomic_path
from diffcore.runs import RunDir, format_table
from PIL import Image
from tqdm.auto import tqdm

from diff_resnet.config import ToyConfig
from diff_resnet.diffusion import diffusion_step, laplacian, toy_weights
from diff_resnet.models import ToyNet

#: XOR discs: centres of class A then class B, and the disc radius (diameter 1.5, quirk 17).
XOR_CENTRES = ((0.0, 0.0), (2.0, 2.0), (2.0, 0.0), (0.0, 2.0))
XOR_RADIUS = 0.75
#: Small figures keep the ~330 PNGs and 4 GIFs of ``toy --example all`` within a few seconds.
FIGURE_INCHES, FIGURE_DPI, GIF_FRAMES, GIF_FRAME_MS = 4.0, 72, 60, 80


# --------------------------------------------------------------------------------------------- data


def make_points(config: ToyConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw the example's points with the original seeding and draw order.

    The scripts seed Python ``random``, NumPy and torch with ``config.seed``; only NumPy's stream draws
    the data (torch is reseeded before each model, see :func:`train_toy_network`). Network examples: the
    x-noise vector (N draws of N(0, noise²)) is drawn before the y-noise vector. XOR: the N radii
    ``√U(0, R²)`` are drawn before the N angles ``U(0, 2π)``.

    Returns ``points`` ``[N, 2]`` float32, ``labels`` ``[N]`` (first half class 0, second half class 1)
    and ``groups`` ``[N]`` (the disc index for XOR, the label otherwise).
    """
    rng = np.random.RandomState(config.seed)  # the legacy global stream the scripts seed and draw from
    n = config.n_per_class
    if config.example == "xor":
        per_disc = n // 2
        radii = np.sqrt(rng.uniform(0.0, XOR_RADIUS**2, 4 * per_disc))
        angles = rng.uniform(0.0, 2 * np.pi, 4 * per_disc)
        centres = np.repeat(np.asarray(XOR_CENTRES), per_disc, axis=0)
        points = centres + radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        groups = torch.arange(4).repeat_interleave(per_disc)
        return torch.as_tensor(points, dtype=torch.float32), groups // 2, groups
    if config.example == "two_moon":
        t = np.linspace(0.0, np.pi, n)
        x = np.concatenate([np.cos(t), 1 - np.cos(t)])
        y = np.concatenate([np.sin(t), 0.5 - np.sin(t)])
    elif config.example == "two_circle":
        t = np.linspace(0.0, 2 * np.pi, n)
        x = np.concatenate([2 * np.cos(t), np.cos(t)])
        y = np.concatenate([2 * np.sin(t), np.sin(t)])
    else:  # two_spiral: radius 1 + θ for class 0, −(1 + θ) for class 1
        theta = np.linspace(0.0, 2 * np.pi, n)
        radius = np.concatenate([1 + theta, -(1 + theta)])
        x, y = radius * np.cos(np.tile(theta, 2)), radius * np.sin(np.tile(theta, 2))
    x = x + rng.normal(0.0, config.noise, 2 * n)
    y = y + rng.normal(0.0, config.noise, 2 * n)
    labels = torch.arange(2).repeat_interleave(n)
    return torch.as_tensor(np.stack([x, y], axis=1), dtype=torch.float32), labels, labels


def distance_diameter_ratio(points: torch.Tensor, groups: torch.Tensor) -> float:
    """l / d: the minimum distance between points of different groups over the maximum group diameter.

    Diffusion on a graph whose edges stay inside the groups shrinks every diameter d while the groups
    drift apart, so l/d grows (the paper's separability argument).

    Shapes: ``points`` ``[N, k]``, ``groups`` ``[N]``.
    """
    distances = torch.cdist(points, points)
    same = groups[:, None] == groups[None, :]
    between = distances.masked_fill(same, torch.inf).amin()
    diameter = distances.masked_fill(~same, 0.0).amax()
    return float(between / diameter)


# ------------------------------------------------------------------------------------------ training


@dataclasses.dataclass
class NetworkRun:
    """One training run of a network example: per-iteration accuracy (%), loss and hidden ``h``."""

    accuracies: list[float]
    losses: list[float]
    hidden: list[torch.Tensor]
    model: ToyNet


def train_toy_network(config: ToyConfig, points: torch.Tensor, labels: torch.Tensor, num_steps: int,
                      laplacian: torch.Tensor | None, progress: tqdm | None = None) -> NetworkRun:
    """Full-batch SGD (``config.momentum``, weight decay) on all points; each iteration evaluates, then steps.

    torch is reseeded with ``config.seed`` first, so runs with and without diffusion share the init. The
    default momentum 0 is what the original scripts train with (they build a new ``SGD(momentum=0.9)`` every
    step, so no momentum buffer survives a step; quirk 3).
    """
    torch.manual_seed(config.seed)
    # (I − γL)^T folded once: the spiral's 900 steps become one 1000×1000 matmul per forward.
    model = ToyNet(step_size=config.step_size, num_steps=num_steps, fold_steps=num_steps > 0)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    result = NetworkRun([], [], [], model)
    for iteration in range(config.iterations):
        logits, hidden = model(points, laplacian, return_hidden=True)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        correct = int((logits.argmax(dim=1) == labels).sum())
        result.accuracies.append(100.0 * correct / len(labels))
        result.losses.append(loss.item())
        result.hidden.append(hidden.detach())
        if not math.isfinite(loss.item()) and all(map(math.isfinite, result.losses[:-1])):
            warnings.warn(f"{config.example} (T = {num_steps}): SGD diverged, the loss is non-finite from "
                          f"iteration {iteration} on (momentum {config.momentum:g}, lr {config.lr:g})",
                          RuntimeWarning, stacklevel=2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress.update()
    return result


def diffuse_points(config: ToyConfig, points: torch.Tensor) -> torch.Tensor:
    """XOR: ``config.iterations`` states of pure diffusion, x_0 = points, x_{i+1} = x_i − γ(I − W)x_i.

    W is built once from the initial points. Shapes: ``points`` ``[N, 2]`` → ``[iterations, N, 2]``.
    """
    graph_laplacian = laplacian(toy_weights(points, config.sigma, config.n_top))
    states = [points]
    for _ in range(config.iterations - 1):
        states.append(diffusion_step(states[-1], graph_laplacian, config.step_size))
    return torch.stack(states)


# ------------------------------------------------------------------------------------------- figures


class ScatterCanvas:
    """One reusable Agg figure: the 2-D points coloured by class (red = 0, blue = 1) → PIL images.

    Uses matplotlib's object API with the Agg canvas directly, so it never touches pyplot's global
    backend. No ticks and two marker lines instead of a scatter: tick labels and per-point colours
    dominate the drawing time, and ~500 frames are drawn per ``toy --example all``. Rendering to an
    image lets the same frame serve as a PNG and as a GIF frame.
    """

    def __init__(self, labels: torch.Tensor):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(FIGURE_INCHES, FIGURE_INCHES), dpi=FIGURE_DPI)
        self.canvas = FigureCanvasAgg(self.figure)
        self.axes = self.figure.add_axes((0.02, 0.02, 0.96, 0.88), xticks=[], yticks=[])
        self.title = self.figure.text(0.5, 0.95, "", ha="center", va="center", fontsize=10)
        self.classes = [(labels == c).numpy() for c in (0, 1)]
        self.markers = [self.axes.plot([], [], ".", color=colour, markersize=3)[0] for colour in ("red", "blue")]

    def render(self, points: torch.Tensor, title: str, limits: np.ndarray | None = None) -> Image.Image:
        """Draw ``points`` ``[N, 2]``; ``limits`` ``[2, 2]`` (min row, max row) fixes the axes."""
        points = points.numpy()
        low, high = limits if limits is not None else _bounds(points)
        for marker, members in zip(self.markers, self.classes, strict=True):
            marker.set_data(points[members, 0], points[members, 1])
        self.axes.set_xlim(low[0], high[0])
        self.axes.set_ylim(low[1], high[1])
        self.title.set_text(title)
        self.canvas.draw()
        return Image.frombuffer("RGBA", self.canvas.get_width_height(), self.canvas.buffer_rgba()).convert("RGB")


def _bounds(points: np.ndarray, margin: float = 0.05) -> np.ndarray:
    """Axis limits ``[2, 2]`` around the finite rows of ``points`` ``[..., 2]``, with a relative margin.

    A diverged run (non-finite hidden states) still gets a figure: its finite points, or the unit box.
    """
    flat = points.reshape(-1, 2)
    flat = flat[np.isfinite(flat).all(axis=1)]
    if len(flat) == 0:
        return np.array([[-1.0, -1.0], [1.0, 1.0]])
    low, high = flat.min(axis=0), flat.max(axis=0)
    pad = margin * np.maximum(high - low, 1e-6)
    return np.stack([low - pad, high + pad])


def _save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def _save_gif(frames: list[Image.Image], path: Path) -> None:
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=GIF_FRAME_MS, loop=0)


def _frame_indices(count: int, max_frames: int = GIF_FRAMES) -> list[int]:
    """At most ``max_frames`` evenly spread indices of ``range(count)``, first and last included."""
    return sorted(set(np.linspace(0, count - 1, min(count, max_frames)).round().astype(int).tolist()))


# ------------------------------------------------------------------------------------------ examples


def _run_network_example(config: ToyConfig, run: RunDir, progress: tqdm) -> dict[str, Any]:
    folder = run.path / "figures" / config.example
    points, labels, _ = make_points(config)
    canvas = ScatterCanvas(labels)
    _save_png(canvas.render(points, f"{config.example}: input"), folder / "raw.png")
    graph_laplacian = laplacian(toy_weights(points, config.sigma, config.n_top))
    result: dict[str, Any] = {"num_steps": config.layers}
    runs = {}
    for name, num_steps in (("without_diffusion", 0), ("with_diffusion", config.layers)):
        trained = runs[name] = train_toy_network(config, points, labels, num_steps,
                                                 graph_laplacian if num_steps else None, progress)
        for k, (accuracy, loss, hidden) in enumerate(zip(trained.accuracies, trained.losses, trained.hidden,
                                                          strict=True)):
            _save_png(canvas.render(hidden, f"accuracy={accuracy:.1f}%"), folder / f"{name}_iter={k}.png")
            run.log_metrics({"example": config.example, "run": name, "iteration": k, "accuracy": accuracy,
                             "loss": loss})
        result[f"acc_{name}"] = trained.accuracies
        result[f"final_acc_{name}"] = trained.accuracies[-1]
        result[f"loss_{name}"] = trained.losses
    # The trained with-diffusion model's hidden h across its T steps: the points gathering by class.
    steps, trajectory = runs["with_diffusion"].model.hidden_trajectory(points, graph_laplacian, GIF_FRAMES)
    limits = _bounds(trajectory.numpy())
    frames = [canvas.render(h, f"diffusion step {step}/{config.layers}", limits)
              for step, h in zip(steps, trajectory, strict=True)]
    _save_gif(frames, folder / "diffusion.gif")
    result["figures"] = str(folder.relative_to(run.path))
    result["gif"] = str((folder / "diffusion.gif").relative_to(run.path))
    return result


def _run_xor_example(config: ToyConfig, run: RunDir, progress: tqdm) -> dict[str, Any]:
    folder = run.path / "figures" / config.example
    points, labels, discs = make_points(config)
    canvas = ScatterCanvas(labels)
    _save_png(canvas.render(points, "xor: input"), folder / "raw.png")
    states = diffuse_points(config, points)
    ratios = [distance_diameter_ratio(state, labels) for state in states]
    disc_ratios = [distance_diameter_ratio(state, discs) for state in states]
    limits = _bounds(points.numpy())
    gif_indices = set(_frame_indices(len(states)))
    frames = []
    for i, state in enumerate(states):
        image = canvas.render(state, f"iteration {i}: l/d = {ratios[i]:.3f}", limits)
        _save_png(image, folder / f"iter={i}.png")
        if i in gif_indices:
            frames.append(image)
        run.log_metrics({"example": config.example, "iteration": i, "ratio": ratios[i],
                         "disc_ratio": disc_ratios[i]})
        progress.update()
    _save_gif(frames, folder / "diffusion.gif")
    return {
        "ratio_before": ratios[0], "ratio_after": ratios[-1],
        "disc_ratio_before": disc_ratios[0], "disc_ratio_after": disc_ratios[-1],
        "ratio_curve": ratios, "disc_ratio_curve": disc_ratios,
        "figures": str(folder.relative_to(run.path)),
        "gif": str((folder / "diffusion.gif").relative_to(run.path)),
    }


def run_toy(configs: list[ToyConfig], run: RunDir) -> dict[str, dict[str, Any]]:
    """Run each example, write its figures and GIF under ``run.path / "figures"``; JSON-able results.

    Network examples: ``acc_without_diffusion`` / ``acc_with_diffusion`` (accuracy in % at each
    iteration), ``final_acc_*``, ``num_steps``; XOR: ``ratio_before`` / ``ratio_after`` (classes),
    ``disc_ratio_before`` / ``disc_ratio_after`` (discs) and both curves. Each entry also holds
    ``figures`` and ``gif`` (paths relative to the run directory) and ``seconds``.
    """
    results = {}
    # The toy tensors are small (at most 1000×1000): a second intra-op thread saves little, and on a
    # busy 2-core machine its spin-waiting made the whole command 1.4–2.5× slower (measured).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        examples = tqdm(configs, desc="toy", unit="example", disable=None)
        for config in examples:
            examples.set_postfix_str(config.example)
            iterations = config.iterations * (1 if config.example == "xor" else 2)
            start = time.perf_counter()
            with tqdm(total=iterations, desc=config.example, unit="it", leave=False, disable=None) as progress:
                run_example = _run_xor_example if config.example == "xor" else _run_network_example
                results[config.example] = run_example(config, run, progress)
            results[config.example]["seconds"] = round(time.perf_counter() - start, 2)
    finally:
        torch.set_num_threads(threads)
    return results


def print_toy_results(results: dict[str, dict[str, Any]]) -> None:
    """Print the final accuracies without / with diffusion, then the XOR distance–diameter ratios."""
    networks = [{"example": example, "T": result["num_steps"],
                 "acc without diffusion %": result["final_acc_without_diffusion"],
                 "acc with diffusion %": result["final_acc_with_diffusion"]}
                for example, result in results.items() if example != "xor"]
    ratios = [{"example": example, "grouping": grouping, "l/d before": result[f"{prefix}ratio_before"],
               "l/d after": result[f"{prefix}ratio_after"], "iterations": len(result[f"{prefix}ratio_curve"])}
              for example, result in results.items() if example == "xor"
              for grouping, prefix in (("2 classes", ""), ("4 discs", "disc_"))]
    tables = [format_table(rows, floatfmt) for rows, floatfmt in ((networks, ".1f"), (ratios, ".4g")) if rows]
    print("\n\n".join(tables))
