"""Forward processes q(x_t | x_0), training losses and samplers of the two denoisers (spec §3.2, §4).

* :class:`DiscreteProcess` — the DDPM of the MNIST U-Net on the core's schedule (:class:`diffcore.ddpm.DDPM`,
  linear β from 1e-4 to 0.02 scaled by 1000/T). The forward process is the textbook
  x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε; ``variance="original"`` reproduces the original's
  x_t = √ᾱ_t·x_0 + √(1 − √ᾱ_t)·ε (less noise than the stated t) in training *and* feature extraction, while
  sampling uses the standard formulas, as the original does. ε-prediction, MSE.
* :class:`VDiffusionProcess` — the continuous-time v-diffusion of the CIFAR model: log-SNR
  λ(t) = −log(expm1(1e-4 + 10 t²)), α = √sigmoid(λ), σ = √sigmoid(−λ), x_t = α x_0 + σ ε, target
  v = α ε − σ x_0, loss = per-sample mean of (v̂ − v)² weighted by sigmoid(λ). An integer ``timestep`` T of
  the shared command line means t = T / 1000 here (the README's "t = 50" for CIFAR ≈ 0.05).

Both expose ``noise(x0, timestep, noise) -> (x_t, model_time)`` for feature extraction, where ``model_time``
is what the denoiser takes as its second argument (integer steps, or λ).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F

Variance = Literal["standard", "original"]


def linear_schedule_kwargs(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> dict[str, Any]:
    """The spec's β_t = linspace(s·β_start, s·β_end, T) with s = 1000/T, as :class:`diffcore.ddpm.DDPM` kwargs."""
    scale = 1000.0 / num_steps
    return {"num_train_timesteps": num_steps, "beta_start": beta_start * scale, "beta_end": beta_end * scale}


def noise_std(alphas_cumprod: torch.Tensor, variance: Variance = "standard") -> torch.Tensor:
    """Per-step noise std of the forward process: √(1 − ᾱ_t) (standard) or √(1 − √ᾱ_t) (the original's)."""
    abar = alphas_cumprod.double()
    return (1.0 - (abar if variance == "standard" else abar.sqrt())).sqrt().float()


class DiscreteProcess:
    """q(x_t | x_0) of a discrete DDPM schedule, with the original's variance as an option.

    ``schedule``: a :class:`diffcore.ddpm.DDPM` (its ``alphas_cumprod``, ``sample_timesteps``, ``loss`` and
    ``sample`` are used as they are).
    """

    kind = "discrete"

    def __init__(self, schedule: Any, variance: Variance = "standard"):
        self.schedule = schedule
        self.variance = variance
        abar = torch.as_tensor(schedule.alphas_cumprod).double()
        self.signal = abar.sqrt().float()
        self.std = noise_std(abar, variance)

    @property
    def num_steps(self) -> int:
        return len(self.signal)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + std_t ε. Shapes: ``x0``, ``noise`` ``[N, ...]``, ``t`` ``[N]`` → ``[N, ...]``."""
        shape = (-1,) + (1,) * (x0.dim() - 1)
        signal = self.signal.to(x0.device)[t].view(shape).to(x0.dtype)
        std = self.std.to(x0.device)[t].view(shape).to(x0.dtype)
        return signal * x0 + std * noise

    def noise(self, x0: torch.Tensor, timestep: int, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.full((len(x0),), timestep, dtype=torch.long, device=x0.device)
        return self.add_noise(x0, noise, t), t

    def loss(self, model: Callable[..., torch.Tensor], x0: torch.Tensor,
             labels: torch.Tensor | None = None) -> torch.Tensor:
        """ε-prediction MSE; the core's loss for the standard variance, the same loss with std_t otherwise."""
        denoiser = model if labels is None else (lambda x, t: model(x, t, labels))
        if self.variance == "standard":
            return self.schedule.loss(denoiser, x0)
        t = self.schedule.sample_timesteps(len(x0)).to(x0.device)
        noise = torch.randn_like(x0)
        return F.mse_loss(denoiser(self.add_noise(x0, noise, t), t), noise)

    def sample(self, model: Callable[..., torch.Tensor], shape: tuple[int, ...], *, sampler: str = "ddpm",
               steps: int | None = None, eta: float = 0.0, generator: torch.Generator | None = None,
               clip_sample: bool = False, labels: torch.Tensor | None = None) -> torch.Tensor:
        denoiser = model if labels is None else (lambda x, t: model(x, t, labels))
        return self.schedule.sample(denoiser, shape, sampler=sampler, steps=steps, eta=eta, generator=generator,
                                    clip_sample=clip_sample)


class VDiffusionProcess:
    """Continuous-time v-diffusion (Salimans & Ho 2022 parameterisation; Crowson's CIFAR-10 schedule)."""

    kind = "vdiff"
    num_steps = 1000  # the integer timestep grid of the command line: t = T / 1000

    @staticmethod
    def log_snr(t: torch.Tensor) -> torch.Tensor:
        """λ(t) = −log(expm1(1e-4 + 10 t²)), t ∈ [0, 1]."""
        return -torch.special.expm1(1e-4 + 10.0 * t.double().square()).log().to(t.dtype)

    @staticmethod
    def alpha_sigma(log_snr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.sigmoid(log_snr).sqrt(), torch.sigmoid(-log_snr).sqrt()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t = α(t) x_0 + σ(t) ε and λ(t). Shapes: ``x0``, ``noise`` ``[N, ...]``, ``t`` ``[N]`` in [0, 1]."""
        lam = self.log_snr(t)
        alpha, sigma = self.alpha_sigma(lam)
        shape = (-1,) + (1,) * (x0.dim() - 1)
        return alpha.view(shape) * x0 + sigma.view(shape) * noise, lam

    def noise(self, x0: torch.Tensor, timestep: int, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.full((len(x0),), timestep / self.num_steps, dtype=x0.dtype, device=x0.device)
        return self.add_noise(x0, noise, t)

    def loss(self, model: Callable[..., torch.Tensor], x0: torch.Tensor,
             labels: torch.Tensor | None = None) -> torch.Tensor:
        """sigmoid(λ)-weighted MSE between v̂ and v = α ε − σ x_0 (``labels`` must be None: unconditional)."""
        if labels is not None:
            raise ValueError("the v-diffusion model is unconditional")
        n = len(x0)
        # Stratified t: one draw in each of n equal bins, shuffled — the low-discrepancy role of the original's
        # scrambled Sobol sequence, but restored exactly on resume through the global RNG state.
        t = ((torch.arange(n, device=x0.device) + torch.rand(n, device=x0.device)) / n)[torch.randperm(n)]
        noise = torch.randn_like(x0)
        x_t, lam = self.add_noise(x0, noise, t)
        alpha, sigma = self.alpha_sigma(lam)
        shape = (-1,) + (1,) * (x0.dim() - 1)
        target = alpha.view(shape) * noise - sigma.view(shape) * x0
        per_sample = (model(x_t, lam) - target).square().flatten(1).mean(1)
        return (per_sample * torch.sigmoid(lam)).mean()

    @torch.no_grad()
    def sample(self, model: Callable[..., torch.Tensor], shape: tuple[int, ...], *, steps: int | None = 500,
               eta: float = 1.0, generator: torch.Generator | None = None, clip_sample: bool = False,
               device: torch.device | str = "cpu", **_: Any) -> torch.Tensor:
        """DDIM-style sampling from t = 1 to 0 in ``steps`` steps; ``eta = 1`` is ancestral, 0 deterministic.

        From v̂: x̂_0 = α x_t − σ v̂ and ε̂ = σ x_t + α v̂; the next point is α' x̂_0 + √(σ'² − c²) ε̂ + c z with
        c = η (σ'/σ) √(1 − α²/α'²).
        """
        steps = steps or 500
        x = torch.randn(shape, generator=generator, device=device)
        ts = torch.linspace(1.0, 0.0, steps + 1, device=device)[:-1]
        lams = self.log_snr(ts)
        alphas, sigmas = self.alpha_sigma(lams)
        for i in range(steps):
            v = model(x, lams[i].expand(shape[0]))
            x0 = alphas[i] * x - sigmas[i] * v
            if clip_sample:
                x0 = x0.clamp(-1, 1)
            if i == steps - 1:
                return x0
            eps = sigmas[i] * x + alphas[i] * v
            a_next, s_next = alphas[i + 1], sigmas[i + 1]
            c = eta * (s_next / sigmas[i]) * (1 - alphas[i] ** 2 / a_next ** 2).clamp(min=0).sqrt()
            x = a_next * x0 + (s_next ** 2 - c ** 2).clamp(min=0).sqrt() * eps
            if eta > 0:
                x = x + c * torch.randn(shape, generator=generator, device=device)
        return x


def make_process(process: dict[str, Any]) -> DiscreteProcess | VDiffusionProcess:
    """Rebuild a forward process from the ``process`` entry a DDPM checkpoint's config.json carries."""
    if process["type"] == "vdiff":
        return VDiffusionProcess()
    from diffcore.ddpm import DDPM

    if process.get("exact_betas"):  # a diffusers checkpoint's own scheduler settings, taken as they are
        schedule = DDPM(num_train_timesteps=process["num_steps"], beta_start=process["beta_start"],
                        beta_end=process["beta_end"], beta_schedule=process.get("beta_schedule", "linear"))
    else:
        schedule = DDPM(**linear_schedule_kwargs(process["num_steps"], process["beta_start"], process["beta_end"]))
    return DiscreteProcess(schedule, process.get("forward_variance", "standard"))


def snr_matched_step(alphas_cumprod: torch.Tensor, timestep: int) -> int:
    """The standard-variance step whose SNR equals the original variance's SNR at ``timestep`` (spec §3.2 table)."""
    abar = alphas_cumprod.double()
    snr_original = abar[timestep] / (1 - abar[timestep].sqrt())
    snr_standard = abar / (1 - abar)
    return int(torch.argmin((snr_standard.log() - math.log(snr_original)).abs()))
