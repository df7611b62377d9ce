"""The generative models whose activations become few-shot features (spec §3–§5).

DiffClassification (David-cripto/DiffClassification, 2024) trains a generative model on unlabelled images,
then reads pooled intermediate activations as features for a tiny classifier. Four models, each with named
feature *taps* (``feature_dims()``) and a ``features(...)`` method returning the raw activation of every
requested tap (pooling and concatenation happen in :mod:`diffclassify.features`):

* :class:`MyUNet` — the MNIST denoiser ε̂(x_t, t) (spec §3.1, ≈0.5 M parameters at the default widths).
* :class:`VDiffUNet` — the CIFAR-10 v-prediction U-Net v̂(x_t, λ) (spec §4, ≈23 M at base width 64).
* :class:`MnistConvVAE` and :class:`CifarConvVAE` — the VAE baselines (spec §5).

No model has a label argument unless it was built with ``num_classes`` (the original's label-conditioned
U-Net, kept only to reproduce its leaky numbers; spec §9).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from diffcore.checkpoint import register_model
from torch import nn

TimeTable = Literal["sinusoid", "original"]


# ------------------------------------------------------------------------------------------ time tables


def sinusoid_table(num_steps: int, dim: int) -> torch.Tensor:
    """Textbook sinusoidal embedding (Vaswani et al.): row t = [sin(t ω_k), cos(t ω_k)], ω_k = 10000^(−k/(dim/2)).

    Shapes: → ``[num_steps, dim]``.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    angles = torch.arange(num_steps, dtype=torch.float64)[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def original_time_table(num_steps: int, dim: int) -> torch.Tensor:
    """The original's table (spec §3.1), a side effect of negative row indices in its assignment.

    With θ(t, j) = t / 10000^(2j/dim) for every j: even rows are sin θ(t, ·), row 1 is all ones and each odd
    row t ≥ 3 is cos(sin θ(num_steps + 1 − t, ·)). Shapes: → ``[num_steps, dim]``.
    """
    t = torch.arange(num_steps, dtype=torch.float64)[:, None]
    theta = t / 10000.0 ** (2.0 * torch.arange(dim, dtype=torch.float64) / dim)
    table = theta.sin()
    odd = torch.arange(3, num_steps, 2)
    table[odd] = theta[num_steps + 1 - odd].sin().cos()
    if num_steps > 1:
        table[1] = 1.0
    return table.float()


TIME_TABLES = {"sinusoid": sinusoid_table, "original": original_time_table}


def _check_taps(requested: Sequence[str], dims: dict[str, int], model: str) -> None:
    unknown = [name for name in requested if name not in dims]
    if unknown:
        raise ValueError(f"unknown block {', '.join(map(repr, unknown))} for {model}; valid blocks: {', '.join(dims)}")


# ------------------------------------------------------------------------------------------ MNIST U-Net


class UNetBlock(nn.Module):
    """B(c_in→c_out): LayerNorm over the whole (c_in, H, W) map → Conv3×3 → SiLU → Conv3×3 → SiLU (spec §3.1)."""

    def __init__(self, shape: tuple[int, int, int], in_channels: int, out_channels: int, normalize: bool = True):
        super().__init__()
        self.ln = nn.LayerNorm(shape) if normalize else None
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ln is not None:
            x = self.ln(x)
        return F.silu(self.conv2(F.silu(self.conv1(x))))


def _time_projection(dim: int, channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, channels), nn.SiLU(), nn.Linear(channels, channels))


@register_model("diffclassify.myunet")
class MyUNet(nn.Module):
    """The MNIST DDPM denoiser of DiffClassification (``MyUnet``, spec §3.1): ε̂ = f(x_t, t).

    Three resolution levels of widths ``(w0, w1, w2)`` (10/20/40 in the original), three blocks B per stage,
    a time projection te(c) = Linear(128→c) → SiLU → Linear(c→c) added to each stage's input, concatenating
    skips, a frozen time table ``Embedding(num_steps, time_dim)``. The bottleneck goes from s/4 to s/8: for
    28×28 (s/4 = 7, odd) with Conv2×2 → SiLU → Conv4×4/2 and back with ConvT4×4/2 → SiLU → ConvT2×2, as the
    original; for sizes with an even s/4 (8×8 digits, 32×32 CIFAR) the 2×2 convolutions become 3×3 "same" ones.

    Feature taps (``features``), with channels at the default widths:
    ``b1`` (10), ``b2`` (20), ``b3`` (40) on the encoder side, ``b_mid`` (40), ``b4`` (20), ``b5`` (10),
    ``b_out`` (10) on the decoder side; the original concatenates b_mid, b4, b5, b_out → 80-d.

    ``num_classes`` (off by default) adds the original's early label path, Embedding(num_classes + 1 null,
    time_dim) added to the time embedding; such a model is label-conditioned and its features leak labels.

    Shapes: ``x`` ``[N, C, s, s]`` in [−1, 1], ``t`` ``[N]`` integer steps, ``y`` ``[N]`` → ε̂ ``[N, C, s, s]``.
    """

    def __init__(self, image_size: int = 28, in_channels: int = 1, widths: Sequence[int] = (10, 20, 40),
                 time_dim: int = 128, num_steps: int = 1000, time_table: TimeTable = "sinusoid",
                 num_classes: int | None = None):
        super().__init__()
        if image_size % 4 or image_size < 8:
            raise ValueError(f"MyUNet needs an image size divisible by 4 and at least 8, got {image_size}")
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"MyUNet needs three positive widths, got {tuple(widths)}")
        if time_table not in TIME_TABLES:
            raise ValueError(f"time_table must be one of {', '.join(TIME_TABLES)}, got {time_table!r}")
        self.config = {"image_size": image_size, "in_channels": in_channels, "widths": list(widths),
                       "time_dim": time_dim, "num_steps": num_steps, "time_table": time_table,
                       "num_classes": num_classes}
        w0, w1, w2 = widths
        s1, s2, s3 = image_size, image_size // 2, image_size // 4
        self.time_embed = nn.Embedding(num_steps, time_dim)
        self.time_embed.requires_grad_(False)
        self.y_embed = nn.Embedding(num_classes + 1, time_dim) if num_classes else None

        self.te1 = _time_projection(time_dim, in_channels)
        self.b1 = nn.Sequential(UNetBlock((in_channels, s1, s1), in_channels, w0), UNetBlock((w0, s1, s1), w0, w0),
                                UNetBlock((w0, s1, s1), w0, w0))
        self.down1 = nn.Conv2d(w0, w0, 4, 2, 1)
        self.te2 = _time_projection(time_dim, w0)
        self.b2 = nn.Sequential(UNetBlock((w0, s2, s2), w0, w1), UNetBlock((w1, s2, s2), w1, w1),
                                UNetBlock((w1, s2, s2), w1, w1))
        self.down2 = nn.Conv2d(w1, w1, 4, 2, 1)
        self.te3 = _time_projection(time_dim, w1)
        self.b3 = nn.Sequential(UNetBlock((w1, s3, s3), w1, w2), UNetBlock((w2, s3, s3), w2, w2),
                                UNetBlock((w2, s3, s3), w2, w2))
        # s/4 odd (MNIST: 7): a 2×2 valid conv makes it even before halving; even: a 3×3 "same" conv.
        k, p = (2, 0) if s3 % 2 else (3, 1)
        s_mid = s3 // 2
        self.down3 = nn.Sequential(nn.Conv2d(w2, w2, k, 1, p), nn.SiLU(), nn.Conv2d(w2, w2, 4, 2, 1))
        self.te_mid = _time_projection(time_dim, w2)
        self.b_mid = nn.Sequential(UNetBlock((w2, s_mid, s_mid), w2, w1), UNetBlock((w1, s_mid, s_mid), w1, w1),
                                   UNetBlock((w1, s_mid, s_mid), w1, w2))
        self.up1 = nn.Sequential(nn.ConvTranspose2d(w2, w2, 4, 2, 1), nn.SiLU(), nn.ConvTranspose2d(w2, w2, k, 1, p))
        self.te4 = _time_projection(time_dim, 2 * w2)
        self.b4 = nn.Sequential(UNetBlock((2 * w2, s3, s3), 2 * w2, w2), UNetBlock((w2, s3, s3), w2, w1),
                                UNetBlock((w1, s3, s3), w1, w1))
        self.up2 = nn.ConvTranspose2d(w1, w1, 4, 2, 1)
        self.te5 = _time_projection(time_dim, 2 * w1)
        self.b5 = nn.Sequential(UNetBlock((2 * w1, s2, s2), 2 * w1, w1), UNetBlock((w1, s2, s2), w1, w0),
                                UNetBlock((w0, s2, s2), w0, w0))
        self.up3 = nn.ConvTranspose2d(w0, w0, 4, 2, 1)
        self.te_out = _time_projection(time_dim, 2 * w0)
        self.b_out = nn.Sequential(UNetBlock((2 * w0, s1, s1), 2 * w0, w0), UNetBlock((w0, s1, s1), w0, w0),
                                   UNetBlock((w0, s1, s1), w0, w0, normalize=False))
        self.conv_out = nn.Conv2d(w0, in_channels, 3, 1, 1)
        self.reset_parameters()

    DEFAULT_TAPS = ("b_mid", "b4", "b5", "b_out")

    @property
    def label_conditioned(self) -> bool:
        return self.y_embed is not None

    def feature_dims(self) -> dict[str, int]:
        w0, w1, w2 = self.config["widths"]
        return {"b1": w0, "b2": w1, "b3": w2, "b_mid": w2, "b4": w1, "b5": w0, "b_out": w0}

    def reset_parameters(self) -> None:
        """PyTorch's default init for every layer; the frozen time table from ``time_table``."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        table = TIME_TABLES[self.config["time_table"]](self.config["num_steps"], self.config["time_dim"])
        with torch.no_grad():
            self.time_embed.weight.copy_(table)

    def _embed(self, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        emb = self.time_embed(t)
        if self.y_embed is not None:
            if y is None:
                raise ValueError("this MyUNet is label-conditioned: pass y (class indices, or num_classes for null)")
            emb = emb + self.y_embed(y)
        elif y is not None:
            raise ValueError("this MyUNet is unconditional: it takes no labels")
        return emb

    def _run(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None,
             taps: Sequence[str] = ()) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        emb = self._embed(t, y)

        def te(proj: nn.Module) -> torch.Tensor:
            return proj(emb)[:, :, None, None]

        out1 = self.b1(x + te(self.te1))
        out2 = self.b2(self.down1(out1) + te(self.te2))
        out3 = self.b3(self.down2(out2) + te(self.te3))
        mid = self.b_mid(self.down3(out3) + te(self.te_mid))
        out4 = self.b4(torch.cat([out3, self.up1(mid)], 1) + te(self.te4))
        out5 = self.b5(torch.cat([out2, self.up2(out4)], 1) + te(self.te5))
        out = self.b_out(torch.cat([out1, self.up3(out5)], 1) + te(self.te_out))
        acts = {"b1": out1, "b2": out2, "b3": out3, "b_mid": mid, "b4": out4, "b5": out5, "b_out": out}
        eps = None if taps else self.conv_out(out)
        return eps, {name: acts[name] for name in taps}

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self._run(x, t, y)[0]

    def features(self, x: torch.Tensor, t: torch.Tensor, taps: Sequence[str] = DEFAULT_TAPS,
                 y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Raw activations ``{tap: [N, C_tap, H, W]}`` at noisy input ``x`` and steps ``t`` (conv_out skipped)."""
        _check_taps(taps, self.feature_dims(), "MyUNet")
        return self._run(x, t, y, tuple(taps))[1]

    def extra_repr(self) -> str:
        c = self.config
        return (f"image_size={c['image_size']}, in_channels={c['in_channels']}, widths={tuple(c['widths'])}, "
                f"time_table={c['time_table']!r}, num_classes={c['num_classes']}")


# ------------------------------------------------------------------------------------------ CIFAR U-Net


class ResConvBlock(nn.Module):
    """R(i, m, o) = Conv3×3 → Dropout2d → ReLU → Conv3×3 → Dropout2d → ReLU, plus a 1×1 skip when i ≠ o.

    ``last=True`` drops the final dropout and ReLU (the network's output v̂ must be signed).
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, dropout: float = 0.1,
                 last: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(mid_channels, out_channels, 3, padding=1)
        self.drop = nn.Dropout2d(dropout)
        self.last = last
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.drop(self.conv1(x)))
        h = self.conv2(h)
        if not self.last:
            h = F.relu(self.drop(h))
        return h + (x if self.skip is None else self.skip(x))


@register_model("diffclassify.vdiff_unet")
class VDiffUNet(nn.Module):
    """The CIFAR-10 denoiser (spec §4; Crowson's "v-diffusion CIFAR-10 v2" layout): v̂ = f(x_t, λ).

    Input channels: the image, ``class_channels`` planes of zeros (the original's class embedding, unused:
    unconditional) and 16 Fourier features of the log-SNR λ (fixed Gaussian frequencies, std 0.2), broadcast
    over the image. Nested U-Net with concatenating skips, base width c (64): 32×32 R(·,c,c) ×2 → pool →
    16×16 R(c,2c,2c) ×2 → pool → 8×8 R(2c,4c,4c) ×2 → pool → 4×4 R(4c,8c,8c), 2×R(8c,8c,8c), R(8c,8c,4c) →
    up → R(8c,4c,4c), R(4c,4c,2c) → up → R(4c,2c,2c), R(2c,2c,c) → up → R(2c,c,c), R(c,c,C) (no final dropout).

    Feature taps: ``enc32`` (c), ``enc16`` (2c), ``enc8`` (4c), then the spec's four — ``mid`` (4c, 4×4, just
    before the first upsample), ``dec8`` (2c), ``dec16`` (c), ``dec32`` (c, the first 32×32 block after the
    skip) → 512-d at c = 64.

    Shapes: ``x`` ``[N, C, 32, 32]`` in [−1, 1], ``log_snr`` ``[N]`` → v̂ ``[N, C, 32, 32]``.
    """

    DEFAULT_TAPS = ("mid", "dec8", "dec16", "dec32")

    def __init__(self, base_width: int = 64, in_channels: int = 3, image_size: int = 32, class_channels: int = 4,
                 fourier_features: int = 16, fourier_std: float = 0.2, dropout: float = 0.1):
        super().__init__()
        if image_size % 8:
            raise ValueError(f"VDiffUNet halves the image three times: the size must be divisible by 8, "
                             f"got {image_size}")
        if fourier_features % 2:
            raise ValueError(f"fourier_features must be even, got {fourier_features}")
        self.config = {"base_width": base_width, "in_channels": in_channels, "image_size": image_size,
                       "class_channels": class_channels, "fourier_features": fourier_features,
                       "fourier_std": fourier_std, "dropout": dropout}
        c = base_width
        self.register_buffer("fourier_weight", torch.empty(fourier_features // 2, 1))

        def block(i: int, m: int, o: int, last: bool = False) -> ResConvBlock:
            return ResConvBlock(i, m, o, dropout, last)

        first = in_channels + class_channels + fourier_features
        self.enc32 = nn.Sequential(block(first, c, c), block(c, c, c))
        self.enc16 = nn.Sequential(block(c, 2 * c, 2 * c), block(2 * c, 2 * c, 2 * c))
        self.enc8 = nn.Sequential(block(2 * c, 4 * c, 4 * c), block(4 * c, 4 * c, 4 * c))
        self.mid = nn.Sequential(block(4 * c, 8 * c, 8 * c), block(8 * c, 8 * c, 8 * c), block(8 * c, 8 * c, 8 * c),
                                 block(8 * c, 8 * c, 4 * c))
        self.dec8 = nn.Sequential(block(8 * c, 4 * c, 4 * c), block(4 * c, 4 * c, 2 * c))
        self.dec16 = nn.Sequential(block(4 * c, 2 * c, 2 * c), block(2 * c, 2 * c, c))
        self.dec32_first = block(2 * c, c, c)
        self.dec32_last = block(c, c, in_channels, last=True)
        self.reset_parameters()

    def feature_dims(self) -> dict[str, int]:
        c = self.config["base_width"]
        return {"enc32": c, "enc16": 2 * c, "enc8": 4 * c, "mid": 4 * c, "dec8": 2 * c, "dec16": c, "dec32": c}

    label_conditioned = False

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        with torch.no_grad():
            self.fourier_weight.normal_(0.0, self.config["fourier_std"])

    def _inputs(self, x: torch.Tensor, log_snr: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        angles = 2 * math.pi * log_snr.to(x.dtype)[:, None] @ self.fourier_weight.T.to(x.dtype)
        fourier = torch.cat([angles.cos(), angles.sin()], dim=1)[:, :, None, None].expand(n, -1, h, w)
        classes = x.new_zeros(n, self.config["class_channels"], h, w)
        return torch.cat([x, classes, fourier], dim=1)

    def _run(self, x: torch.Tensor, log_snr: torch.Tensor, taps: Sequence[str] = ()):
        up = F.interpolate
        e32 = self.enc32(self._inputs(x, log_snr))
        e16 = self.enc16(F.avg_pool2d(e32, 2))
        e8 = self.enc8(F.avg_pool2d(e16, 2))
        m = self.mid(F.avg_pool2d(e8, 2))
        d8 = self.dec8(torch.cat([up(m, scale_factor=2, mode="bilinear"), e8], 1))
        d16 = self.dec16(torch.cat([up(d8, scale_factor=2, mode="bilinear"), e16], 1))
        d32 = self.dec32_first(torch.cat([up(d16, scale_factor=2, mode="bilinear"), e32], 1))
        acts = {"enc32": e32, "enc16": e16, "enc8": e8, "mid": m, "dec8": d8, "dec16": d16, "dec32": d32}
        out = None if taps else self.dec32_last(d32)
        return out, {name: acts[name] for name in taps}

    def forward(self, x: torch.Tensor, log_snr: torch.Tensor) -> torch.Tensor:
        return self._run(x, log_snr)[0]

    def features(self, x: torch.Tensor, log_snr: torch.Tensor,
                 taps: Sequence[str] = DEFAULT_TAPS) -> dict[str, torch.Tensor]:
        """Raw activations ``{tap: [N, C_tap, H, W]}`` at noisy input ``x`` and log-SNR ``log_snr``."""
        _check_taps(taps, self.feature_dims(), "VDiffUNet")
        return self._run(x, log_snr, tuple(taps))[1]

    def extra_repr(self) -> str:
        c = self.config
        return f"base_width={c['base_width']}, in_channels={c['in_channels']}, dropout={c['dropout']}"


# ------------------------------------------------------------------------------------------ VAEs


def gaussian_kl(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) summed over the latent: ½ Σ (μ² + σ² − 1 − log σ²). Shapes: ``[N, L]`` → ``[N]``."""
    return 0.5 * (mu.square() + log_var.exp() - 1.0 - log_var).sum(dim=1)


class _VAE(nn.Module):
    """Shared VAE plumbing: ``encode → (μ, log σ²)``, ``decode(z)``, taps, and the negative ELBO."""

    ENCODER_TAPS: tuple[str, ...] = ()
    DECODER_TAPS: tuple[str, ...] = ()
    label_conditioned = False

    def reparameterize(self, mu: torch.Tensor, log_var: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + (0.5 * log_var).exp() * noise

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def features(self, x: torch.Tensor, taps: Sequence[str], sample_z: bool = False,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Raw activations ``{tap: [N, C] or [N, C, H, W]}``; the decoder runs on z = μ unless ``sample_z``."""
        _check_taps(taps, self.feature_dims(), type(self).__name__)
        acts: dict[str, torch.Tensor] = {}
        mu, log_var = self._encode(x, acts)
        if any(name in self.DECODER_TAPS for name in taps):
            z = self.reparameterize(mu, log_var, generator) if sample_z else mu
            self._decode(z, acts)
        return {name: acts[name] for name in taps}

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._encode(x, {})

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self._decode(z, {})

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(reconstruction output, μ, log σ²)`` with z drawn by the reparameterisation trick."""
        mu, log_var = self.encode(x)
        return self.decode(self.reparameterize(mu, log_var)), mu, log_var

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Negative ELBO, reconstruction term + β·KL, each summed per image and averaged over the batch.

        (The original sums over the batch too; Adam is invariant to that constant factor.)
        """
        recon, kl = self.elbo_terms(x)
        recon, kl = recon.mean(), kl.mean()
        return {"loss": recon + self.config.get("beta", 1.0) * kl, "recon": recon, "kl": kl}


@register_model("diffclassify.mnist_vae")
class MnistConvVAE(_VAE):
    """MNIST ConvVAE baseline (spec §5), input in [0, 1]; Bernoulli decoder (logits), Gaussian posterior.

    Encoder: Conv3×3(C→32) → ReLU → Conv3×3/2(32→64) → ReLU → Conv3×3/2(64→128) → ReLU → flatten →
    Linear(→h) → ReLU → Linear(h→2L) (μ ‖ log σ²). Decoder: Linear(L→h) → ReLU → Linear(h→128·s/4·s/4)
    → ReLU → ConvT3×3/2(128→64) → ReLU → ConvT3×3/2(64→32) → ReLU → ConvT3×3(32→C) (→ sigmoid). The hidden
    width h is 1024 in the original (``hidden``; narrower ones serve tests).

    Taps — encoder: ``conv1`` (32), ``conv2`` (64), ``conv3`` (128) pre-ReLU, ``stats`` (2L); decoder: ``z``
    (L, the first Linear's input), ``deconv1`` (128), ``deconv2`` (64), ``deconv3`` (32), the transposed
    convolutions' inputs. L = 6: encoder 236-d, decoder 230-d.

    Shapes: ``x`` ``[N, C, s, s]`` → logits ``[N, C, s, s]``, μ and log σ² ``[N, L]``.
    """

    ENCODER_TAPS = ("conv1", "conv2", "conv3", "stats")
    DECODER_TAPS = ("z", "deconv1", "deconv2", "deconv3")

    def __init__(self, image_size: int = 28, in_channels: int = 1, latent_dim: int = 6, hidden: int = 1024):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"MnistConvVAE halves the image twice: the size must be divisible by 4, got {image_size}")
        self.config = {"image_size": image_size, "in_channels": in_channels, "latent_dim": latent_dim,
                       "hidden": hidden}
        self.base = image_size // 4
        flat = 128 * self.base * self.base
        self.conv1 = nn.Conv2d(in_channels, 32, 3, 1, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 2, 1)
        self.conv3 = nn.Conv2d(64, 128, 3, 2, 1)
        self.enc_fc1 = nn.Linear(flat, hidden)
        self.enc_fc2 = nn.Linear(hidden, 2 * latent_dim)
        self.dec_fc1 = nn.Linear(latent_dim, hidden)
        self.dec_fc2 = nn.Linear(hidden, flat)
        self.deconv1 = nn.ConvTranspose2d(128, 64, 3, 2, 1, output_padding=1)
        self.deconv2 = nn.ConvTranspose2d(64, 32, 3, 2, 1, output_padding=1)
        self.deconv3 = nn.ConvTranspose2d(32, in_channels, 3, 1, 1)
        self.reset_parameters()

    def feature_dims(self) -> dict[str, int]:
        latent = self.config["latent_dim"]
        return {"conv1": 32, "conv2": 64, "conv3": 128, "stats": 2 * latent,
                "z": latent, "deconv1": 128, "deconv2": 64, "deconv3": 32}

    def _encode(self, x: torch.Tensor, acts: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        acts["conv1"] = h = self.conv1(x)
        acts["conv2"] = h = self.conv2(F.relu(h))
        acts["conv3"] = h = self.conv3(F.relu(h))
        acts["stats"] = stats = self.enc_fc2(F.relu(self.enc_fc1(F.relu(h).flatten(1))))
        mu, log_var = stats.chunk(2, dim=1)
        return mu, log_var

    def _decode(self, z: torch.Tensor, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        acts["z"] = z
        h = F.relu(self.dec_fc2(F.relu(self.dec_fc1(z)))).view(len(z), 128, self.base, self.base)
        acts["deconv1"] = h
        acts["deconv2"] = h = F.relu(self.deconv1(h))
        acts["deconv3"] = h = F.relu(self.deconv2(h))
        return self.deconv3(h)

    def elbo_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image: BCE summed over pixels, KL summed over the latent (z by the reparameterisation trick)."""
        logits, mu, log_var = self(x)
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        return bce, gaussian_kl(mu, log_var)

    def reconstruct(self, logits: torch.Tensor) -> torch.Tensor:
        """Decoder output → image in [0, 1]."""
        return torch.sigmoid(logits)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())


class VAEResBlock(nn.Module):
    """ResBlock(i, o) = Conv3×3(i→2i) → BN → ReLU → Conv3×3(2i→o) → BN, plus Conv3×3(i→o) when i ≠ o (spec §5)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 2 * in_channels, 3, padding=1), nn.BatchNorm2d(2 * in_channels), nn.ReLU(),
            nn.Conv2d(2 * in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels),
        )
        self.skip = nn.Conv2d(in_channels, out_channels, 3, padding=1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + (x if self.skip is None else self.skip(x))


@register_model("diffclassify.cifar_vae")
class CifarConvVAE(_VAE):
    """CIFAR ConvVAE baseline (spec §5), input in [−1, 1], unit-variance Gaussian decoder, β-weighted KL.

    Encoder (width w = 32): RB(C,w), RB(w,w), RB(w,w), MaxPool → RB(w,2w), RB(2w,2w), MaxPool → RB(2w,4w),
    RB(4w,4w), MaxPool → RB(4w,8w), RB(8w,8w), global average pool → Linear(8w→2L) (μ ‖ log σ). Decoder: z as
    L×1×1 → five stages of ConvT2×2/2 + three ResBlocks (inputs L, 8w, 4w, 2w, w; 1→2→…→32), the last block
    RB(w, C).

    Taps — encoder: ``pool1`` (w), ``pool2`` (2w), ``pool3`` (4w), ``gap`` (8w), ``stats`` (2L); decoder:
    ``up1``…``up5`` (L, 8w, 4w, 2w, w), the transposed convolutions' inputs. At w = 32, L = 512: encoder
    1504-d, decoder 992-d.

    Shapes: ``x`` ``[N, C, 32, 32]`` → reconstruction ``[N, C, 32, 32]``, μ and log σ² ``[N, L]``.
    """

    ENCODER_TAPS = ("pool1", "pool2", "pool3", "gap", "stats")
    DECODER_TAPS = ("up1", "up2", "up3", "up4", "up5")

    def __init__(self, in_channels: int = 3, latent_dim: int = 512, width: int = 32, beta: float = 1.0,
                 image_size: int = 32):
        super().__init__()
        if image_size != 32:
            raise ValueError(f"CifarConvVAE decodes 1×1 → 32×32: the image size must be 32, got {image_size}")
        self.config = {"in_channels": in_channels, "latent_dim": latent_dim, "width": width, "beta": beta,
                       "image_size": image_size}
        w = width
        self.enc1 = nn.Sequential(VAEResBlock(in_channels, w), VAEResBlock(w, w), VAEResBlock(w, w))
        self.enc2 = nn.Sequential(VAEResBlock(w, 2 * w), VAEResBlock(2 * w, 2 * w))
        self.enc3 = nn.Sequential(VAEResBlock(2 * w, 4 * w), VAEResBlock(4 * w, 4 * w))
        self.enc4 = nn.Sequential(VAEResBlock(4 * w, 8 * w), VAEResBlock(8 * w, 8 * w))
        self.enc_fc = nn.Linear(8 * w, 2 * latent_dim)
        ins = [latent_dim, 8 * w, 4 * w, 2 * w, w]
        outs = [8 * w, 4 * w, 2 * w, w, w]
        self.ups = nn.ModuleList(nn.ConvTranspose2d(c, c, 2, stride=2) for c in ins)
        self.dec_blocks = nn.ModuleList(
            nn.Sequential(VAEResBlock(c, o), VAEResBlock(o, o), VAEResBlock(o, o if k < 4 else in_channels))
            for k, (c, o) in enumerate(zip(ins, outs, strict=True))
        )
        self.reset_parameters()

    def feature_dims(self) -> dict[str, int]:
        w, latent = self.config["width"], self.config["latent_dim"]
        return {"pool1": w, "pool2": 2 * w, "pool3": 4 * w, "gap": 8 * w, "stats": 2 * latent,
                "up1": latent, "up2": 8 * w, "up3": 4 * w, "up4": 2 * w, "up5": w}

    def _encode(self, x: torch.Tensor, acts: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        acts["pool1"] = h = F.max_pool2d(self.enc1(x), 2)
        acts["pool2"] = h = F.max_pool2d(self.enc2(h), 2)
        acts["pool3"] = h = F.max_pool2d(self.enc3(h), 2)
        acts["gap"] = h = self.enc4(h).mean(dim=(2, 3))
        acts["stats"] = stats = self.enc_fc(h)
        mu, log_std = stats.chunk(2, dim=1)
        return mu, 2.0 * log_std

    def _decode(self, z: torch.Tensor, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        h = z[:, :, None, None]
        for k, (up, blocks) in enumerate(zip(self.ups, self.dec_blocks, strict=True)):
            acts[f"up{k + 1}"] = h
            h = blocks(up(h))
        return h

    def elbo_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image: unit-variance Gaussian NLL summed over pixels, KL summed over the latent."""
        recon_x, mu, log_var = self(x)
        nll = 0.5 * (x - recon_x).square() + 0.5 * math.log(2 * math.pi)
        return nll.flatten(1).sum(1), gaussian_kl(mu, log_var)

    def reconstruct(self, output: torch.Tensor) -> torch.Tensor:
        """Decoder output → image in [0, 1]."""
        return (output.clamp(-1, 1) + 1) / 2

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
