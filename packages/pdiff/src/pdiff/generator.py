"""Stages 2–5 of p-diff (spec §5–§8): normalise the K vectors, train the parameter autoencoder, train the
latent DDPM, and sample new parameter vectors.

The generator folder (``generator/``) always holds everything needed to sample (spec §11, OLD quirk 2):
``generator.safetensors`` with the autoencoder (``ae.*``), the denoiser (``denoiser.*``) and its EMA
(``ema.*``), and ``generator.json`` with the parameter spec (host architecture, dataset, names, shapes,
fingerprint), the normalisation statistics, the latent scale and statistics, and the configs that rebuild
the two networks. Training state for ``--resume`` lives in ``ae/state`` and ``ddpm/state`` of the run.

The DDPM schedule, ε-loss and the DDPM/DDIM samplers are :mod:`diffcore.ddpm` (shared with diffclassify);
only the OLD sampler's extra clamping is written here, on the schedule's tensors.
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffcore.config import from_dict, to_dict
from diffcore.errors import CheckpointError
from diffcore.runs import RunDir
from torch import nn

from pdiff.collect import make_optimizer, read_tensors, subrun
from pdiff.config import AEConfig, DDPMConfig, PDiffConfig
from pdiff.models import LatentDenoiser1D, OldLatentDenoiser, OldParamAutoencoder, ParamAutoencoder
from pdiff.params import Normaliser, ParamSpec

GENERATOR_DIR = "generator"
WEIGHTS = "generator.safetensors"
MANIFEST = "generator.json"
#: latents whose std or largest magnitude is this far from 1 get a warning (issues #13, #20)
LATENT_WARN = 10.0


def build_autoencoder(cfg: AEConfig, input_dim: int) -> nn.Module:
    if cfg.arch == "old-medium":
        return OldParamAutoencoder(input_dim, cfg.channels, kernel_size=cfg.kernel_size,
                                   input_noise=cfg.input_noise, latent_noise=cfg.latent_noise)
    return ParamAutoencoder(input_dim, cfg.channels, cfg.latent_dim, cfg.kernel_size, cfg.input_noise,
                            cfg.latent_noise, cfg.noise_mode)


def build_denoiser(cfg: DDPMConfig, length: int) -> nn.Module:
    if cfg.arch == "old-cnn":
        return OldLatentDenoiser(length, cfg.channels[1:-1], cfg.timesteps, cfg.time_embed_bug)
    return LatentDenoiser1D(length, cfg.channels, cfg.kernel_size)


def pad_multiple(cfg: AEConfig) -> int:
    """Generator inputs are padded to a multiple of 64 (the NEW code's tokens), and of 2^depth for the NEW AE."""
    return 64 if cfg.arch != "new" else max(64, 2 ** len(cfg.channels))


def make_ddpm(cfg: DDPMConfig):
    from diffcore.ddpm import DDPM

    return DDPM(num_train_timesteps=cfg.timesteps, beta_start=cfg.beta_start, beta_end=cfg.beta_end)


@dataclass
class Generator:
    """A trained p-diff generator: spec + normaliser + autoencoder + denoiser (+ EMA) + latent scale."""

    spec: ParamSpec
    normaliser: Normaliser
    ae: nn.Module
    denoiser: nn.Module
    ema: nn.Module
    latent_scale: float
    config: PDiffConfig
    info: dict[str, Any]

    @property
    def latent_dim(self) -> int:
        return self.ae.latent_dim

    def save(self, folder: Path) -> None:
        from diffcore.io import atomic_path, atomic_write_text
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"{prefix}.{k}": v.detach().cpu().contiguous()
                   for prefix, module in (("ae", self.ae), ("denoiser", self.denoiser), ("ema", self.ema))
                   for k, v in module.state_dict().items()}
        with atomic_path(folder / WEIGHTS) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt", "kind": "pdiff-generator"})
        manifest = {"spec": self.spec.to_json(), "normaliser": self.normaliser.to_json(),
                    "latent_scale": self.latent_scale, "config": to_dict(self.config), **self.info}
        atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> Generator:
        """Rebuild from ``generator/`` (a run folder of ``pdiff train`` or its ``generator/`` subfolder)."""
        folder = Path(folder)
        if (folder / GENERATOR_DIR / MANIFEST).exists():
            folder = folder / GENERATOR_DIR
        if not (folder / MANIFEST).exists():
            raise CheckpointError(f"{folder} holds no {GENERATOR_DIR}/{MANIFEST}: pass the run directory of "
                                  "`pdiff train`")
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            config = from_dict(PDiffConfig, manifest["config"])
            spec = ParamSpec.from_json(manifest["spec"])
            normaliser = Normaliser.from_json(spec, manifest["normaliser"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CheckpointError(f"{folder / MANIFEST} is damaged ({err}); re-run `pdiff train`") from None
        ae = build_autoencoder(config.ae, normaliser.padded_dim)
        denoiser = build_denoiser(config.ddpm, ae.latent_dim)
        ema = build_denoiser(config.ddpm, ae.latent_dim)
        tensors = read_tensors(folder / WEIGHTS)
        for prefix, module in (("ae", ae), ("denoiser", denoiser), ("ema", ema)):
            part = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
            expected = module.state_dict()
            bad = sorted(set(part) ^ set(expected)) or [k for k in part if part[k].shape != expected[k].shape]
            if bad:
                raise CheckpointError(f"{folder / WEIGHTS}: the {prefix} weights do not match its config "
                                      f"({bad[0]}); re-run `pdiff train`")
            module.load_state_dict(part, strict=True)
            module.eval()
        info = {k: v for k, v in manifest.items() if k not in ("spec", "normaliser", "latent_scale", "config")}
        return cls(spec, normaliser, ae, denoiser, ema, float(manifest["latent_scale"]), config, info)

    # ------------------------------------------------------------------------------------------ sampling

    @torch.no_grad()
    def sample_latents(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(num, latent_dim)`` latents in the AE's scale, all sampled in one batch."""
        cfg = self.config.generate
        model = self.ema if cfg.use_ema else self.denoiser
        model.eval()
        shape = (num, self.latent_dim)
        if cfg.sampler == "old":
            z = sample_old(make_ddpm(self.config.ddpm), model, shape, generator)
        else:
            z = make_ddpm(self.config.ddpm).sample(model, shape, sampler=cfg.sampler,
                                                    steps=cfg.steps if cfg.sampler == "ddim" else None,
                                                    eta=cfg.eta, generator=generator, clip_sample=False)
        if not torch.isfinite(z).all():
            raise CheckpointError("sampling produced NaN/inf latents; the denoiser diverged (retrain with a lower "
                                  "ddpm.optim.lr or --latent-scale auto)")
        return z * self.latent_scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``(M, latent_dim)`` → raw parameter vectors ``(M, D)``."""
        self.ae.eval()
        return self.normaliser.decode(self.ae.decode(latents))

    @torch.no_grad()
    def reconstruct(self, checkpoints: torch.Tensor) -> torch.Tensor:
        """Raw ``(M, D)`` → encode (clean) → decode → raw ``(M, D)``: what the AE alone can express."""
        self.ae.eval()
        return self.normaliser.decode(self.ae(self.normaliser.encode(checkpoints))[0])

    def generate(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` new raw parameter vectors ``(num, D)``: sample latents, decode, un-normalise."""
        if "ddpm" not in self.info.get("phases", []):
            raise CheckpointError("this generator's DDPM is not trained (it was made with --phase ae); run "
                                  "`pdiff train --phase ddpm --generator DIR` first")
        return self.decode(self.sample_latents(num, generator))


@torch.no_grad()
def sample_old(ddpm: Any, model: nn.Module, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    """The OLD code's ancestral sampler (spec §7): x̂₀ = √(1/ᾱ_t)·x_t − √(1/ᾱ_t − 1)·ε̂ clipped to [−1, 1]; posterior
    mean with coefficients β_t√ᾱ_{t−1}/(1−ᾱ_t) and (1−ᾱ_{t−1})√α_t/(1−ᾱ_t); "fixedlarge" variance β_t (its first
    entry replaced by the posterior variance at t = 1); and x clamped to [−1, 1] after every step."""
    abar = ddpm.alphas_cumprod.double()
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    betas = 1 - abar / abar_prev
    alphas = 1 - betas
    posterior_var = betas * (1 - abar_prev) / (1 - abar)
    variance = torch.cat([posterior_var[1:2], betas[1:]])
    coef_x0 = betas * abar_prev.sqrt() / (1 - abar)
    coef_xt = (1 - abar_prev) * alphas.sqrt() / (1 - abar)
    device = next(model.parameters()).device
    x = torch.randn(shape, generator=generator).to(device)
    for t in range(len(abar) - 1, -1, -1):
        eps = model(x, torch.full((shape[0],), t, device=device, dtype=torch.long)).double()
        x0 = ((1 / abar[t]).sqrt() * x - (1 / abar[t] - 1).sqrt() * eps).clamp(-1, 1)
        mean = coef_x0[t] * x0 + coef_xt[t] * x
        noise = torch.randn(shape, generator=generator).to(device) if t > 0 else torch.zeros(shape, device=device)
        x = (mean + variance[t].sqrt() * noise).clamp(-1, 1).float()
    return x


# ----------------------------------------------------------------------------------------------- training


def _phase_trainer(model: nn.Module, data: torch.Tensor, cfg_optim, steps: int, config: PDiffConfig, run: RunDir,
                   name: str, loss_fn, ema: Any = None):
    """A :class:`diffcore.train.Trainer` of ``steps`` optimiser steps over the rows of ``data``."""
    from diffcore.train import TrainConfig, Trainer

    from pdiff.collect import make_scheduler

    per_epoch = math.ceil(len(data) / cfg_optim.batch_size)
    epochs = math.ceil(steps / per_epoch)
    optimizer = make_optimizer(list(model.parameters()), cfg_optim)
    train_cfg = TrainConfig(epochs=epochs, batch_size=cfg_optim.batch_size, mixed_precision=config.mixed_precision,
                            seed=config.seed, scheduler_interval="step", save_every=max(1, epochs // 10),
                            monitor="train_loss", cpu=config.device == "cpu")
    kwargs = {} if ema is None else {"ema": ema}
    return Trainer(model, optimizer, train_cfg, torch.utils.data.TensorDataset(data), None,
                   run=subrun(run, name),
                   scheduler=make_scheduler(optimizer, cfg_optim, epochs * per_epoch),
                   loss_fn=loss_fn, **kwargs)


def latent_stats(z: torch.Tensor) -> dict[str, float]:
    return {"mean": z.mean().item(), "std": z.std().item(), "abs_max": z.abs().max().item()}


def train_generator(spec: ParamSpec, checkpoints: torch.Tensor, config: PDiffConfig, run: RunDir,
                    phase: str = "both", resume: bool = False, previous: Generator | None = None) -> Generator:
    """Train the AE (``phase`` ae/both) and the latent DDPM (ddpm/both) on ``checkpoints`` ``(K, D)``.

    ``phase="ae"`` leaves the denoiser untrained (``info["phases"] == ["ae"]``; ``generate`` refuses it);
    ``phase="ddpm"`` needs ``previous``, a generator whose AE and normaliser are reused. Latent statistics are logged to
    ``ddpm/metrics.jsonl`` and the manifest; a warning is printed when the latents are far from unit scale.
    """
    from diffcore.ddpm import EMA

    normaliser = previous.normaliser if phase == "ddpm" else Normaliser.fit(
        spec, checkpoints, config.ae.normalise, pad_multiple(config.ae))
    vectors = normaliser.encode(checkpoints.float())
    ae = previous.ae if phase == "ddpm" else build_autoencoder(config.ae, normaliser.padded_dim)
    info: dict[str, Any] = {}
    if phase in ("ae", "both"):
        trainer = _phase_trainer(ae, vectors, config.ae.optim, config.ae.steps, config, run, "ae",
                                 lambda model, batch: F.mse_loss(*model(batch[0])))
        info["ae"] = trainer.fit(resume=resume)
        ae = trainer.unwrapped_model()
    ae.eval()
    with torch.no_grad():
        latents = ae.encode(vectors)
    raw_stats = latent_stats(latents)
    scale = latents.std().item() if config.ddpm.latent_scale == "auto" else 1.0
    scaled = latents / scale
    stats = {"raw": raw_stats, "scaled": latent_stats(scaled), "scale": scale}
    info["latents"] = stats
    run.log_metrics({"phase": "latents", **{f"latent_{k}": v for k, v in raw_stats.items()}, "latent_scale": scale})
    s = stats["scaled"]
    if max(s["std"], 1 / max(s["std"], 1e-12), s["abs_max"]) > LATENT_WARN:
        warnings.warn(f"latents are far from unit scale (std {s['std']:.3g}, max |z| {s['abs_max']:.3g}); the DDPM "
                      "assumes unit-scale data: use --latent-scale auto", stacklevel=2)
    denoiser = build_denoiser(config.ddpm, ae.latent_dim)
    ema_model = copy.deepcopy(denoiser)
    if phase in ("ddpm", "both"):
        ddpm = make_ddpm(config.ddpm)
        ema = EMA(denoiser, decay=config.ddpm.ema_decay)
        trainer = _phase_trainer(denoiser, scaled, config.ddpm.optim, config.ddpm.steps, config, run, "ddpm",
                                 lambda model, batch: ddpm.loss(model, batch[0]), ema=ema)
        info["ddpm"] = trainer.fit(resume=resume)
        denoiser, ema_model = trainer.unwrapped_model(), ema.module
    info["phases"] = ["ae", "ddpm"] if phase != "ae" else ["ae"]
    return Generator(spec, normaliser, ae.cpu(), denoiser.cpu(), ema_model.cpu(), scale, config, info)
