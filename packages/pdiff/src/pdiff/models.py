"""Models of p-diff (Wang et al., "Neural Network Diffusion", arXiv 2402.13144): the host classifiers whose
parameters are generated, the parameter autoencoders and the latent denoisers.

Hosts: :class:`MnistMLP` (spec §15), :class:`SmallBNCNN` (the CPU runs' small BatchNorm CNN),
:class:`CNNMedium` (``mnist_cnnmedium``, spec §12), a CIFAR ResNet-18 (timm's ResNet-18 with the 3×3 stem and
no max-pool of the OLD code) and any ``timm:<name>`` / ``torchvision:<name>`` model, all built by
:func:`build_host` (registered as ``pdiff_host`` so an exported host reloads with ``load_pretrained``).

Generator: :class:`ParamAutoencoder` (NEW, §6.1), :class:`OldParamAutoencoder` (OLD, §6.2),
:class:`LatentDenoiser1D` (NEW, §7) and :class:`OldLatentDenoiser` (OLD, §7). All act on a parameter vector
or latent shaped as a 1-channel sequence ``(B, 1, L)``.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from diffcore.checkpoint import register_model
from diffcore.errors import ConfigError
from torch import nn

# ------------------------------------------------------------------------------------------------ hosts


class MnistMLP(nn.Module):
    """784 → hidden → classes MLP (spec §15 ``cpu-mnist``). Shapes: ``(B, C, H, W)`` → ``(B, classes)``."""

    def __init__(self, in_features: int = 784, hidden: int = 32, num_classes: int = 10):
        super().__init__()
        self.in_features, self.hidden, self.num_classes = in_features, hidden, num_classes
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.fc1.reset_parameters()
        self.fc2.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x.flatten(1))))

    def extra_repr(self) -> str:
        return f"{self.in_features}→{self.hidden}→{self.num_classes}"


class SmallBNCNN(nn.Module):
    """Small BatchNorm CNN of the CPU runs: ``len(widths)`` × [Conv3×3 → BatchNorm2d → ReLU → MaxPool2 (global
    average pool after the last)] → Linear(hidden) → BatchNorm1d → ReLU → Linear(classes).

    Its last two normalisation layers (the paper's default subset S) are the last conv's BatchNorm2d and the
    head's BatchNorm1d, so S sits after every convolution, as ``layer4.1.bn1/bn2`` sit near the end of
    ResNet-18. Shapes: ``(B, C, H, W)`` → ``(B, classes)``.
    """

    def __init__(self, in_chans: int = 1, widths: tuple[int, ...] | list[int] = (8, 16, 32), hidden: int = 32,
                 num_classes: int = 10):
        super().__init__()
        self.in_chans, self.widths, self.hidden, self.num_classes = in_chans, tuple(widths), hidden, num_classes
        chans = (in_chans, *self.widths)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1, bias=False) for a, b in pairwise(chans))
        self.bns = nn.ModuleList(nn.BatchNorm2d(b) for b in self.widths)
        self.fc1 = nn.Linear(self.widths[-1], hidden, bias=False)
        self.bn_fc = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in (*self.convs, *self.bns, self.fc1, self.bn_fc, self.fc2):
            module.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.convs) - 1
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            x = F.relu(bn(conv(x)))
            x = x.mean((-2, -1)) if i == last else F.max_pool2d(x, 2)
        return self.fc2(F.relu(self.bn_fc(self.fc1(x))))

    def extra_repr(self) -> str:
        return (f"in_chans={self.in_chans}, widths={self.widths}, hidden={self.hidden}, "
                f"num_classes={self.num_classes}")


class CNNMedium(nn.Module):
    """``mnist_cnnmedium`` of the NEW code's whole-network runs (spec §12): 10,853 parameters on 3×32×32.

    3 × [unpadded Conv3×3 → MaxPool2 → LeakyReLU], channels 3→16→32→15 (32→15→6→2 pixels), flatten 60 →
    Linear 20 → LeakyReLU → Linear classes. Shapes: ``(B, 3, 32, 32)`` → ``(B, classes)``.
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 10):
        super().__init__()
        self.in_chans, self.num_classes = in_chans, num_classes
        self.convs = nn.ModuleList([nn.Conv2d(in_chans, 16, 3), nn.Conv2d(16, 32, 3), nn.Conv2d(32, 15, 3)])
        self.fc1 = nn.Linear(60, 20)
        self.fc2 = nn.Linear(20, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in (*self.convs, self.fc1, self.fc2):
            module.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.leaky_relu(F.max_pool2d(conv(x), 2))
        return self.fc2(F.leaky_relu(self.fc1(x.flatten(1))))

    def extra_repr(self) -> str:
        return f"in_chans={self.in_chans}, num_classes={self.num_classes}"


#: name → (builder(in_chans, num_classes), native input size, input channels it is built for)
OWN_HOSTS = {
    "mnist_mlp": (lambda c, n: MnistMLP(784 * c, 32, n), 28),
    "mnist_cnn": (lambda c, n: SmallBNCNN(c, (8, 16, 32), 32, n), 28),
    "cifar_cnn": (lambda c, n: SmallBNCNN(c, (16, 32, 64), 64, n), 32),
    "mnist_cnnmedium": (lambda c, n: CNNMedium(3, n), 32),
    "cifar_resnet18": (None, 32),
}


def host_input(arch: str) -> tuple[int, int | None]:
    """``(native image size, forced channel count or None)`` of a host architecture."""
    if arch in OWN_HOSTS:
        return OWN_HOSTS[arch][1], 3 if arch == "mnist_cnnmedium" else None
    return 224, None


@register_model("pdiff_host")
def build_host(arch: str, num_classes: int, in_chans: int = 3, pretrained: bool = False) -> nn.Module:
    """The host classifier ``arch`` (see :class:`pdiff.config.HostConfig`) for ``in_chans`` × ``num_classes``."""
    if arch in OWN_HOSTS:
        if arch == "cifar_resnet18":
            return _cifar_resnet18(in_chans, num_classes)
        return OWN_HOSTS[arch][0](in_chans, num_classes)
    source, _, name = arch.partition(":")
    if source == "timm" and name:
        import timm

        if name not in timm.list_models():
            raise ConfigError(f"timm has no model {name!r}; see timm.list_models()")
        try:
            return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans)
        except (OSError, RuntimeError) as err:
            raise ConfigError(f"cannot load pretrained weights of timm:{name} ({str(err).splitlines()[0]}); "
                              "run once with a network or set host.pretrained=false") from None
    if source == "torchvision" and name:
        import torchvision

        if name not in torchvision.models.list_models():
            raise ConfigError(f"torchvision has no model {name!r}; see torchvision.models.list_models()")
        if in_chans != 3:
            raise ConfigError(f"torchvision:{name} takes 3 input channels; greyscale data is repeated only for "
                              "pdiff's own hosts, use timm:<name> (in_chans) instead")
        try:
            model = torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None)
        except (OSError, RuntimeError) as err:
            raise ConfigError(f"cannot load pretrained weights of torchvision:{name} ({str(err).splitlines()[0]}); "
                              "run once with a network or set host.pretrained=false") from None
        _replace_classifier(model, num_classes)
        return model
    raise ConfigError(f"unknown host architecture {arch!r}: use one of {', '.join(OWN_HOSTS)}, timm:<name> "
                      "or torchvision:<name>")


def _cifar_resnet18(in_chans: int, num_classes: int) -> nn.Module:
    """ResNet-18 of the OLD code: timm's BasicBlock ResNet with a 3×3 stride-1 stem and no max-pool (32×32)."""
    import timm

    model = timm.create_model("resnet18", pretrained=False, num_classes=num_classes, in_chans=in_chans)
    model.conv1 = nn.Conv2d(in_chans, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _replace_classifier(model: nn.Module, num_classes: int) -> None:
    """Give a torchvision classifier ``num_classes`` outputs (its last Linear, wherever it lives)."""
    name, last = next((n, m) for n, m in reversed(list(model.named_modules())) if isinstance(m, nn.Linear))
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    new = nn.Linear(last.in_features, num_classes)
    if isinstance(parent, nn.Sequential):
        parent[int(name.rpartition(".")[2])] = new
    else:
        setattr(parent, name.rpartition(".")[2], new)


# ------------------------------------------------------------------------------------------ autoencoders


def _apply_noise(x: torch.Tensor, level: float, mode: str) -> torch.Tensor:
    """Training augmentation: ``x + level·ε`` (NEW, additive) or ``(1 − level)·x + level·ε`` (OLD, interpolate)."""
    if level == 0:
        return x
    noise = torch.randn_like(x)
    return x + level * noise if mode == "additive" else (1 - level) * x + level * noise


@register_model("pdiff_ae")
class ParamAutoencoder(nn.Module):
    """NEW parameter autoencoder (spec §6.1): z = f_enc(v + ξ_V), v̂ = f_dec(z + ξ_Z), loss ‖v_noised − v̂‖².

    Encoder: ``len(channels)`` × [Conv1d k, stride 2 → BatchNorm1d → LeakyReLU] (1 → channels), flatten →
    Linear → Linear to ``latent_dim`` (the official log σ² head is unused with KL weight 0, so it is omitted).
    Decoder: Linear → view → ConvTranspose1d (stride 2) blocks over the reversed channels with BN + ELU, one
    more ConvTranspose1d → BN → ELU → Conv1d(channels[0] → 1).

    Shapes: ``v`` ``(B, input_dim)`` (``input_dim`` divisible by 2^len(channels)) → ``z`` ``(B, latent_dim)``
    → ``v̂`` ``(B, input_dim)``.
    """

    def __init__(self, input_dim: int, channels: tuple[int, ...] | list[int] = (64, 128, 256, 256, 32),
                 latent_dim: int = 128, kernel_size: int = 7, input_noise: float = 0.001,
                 latent_noise: float = 0.1, noise_mode: str = "additive"):
        super().__init__()
        self.channels = tuple(channels)
        depth = len(self.channels)
        if input_dim % 2**depth:
            raise ConfigError(f"ParamAutoencoder input_dim={input_dim} must be divisible by 2^{depth}")
        self.input_dim, self.latent_dim, self.kernel_size = input_dim, latent_dim, kernel_size
        self.input_noise, self.latent_noise, self.noise_mode = input_noise, latent_noise, noise_mode
        self.bottom = input_dim // 2**depth
        pad = kernel_size // 2
        chans = (1, *self.channels)
        self.encoder = nn.Sequential(*(
            nn.Sequential(nn.Conv1d(a, b, kernel_size, 2, pad), nn.BatchNorm1d(b), nn.LeakyReLU())
            for a, b in pairwise(chans)
        ))
        flat = self.channels[-1] * self.bottom
        self.to_latent = nn.Sequential(nn.Linear(flat, latent_dim), nn.Linear(latent_dim, latent_dim))
        self.from_latent = nn.Linear(latent_dim, flat)
        rev = (*self.channels[::-1], self.channels[0])  # last block keeps channels[0]
        self.decoder = nn.Sequential(*(
            nn.Sequential(nn.ConvTranspose1d(a, b, kernel_size, 2, pad, output_padding=1), nn.BatchNorm1d(b), nn.ELU())
            for a, b in pairwise(rev)
        ))
        self.head = nn.Conv1d(self.channels[0], 1, kernel_size, padding=pad)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def encode(self, v: torch.Tensor) -> torch.Tensor:
        """Clean latent mean μ: ``(B, input_dim)`` → ``(B, latent_dim)``."""
        return self.to_latent(self.encoder(v[:, None]).flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, latent_dim)`` → ``(B, input_dim)``."""
        h = self.from_latent(z).view(len(z), self.channels[-1], self.bottom)
        return self.head(self.decoder(h))[:, 0]

    def forward(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstruction, target)``, both ``(B, input_dim)``. Training mode: input noise σ_V, latent noise σ_Z,
        and the target is the *noised* input (as in the NEW code); eval mode: clean, the target is ``v``."""
        if not self.training:
            return self.decode(self.encode(v)), v
        noisy = _apply_noise(v, self.input_noise, self.noise_mode)
        z = _apply_noise(self.encode(noisy), self.latent_noise, self.noise_mode)
        return self.decode(z), noisy

    def loss(self, v: torch.Tensor) -> torch.Tensor:
        """MSE of :meth:`forward` (the training loss in training mode)."""
        return F.mse_loss(*self(v))

    def extra_repr(self) -> str:
        return (f"input_dim={self.input_dim}, channels={self.channels}, latent_dim={self.latent_dim}, "
                f"noise=({self.input_noise}, {self.latent_noise}, {self.noise_mode})")


@register_model("pdiff_ae_old")
class OldParamAutoencoder(nn.Module):
    """OLD parameter autoencoder ``medium`` (spec §6.2): a 12-number Tanh latent for D = 2,048.

    The input is zero-padded to P = (⌊D/fold^n⌋ + 1)·fold^n. Encoder block i: [LeakyReLU (i > 0)] → InstanceNorm
    → Conv1d(c → c, k, pad 1) → LeakyReLU → InstanceNorm → Conv1d(c → c′, k, stride fold); Tanh after the last.
    Decoder block: LeakyReLU → InstanceNorm → ConvTranspose1d(c → c, fold, stride fold) → LeakyReLU →
    InstanceNorm → Conv1d(c → c′, k, pad 4; pad 5 in the last block); the output is cropped to D.
    Noise by interpolation, the latent clamped to [−1, 1]; the target is the clean input.

    Shapes: ``(B, input_dim)`` → latent ``(B, enc_channels[-1] · latent_len)`` (12 for D = 2,048) → ``(B, input_dim)``.
    """

    def __init__(self, input_dim: int, enc_channels: tuple[int, ...] | list[int] = (4, 4, 4, 4),
                 dec_channels: tuple[int, ...] | list[int] = (256, 256, 8), fold: int = 5, kernel_size: int = 5,
                 input_noise: float = 0.001, latent_noise: float = 0.1):
        super().__init__()
        self.enc_channels, self.dec_channels = tuple(enc_channels), tuple(dec_channels)
        self.input_dim, self.fold, self.kernel_size = input_dim, fold, kernel_size
        self.input_noise, self.latent_noise = input_noise, latent_noise
        n = len(self.enc_channels)
        self.padded_dim = (input_dim // fold**n + 1) * fold**n
        length = self.padded_dim
        for _ in range(n):
            length = (length - (kernel_size - 3) - kernel_size) // fold + 1
        self.latent_len, self.latent_channels = length, self.enc_channels[-1]
        out = length
        for j in range(n):
            out = out * fold + (2 * (5 if j == n - 1 else 4) - kernel_size + 1)
        if length < 1 or out < input_dim:
            raise ConfigError(f"OldParamAutoencoder cannot code input_dim={input_dim} with fold={fold}, "
                              f"kernel_size={kernel_size} (latent length {length}, decoded length {out})")
        self.latent_dim = self.latent_channels * self.latent_len
        enc = (1, *self.enc_channels)
        self.encoder = nn.Sequential(*(
            nn.Sequential(*([nn.LeakyReLU()] if i else []), nn.InstanceNorm1d(a), nn.Conv1d(a, a, kernel_size, 1, 1),
                          nn.LeakyReLU(), nn.InstanceNorm1d(a), nn.Conv1d(a, b, kernel_size, fold))
            for i, (a, b) in enumerate(pairwise(enc))
        ), nn.Tanh())
        dec = (self.latent_channels, *self.dec_channels, 1)
        self.decoder = nn.Sequential(*(
            nn.Sequential(nn.LeakyReLU(), nn.InstanceNorm1d(a), nn.ConvTranspose1d(a, a, fold, fold),
                          nn.LeakyReLU(), nn.InstanceNorm1d(a),
                          nn.Conv1d(a, b, kernel_size, 1, 5 if j == n - 1 else 4))
            for j, (a, b) in enumerate(pairwise(dec))
        ))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def encode(self, v: torch.Tensor) -> torch.Tensor:
        """``(B, input_dim)`` → ``(B, latent_dim)`` in (−1, 1)."""
        x = F.pad(v, (0, self.padded_dim - self.input_dim))[:, None]
        return self.encoder(x).flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.decoder(z.view(len(z), self.latent_channels, self.latent_len))
        return x[:, 0, : self.input_dim]

    def forward(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstruction, target = v)``; training mode adds the interpolation noise and clamps the latent."""
        if not self.training:
            return self.decode(self.encode(v)), v
        z = _apply_noise(self.encode(_apply_noise(v, self.input_noise, "interpolate")), self.latent_noise,
                         "interpolate").clamp(-1, 1)
        return self.decode(z), v

    def loss(self, v: torch.Tensor) -> torch.Tensor:
        """MSE of :meth:`forward`."""
        return F.mse_loss(*self(v))

    def extra_repr(self) -> str:
        return (f"input_dim={self.input_dim} (padded {self.padded_dim}), latent=({self.latent_channels}, "
                f"{self.latent_len}), noise=({self.input_noise}, {self.latent_noise}, interpolate)")


# -------------------------------------------------------------------------------------------- denoisers


@register_model("pdiff_denoiser")
class LatentDenoiser1D(nn.Module):
    """NEW latent denoiser ε_θ(x_t, t) (spec §7; the official class is misnamed "AE_CNN_bottleneck", issue #14).

    A 1-channel latent sequence of length L passes a 1-D conv encoder–decoder without resampling. ``channels``
    (default ``[1, 64, 128, 256, 512, 256, 128, 64, 1]``) lists the conv widths; the encoder runs up to and one
    past the widest layer, the decoder adds the matching encoder output (U-Net order) before each of its convs.
    Every conv is Conv1d(k, pad k//2) → BatchNorm → ELU (not after the last). Time: sinusoidal cos‖sin features
    of dimension 2L (frequencies exp(−ln 10⁴·k/L)) → Linear(2L → L) → SiLU → Linear(L → L), added per sample
    as ``(B, 1, L)`` to the input of every conv (broadcast over channels).

    Shapes: ``x`` ``(B, L)``, ``t`` ``(B,)`` int → ``ε̂`` ``(B, L)``.
    """

    def __init__(self, length: int, channels: tuple[int, ...] | list[int] = (1, 64, 128, 256, 512, 256, 128, 64, 1),
                 kernel_size: int = 7):
        super().__init__()
        self.length, self.channels, self.kernel_size = length, tuple(channels), kernel_size
        peak = max(range(len(self.channels)), key=lambda i: self.channels[i])
        enc_out = self.channels[1: peak + 2]
        dec_in = self.channels[peak + 1: -1]
        self.skips = [len(dec_in) - 1 - j for j in range(len(dec_in))]
        for j, s in enumerate(self.skips):
            if s < 0 or enc_out[s] != dec_in[j]:
                raise ConfigError(f"denoiser channels {self.channels} are not symmetric: decoder input {dec_in[j]} "
                                  "has no matching encoder output")
        pad = kernel_size // 2
        pairs = list(pairwise(self.channels))
        last = len(pairs) - 1
        self.convs = nn.ModuleList(nn.Conv1d(a, b, kernel_size, padding=pad) for a, b in pairs)
        self.norms = nn.ModuleList(nn.BatchNorm1d(b) for _, b in pairs[:last])
        self.num_encoder = peak + 1
        self.time_mlp = nn.Sequential(nn.Linear(2 * length, length), nn.SiLU(), nn.Linear(length, length))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in (*self.convs, *self.norms, self.time_mlp[0], self.time_mlp[2]):
            module.reset_parameters()

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """``(B,)`` → ``(B, 1, L)``, different for every t in the batch."""
        from diffusers.models.embeddings import get_timestep_embedding

        feats = get_timestep_embedding(t, 2 * self.length, flip_sin_to_cos=True, downscale_freq_shift=0)
        return self.time_mlp(feats)[:, None]

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_embedding(t)
        h, outputs = x[:, None], []
        for i, conv in enumerate(self.convs):
            if i >= self.num_encoder:
                h = h + outputs[self.skips[i - self.num_encoder]]
            h = conv(h + emb)
            if i < len(self.norms):
                h = F.elu(self.norms[i](h))
            outputs.append(h)
        return h[:, 0]

    def extra_repr(self) -> str:
        return f"length={self.length}, channels={self.channels}, kernel_size={self.kernel_size}"


@register_model("pdiff_denoiser_old")
class OldLatentDenoiser(nn.Module):
    """OLD latent denoiser (spec §7): InstanceNorm k3 convs with additive skips and a learned time table.

    enc1: IN → Conv(1 → c₁) → LReLU → IN → Conv(c₁ → c₁); enc2–4: LReLU → IN → Conv(c → c′) → LReLU → IN →
    Conv(c′ → c′) up to c₄; dec1–3 mirror them down to c₁, each followed by the additive skip of enc3, enc2, enc1;
    dec4: c₁ → c₁ → 1. Time: ``Embedding(timesteps, L)``, the ``(B, 1, L)`` row added to the input of all eight
    blocks. ``time_embed_bug=True`` reproduces the original training bug (the first sample's t for the whole
    batch; harmless at sampling, where all t are equal). ≈ 2.36 M parameters for channels (64, 128, 256, 512).

    Shapes: ``x`` ``(B, L)``, ``t`` ``(B,)`` int → ``ε̂`` ``(B, L)``.
    """

    def __init__(self, length: int, channels: tuple[int, ...] | list[int] = (64, 128, 256, 512),
                 timesteps: int = 1000, time_embed_bug: bool = False):
        super().__init__()
        self.length, self.channels, self.timesteps = length, tuple(channels), timesteps
        self.time_embed_bug = time_embed_bug
        up = (1, *self.channels)
        down = (*self.channels[::-1], self.channels[0])

        def block(a: int, b: int, first: bool = False, out: int | None = None) -> nn.Sequential:
            return nn.Sequential(*([] if first else [nn.LeakyReLU()]), nn.InstanceNorm1d(a),
                                 nn.Conv1d(a, b, 3, padding=1), nn.LeakyReLU(), nn.InstanceNorm1d(b),
                                 nn.Conv1d(b, out or b, 3, padding=1))

        self.encoder = nn.ModuleList(block(a, b, first=i == 0) for i, (a, b) in enumerate(pairwise(up)))
        self.decoder = nn.ModuleList(block(a, b) for a, b in pairwise(down[:-1]))
        self.decoder.append(block(down[-2], down[-1], out=1))
        self.time_table = nn.Embedding(timesteps, length)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and isinstance(module, nn.Conv1d | nn.Embedding):
                module.reset_parameters()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.time_embed_bug and self.training:
            t = t[:1].expand(len(t))
        emb = self.time_table(t)[:, None]
        h, skips = x[:, None], []
        for block in self.encoder:
            h = block(h + emb)
            skips.append(h)
        for j, block in enumerate(self.decoder):
            h = block(h + emb)
            if j < len(self.decoder) - 1:
                h = h + skips[-2 - j]
        return h[:, 0]

    def extra_repr(self) -> str:
        return f"length={self.length}, channels={self.channels}, time_embed_bug={self.time_embed_bug}"
