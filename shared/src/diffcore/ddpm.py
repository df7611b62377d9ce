"""Denoising diffusion (DDPM) on diffusers' schedulers, shared by ``pdiff`` and ``diffclassify``.

Ho, Jain, Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020; Song, Meng, Ermon, "Denoising
Diffusion Implicit Models", ICLR 2021. With ``β_1 … β_T`` (linear from ``beta_start`` to ``beta_end``),
``α_t = 1 − β_t`` and ``ᾱ_t = ∏_{s≤t} α_s``:

* forward process ``q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I)``, i.e. ``x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε``;
* training: ``t ~ U{0, …, T−1}``, ``ε ~ N(0, I)``, loss ``‖ε − ε_θ(x_t, t)‖²`` (mean over all entries);
* ancestral sampling: ``x_{t−1} = (x_t − β_t/√(1 − ᾱ_t) ε_θ) / √α_t + σ_t z`` with ``σ_t² = β̃_t =
  β_t (1 − ᾱ_{t−1})/(1 − ᾱ_t)`` (``variance_type="fixed_small"``) or ``β_t`` (``"fixed_large"``), no noise at
  ``t = 0``; DDIM with ``η`` (0 = deterministic) on a sub-sequence of ``steps`` timesteps.

Timesteps are 0-based as in diffusers (``t = 0`` is the least noisy). The schedule, the noising and both
samplers are diffusers' ``DDPMScheduler`` / ``DDIMScheduler``; this module adds the loss, batched sampling
loops and an :class:`EMA` on :class:`torch.optim.swa_utils.AveragedModel`. ``diffusers`` is the
``diffcore[ddpm]`` extra and is imported when a :class:`DDPM` is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from diffcore.errors import ConfigError

#: ``model(x_t [B, ...], t [B] long) -> ε̂ [B, ...]``
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _diffusers():
    try:
        import diffusers
    except ImportError:
        raise ConfigError("diffcore.ddpm needs diffusers: install the extra, e.g. pip install 'diffcore[ddpm]'") \
            from None
    return diffusers


class DDPM:
    """The noise schedule with its forward process, ε-prediction loss and DDPM/DDIM samplers.

    Args:
        num_train_timesteps: T.
        beta_start, beta_end, beta_schedule: the β schedule (diffusers' names: ``"linear"``,
            ``"scaled_linear"``, ``"squaredcos_cap_v2"``).
        variance_type: ancestral sampling variance, ``"fixed_small"`` (β̃_t) or ``"fixed_large"`` (β_t).
        clip_sample: clip the predicted x̂_0 to ``[−clip_sample_range, clip_sample_range]`` while sampling.
    """

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 beta_schedule: str = "linear", variance_type: Literal["fixed_small", "fixed_large"] = "fixed_small",
                 clip_sample: bool = False, clip_sample_range: float = 1.0):
        if num_train_timesteps < 1:
            raise ConfigError(f"num_train_timesteps must be ≥ 1, got {num_train_timesteps}")
        if not 0 < beta_start <= beta_end < 1:
            raise ConfigError(f"need 0 < beta_start ≤ beta_end < 1, got {beta_start}, {beta_end}")
        self.scheduler = _diffusers().DDPMScheduler(
            num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end,
            beta_schedule=beta_schedule, variance_type=variance_type, clip_sample=clip_sample,
            clip_sample_range=clip_sample_range, prediction_type="epsilon",
        )

    @property
    def num_train_timesteps(self) -> int:
        return self.scheduler.config.num_train_timesteps

    @property
    def betas(self) -> torch.Tensor:
        """``β_t``, ``[T]``."""
        return self.scheduler.betas

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """``ᾱ_t = ∏_{s≤t} (1 − β_s)``, ``[T]``."""
        return self.scheduler.alphas_cumprod

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε``. Shapes: ``x0``, ``noise`` ``[B, ...]``, ``t`` ``[B]`` long."""
        return self.scheduler.add_noise(x0, noise, t.to(x0.device))

    def sample_timesteps(self, n: int, *, generator: torch.Generator | None = None,
                         device: torch.device | str | None = None) -> torch.Tensor:
        """``t ~ U{0, …, T−1}``, ``[n]`` long (drawn on ``generator``'s device, then moved to ``device``)."""
        where = generator.device if generator is not None else device
        return torch.randint(0, self.num_train_timesteps, (n,), generator=generator, device=where).to(device)

    def loss(self, model: Denoiser, x0: torch.Tensor, *, t: torch.Tensor | None = None,
             noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """ε-prediction loss ``mean ‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖²`` (fresh ``t`` and ``ε`` unless given)."""
        if t is None:
            t = self.sample_timesteps(x0.shape[0], generator=generator, device=x0.device)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=generator.device if generator else x0.device,
                                dtype=x0.dtype).to(x0.device)
        return F.mse_loss(model(self.add_noise(x0, noise, t), t), noise)

    def sampler(self, kind: Literal["ddpm", "ddim"] = "ddpm", steps: int | None = None,
                clip_sample: bool | None = None) -> Any:
        """A fresh diffusers scheduler for sampling: ``"ddpm"`` (ancestral) or ``"ddim"``, on ``steps``
        evenly spaced timesteps (all T by default)."""
        overrides = {} if clip_sample is None else {"clip_sample": clip_sample}
        if kind == "ddpm":
            scheduler = self.scheduler.__class__.from_config(self.scheduler.config, **overrides)
        elif kind == "ddim":
            scheduler = _diffusers().DDIMScheduler.from_config(self.scheduler.config, set_alpha_to_one=False,
                                                                 timestep_spacing="trailing", **overrides)
        else:
            raise ConfigError(f"sampler must be 'ddpm' or 'ddim', got {kind!r}")
        steps = self.num_train_timesteps if steps is None else steps
        if not 1 <= steps <= self.num_train_timesteps:
            raise ConfigError(f"sampling steps must lie in 1…{self.num_train_timesteps}, got {steps}")
        scheduler.set_timesteps(steps)
        return scheduler

    @torch.no_grad()
    def sample(self, model: Denoiser, shape: tuple[int, ...], *, sampler: Literal["ddpm", "ddim"] = "ddpm",
               steps: int | None = None, eta: float = 0.0, clip_sample: bool | None = None,
               generator: torch.Generator | None = None, device: torch.device | str | None = None,
               progress: bool = False) -> torch.Tensor:
        """Draw ``shape[0]`` samples at once from ``x_T ~ N(0, I)``; returns ``x_0`` ``shape``.

        ``eta`` is DDIM's η (ignored by ``"ddpm"``). A non-finite sample is an error, never a silent NaN.
        """
        from tqdm.auto import tqdm

        device = torch.device(device) if device is not None else (generator.device if generator else "cpu")
        scheduler = self.sampler(sampler, steps, clip_sample)
        x = torch.randn(shape, generator=generator, device=generator.device if generator else device).to(device)
        extra = {"eta": eta} if sampler == "ddim" else {}
        for t in tqdm(scheduler.timesteps, desc=f"{sampler} sampling", disable=not progress, leave=False):
            timestep = torch.full((shape[0],), int(t), device=device, dtype=torch.long)
            epsilon = model(x, timestep)
            x = scheduler.step(epsilon, int(t), x, generator=generator, **extra).prev_sample
        if not torch.isfinite(x).all():
            raise FloatingPointError("sampling produced non-finite values; the denoiser may be untrained or diverged")
        return x


class EMA(nn.Module):
    """Exponential moving average of a model's parameters and floating buffers (all floating state).

    Before ``start_step`` nothing is averaged; the first update at or after it copies the model, every later
    one does ``ema ← decay · ema + (1 − decay) · model``. Built on :class:`~torch.optim.swa_utils.AveragedModel`
    with ``use_buffers=True`` (BatchNorm statistics are averaged too). Being a module, it is saved and
    restored with the training state.

    Shapes: ``self.module`` has the structure of the model it follows.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, start_step: int = 0):
        super().__init__()
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay, self.start_step = decay, start_step
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.averaged.requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        """The averaged copy (use it for evaluation, sampling and export)."""
        return self.averaged.module

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold ``model`` in after optimiser step ``step`` (0-based); a no-op before ``start_step``."""
        if step >= self.start_step:
            self.averaged.update_parameters(model)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"decay={self.decay:g}, start_step={self.start_step}"
