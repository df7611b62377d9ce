"""Diff-ResNet models: a residual "convection" block, T diffusion steps, a linear classifier.

Paper: T. Wang, Z. Dou, C. Bao, Z. Shi, "Diffusion Mechanism in Residual Neural Network: Theory and
Applications", IEEE TPAMI 46(2):667–680, 2024. The residual block is the convection term
``dx/dt = f(x, t)`` of a convection–diffusion equation and acts on every sample alone; the diffusion
steps ``h ← h − γ L h`` (:class:`~diff_resnet.diffusion.Diffusion`) couple the samples of the batch.

Both models take plain JSON-able constructor arguments (``model.config``) and are registered with
:func:`diffcore.checkpoint.register_model`, so ``export_model(model, dir, name=..., config=model.config,
package="diff_resnet")`` and ``load_pretrained(dir)`` round-trip them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from diffcore.checkpoint import register_model
from torch import nn
from torch.nn.utils import skip_init

from diff_resnet.diffusion import Diffusion, diffusion_matrix, diffusion_step


def _linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``x Wᵀ + b``; a sparse ``x`` is multiplied as it is (``addmm``), never densified first."""
    if x.layout == torch.strided:
        return layer(x)
    return torch.addmm(layer.bias, x, layer.weight.t())


@register_model("diff_resnet.ToyNet")
class ToyNet(nn.Module):
    """Toy network of §3.1 (``synthetic/*.py``) — and, with d > 2, the few-shot head of §3.3.

    ``h = x + fc2(ReLU(fc1(x)))`` → T steps ``h ← h − γ L h`` → ``logits = classifier(h)``, with
    fc1, fc2: Linear(d, d) and classifier: Linear(d, C). ``num_steps = 0`` is the plain residual network.
    ``fold_steps`` precomputes ``(I − γL)^T`` once per Laplacian (fast for the toy's fixed dense graph).

    Shapes: ``x`` ``[N, d]``, ``laplacian`` ``[N, N]`` → logits ``[N, C]``.
    """

    def __init__(self, in_features: int = 2, num_classes: int = 2, step_size: float = 1.0, num_steps: int = 0,
                 fold_steps: bool = False):
        super().__init__()
        self.in_features = in_features
        self.num_classes = num_classes
        # skip_init: reset_parameters() below is the only initialisation (one draw from the torch RNG).
        self.fc1 = skip_init(nn.Linear, in_features, in_features)
        self.fc2 = skip_init(nn.Linear, in_features, in_features)
        self.diffusion = Diffusion(step_size, num_steps, fold_steps=fold_steps)
        self.classifier = skip_init(nn.Linear, in_features, num_classes)
        self.reset_parameters()

    @property
    def config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "num_classes": self.num_classes,
                "step_size": self.diffusion.step_size, "num_steps": self.diffusion.num_steps,
                "fold_steps": self.diffusion.fold_steps}

    def reset_parameters(self) -> None:
        """PyTorch's default Linear initialisation (Kaiming-uniform a = √5, uniform bias)."""
        for layer in (self.fc1, self.fc2, self.classifier):
            layer.reset_parameters()

    def convection(self, x: torch.Tensor) -> torch.Tensor:
        """The residual block ``x + fc2(ReLU(fc1(x)))``, applied to every sample independently."""
        return x + self.fc2(torch.relu(self.fc1(x)))

    def forward(self, x: torch.Tensor, laplacian: torch.Tensor | None = None,
                return_hidden: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits, or ``(logits, h)`` with the hidden ``h`` after diffusion when ``return_hidden``."""
        if laplacian is None and self.diffusion.num_steps > 0:
            raise ValueError(f"ToyNet with num_steps={self.diffusion.num_steps} needs the Laplacian")
        h = self.convection(x)
        if laplacian is not None:
            h = self.diffusion(h, laplacian)
        logits = self.classifier(h)
        return (logits, h) if return_hidden else logits

    @torch.no_grad()
    def hidden_trajectory(self, x: torch.Tensor, laplacian: torch.Tensor,
                          max_frames: int = 60) -> tuple[list[int], torch.Tensor]:
        """The hidden ``h`` after 0, k, 2k, …, T diffusion steps: at most ``max_frames`` evenly spaced states.

        Returns the step counts and the states. Shapes: ``x`` ``[N, d]`` → ``[frames, N, d]``.
        """
        num_steps, step_size = self.diffusion.num_steps, self.diffusion.step_size
        stride = max(1, math.ceil(num_steps / max(max_frames - 1, 1)))
        steps, states = [0], [self.convection(x)]
        if num_steps >= stride:
            jump = diffusion_matrix(laplacian, step_size, stride)  # k steps in one matmul
            while steps[-1] + stride <= num_steps:
                states.append(jump @ states[-1])
                steps.append(steps[-1] + stride)
        if steps[-1] < num_steps:
            states.append(diffusion_step(states[-1], laplacian, step_size, num_steps - steps[-1]))
            steps.append(num_steps)
        return steps, torch.stack(states)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}"


@register_model("diff_resnet.DiffusionNet")
class DiffusionNet(nn.Module):
    """Graph node classifier of §3.2 (``graph/model.py``).

    ``h = X + ReLU(linear(X))`` with linear: Linear(F, F) (hidden width = input width); then T times
    ``h ← Dropout_p(h)``, ``h ← (I − γL) h`` with ``L = diag(rowsum Â) − Â`` (``I − γL`` built once as a
    sparse propagation matrix); ``logits = classifier(h)`` with classifier: Linear(F, C). Parameters F² + F + F·C + C.
    ``X`` may be a torch sparse (CSR/COO) feature matrix: ``linear(X)`` is then a sparse matmul.

    Shapes: ``x`` ``[N, F]`` dense or sparse, ``laplacian`` ``[N, N]`` (sparse) → ``[N, C]``.
    """

    def __init__(self, in_features: int, num_classes: int, step_size: float, num_steps: int, dropout: float = 0.5):
        super().__init__()
        self.in_features = in_features
        self.num_classes = num_classes
        self.linear = skip_init(nn.Linear, in_features, in_features)
        self.diffusion = Diffusion(step_size, num_steps, dropout=dropout)
        self.classifier = skip_init(nn.Linear, in_features, num_classes)
        self.reset_parameters()

    @property
    def config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "num_classes": self.num_classes,
                "step_size": self.diffusion.step_size, "num_steps": self.diffusion.num_steps,
                "dropout": self.diffusion.dropout.p}

    def reset_parameters(self) -> None:
        """PyTorch's default Linear initialisation (Kaiming-uniform a = √5, uniform bias)."""
        self.linear.reset_parameters()
        self.classifier.reset_parameters()

    def forward(self, x: torch.Tensor, laplacian: torch.Tensor) -> torch.Tensor:
        h = torch.add(torch.relu(_linear(self.linear, x)), x)  # dense + (dense or sparse) → dense
        return self.classifier(self.diffusion(h, laplacian))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}"
