"""Configs and presets of the p-diff pipeline (spec §4–§10, §15).

One frozen :class:`PDiffConfig` holds every stage: the host model and its data (``host``), its
pre-training (``pretrain``), checkpoint collection (``collect``), the parameter autoencoder (``ae``), the
latent DDPM (``ddpm``), generation (``generate``) and evaluation (``evaluate``). Each stage's command reads
the fields it needs; ``config.json`` of every run holds the whole resolved config, so a run is reproducible.

Presets:

* ``cpu-mnist`` (default) — spec §15: MNIST MLP 784→32→10, S = the last Linear (330 numbers), K = 50
  per-iteration checkpoints, NEW-design generator at CPU size. A few minutes on 2 cores.
* ``mnist-cnn`` — the issue's real CPU run: a small BatchNorm CNN on MNIST, S = its last two BatchNorms,
  K = 200 per-iteration checkpoints, N = 100 generated models, NEW design at CPU size.
* ``cifar10-subset-cnn`` — the same recipe on the offline CIFAR-10 15k/1k subset.
* ``mnist-cnnmedium-full`` — whole-network generation of ``mnist_cnnmedium`` (10,853 parameters, latent 256).
* ``new`` — the NEW official code (HEAD 0ecca89) for CIFAR-100 / timm ResNet-18 (GPU; ImageNet weights).
* ``old`` — the OLD official code (commit 489e9b1): CIFAR ResNet-18 from scratch, per-epoch checkpoints,
  the 12-number InstanceNorm autoencoder, the old denoiser with EMA and the clamping sampler.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from diffcore.config import Presets, require
from diffcore.device import check_device

Optimizer = Literal["adamw", "sgd", "adam"]
Schedule = Literal["constant", "cosine", "multistep"]


@dataclass(frozen=True)
class HostConfig:
    """The host classifier and its data.

    ``arch`` is a model of this package (``mnist_mlp``, ``mnist_cnn``, ``cifar_cnn``, ``mnist_cnnmedium``,
    ``cifar_resnet18``), ``timm:<name>`` or ``torchvision:<name>``. ``dataset`` is ``mnist``, ``cifar10``,
    ``cifar100``, ``cifar10-subset``, ``digits`` or an image folder ``DIR`` (``DIR/train``, ``DIR/test``).
    ``val_size`` images are held out of the training split to select "best" models (never the test set).
    """

    arch: str = "mnist_mlp"
    dataset: str = "mnist"
    pretrained: bool = False
    image_size: int = 0  # 0: the architecture's native size
    val_size: int = 5000
    train_limit: int = 0  # 0: the whole training split (after the validation hold-out)
    test_limit: int = 0  # 0: the whole test split
    eval_batch_size: int = 1000

    def check(self) -> None:
        require(bool(self.arch), "host.arch must name a model, e.g. mnist_cnn or timm:resnet18")
        require(self.image_size >= 0, f"host.image_size={self.image_size} must be >= 0 (0: native size)")
        require(self.val_size >= 1, f"host.val_size={self.val_size} must be >= 1: best models are selected on it")
        require(self.train_limit >= 0 and self.test_limit >= 0, "host.train_limit/test_limit must be >= 0")
        require(self.eval_batch_size >= 1, "host.eval_batch_size must be >= 1")


@dataclass(frozen=True)
class OptimConfig:
    """One optimiser + schedule; ``epochs`` is only read by pre-training."""

    optimizer: Optimizer = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: Schedule = "constant"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    batch_size: int = 128
    epochs: int = 1
    augment: bool = False

    def check(self) -> None:
        require(self.lr > 0, f"lr={self.lr} must be positive")
        require(self.weight_decay >= 0, f"weight_decay={self.weight_decay} must be >= 0")
        require(self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1")
        require(self.epochs >= 0, f"epochs={self.epochs} must be >= 0")


@dataclass(frozen=True)
class CollectConfig:
    """Stage 1 (spec §4): keep training only the selected parameters S and save them ``k`` times.

    ``params`` is the selector (see :func:`pdiff.params.select_parameters`): ``norm:2`` = the last two
    normalisation layers (the paper's default), ``all``, ``last`` (the last module with parameters), a comma
    list of module/parameter names, or ``re:<regex>``. ``save_every="iteration"`` (NEW) saves after every
    optimiser step; ``"epoch"`` (OLD) after every pass over the training split. ``bn_mode="eval"`` freezes
    BatchNorm running statistics while S trains (the NEW code's effective behaviour, consistent with the host
    used at test time); ``"train"`` lets them drift (the OLD code).
    """

    params: str = "norm:2"
    k: int = 200
    save_every: Literal["iteration", "epoch"] = "iteration"
    bn_mode: Literal["eval", "train"] = "eval"
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=0.03, weight_decay=5e-4))

    def check(self) -> None:
        require(bool(self.params.strip()), "collect.params is empty: give a selector such as norm:2, all or fc")
        require(self.k >= 2, f"collect.k={self.k} must be >= 2 checkpoints")


@dataclass(frozen=True)
class AEConfig:
    """Stage 3 (spec §6): the parameter autoencoder.

    ``arch="new"``: BN/LeakyReLU stride-2 Conv1d encoder with ``channels``, Linear to a ``latent_dim`` code,
    ConvTranspose decoder (§6.1). ``arch="old-medium"``: the 12-number InstanceNorm autoencoder (§6.2).
    ``noise_mode="additive"``: v + σ_V ε, z + σ_Z ε (NEW); ``"interpolate"``: (1−a)v + aε and the latent clamped
    to [−1, 1] (OLD). ``normalise="zscore"`` standardises each tensor (NEW §5), ``"none"`` keeps raw values (OLD).
    """

    arch: Literal["new", "old-medium"] = "new"
    channels: tuple[int, ...] = (64, 128, 256, 256, 32)
    latent_dim: int = 128
    kernel_size: int = 7
    input_noise: float = 0.001
    latent_noise: float = 0.1
    noise_mode: Literal["additive", "interpolate"] = "additive"
    normalise: Literal["zscore", "none"] = "zscore"
    steps: int = 500
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-5, schedule="cosine", batch_size=50))

    def check(self) -> None:
        require(len(self.channels) >= 1 and all(c >= 1 for c in self.channels),
                f"ae.channels={self.channels} must be positive channel counts")
        require(self.latent_dim >= 1, f"ae.latent_dim={self.latent_dim} must be >= 1")
        require(self.kernel_size % 2 == 1, f"ae.kernel_size={self.kernel_size} must be odd")
        require(self.input_noise >= 0 and self.latent_noise >= 0, "ae noise levels must be >= 0")
        require(self.steps >= 1, f"ae.steps={self.steps} must be >= 1")


@dataclass(frozen=True)
class DDPMConfig:
    """Stage 4 (spec §7): the latent DDPM and its denoiser.

    ``arch="new"``: :class:`pdiff.models.LatentDenoiser1D` with ``channels`` (sinusoidal time MLP added to
    every conv input); ``"old-cnn"``: :class:`pdiff.models.OldLatentDenoiser` (InstanceNorm k3 convs, learned
    time table). ``latent_scale="auto"`` divides latents by their std before diffusion (issue #20);
    ``"none"`` is the official behaviour. An EMA of the denoiser (``ema_decay``) is always kept and saved.
    """

    arch: Literal["new", "old-cnn"] = "new"
    channels: tuple[int, ...] = (1, 64, 128, 256, 512, 256, 128, 64, 1)
    kernel_size: int = 7
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    steps: int = 1000
    ema_decay: float = 0.9999
    latent_scale: Literal["auto", "none"] = "auto"
    time_embed_bug: bool = False
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, schedule="cosine", batch_size=50))

    def check(self) -> None:
        require(len(self.channels) >= 3 and self.channels[0] == 1 and self.channels[-1] == 1,
                f"ddpm.channels={self.channels} must start and end with 1 (a 1-channel latent sequence)")
        require(self.kernel_size % 2 == 1, f"ddpm.kernel_size={self.kernel_size} must be odd")
        require(self.timesteps >= 2, f"ddpm.timesteps={self.timesteps} must be >= 2")
        require(0 < self.beta_start < self.beta_end < 1, "ddpm betas need 0 < beta_start < beta_end < 1")
        require(self.steps >= 1, f"ddpm.steps={self.steps} must be >= 1")
        require(0 <= self.ema_decay < 1, f"ddpm.ema_decay={self.ema_decay} must be in [0, 1)")
        require(not self.time_embed_bug or self.arch == "old-cnn",
                "ddpm.time_embed_bug reproduces a bug of the old denoiser only: use it with ddpm.arch=old-cnn")


@dataclass(frozen=True)
class GenerateConfig:
    """Stage 5: sample ``num_models`` latents in one batch, decode, write into the host.

    ``sampler``: ``ddpm`` (ancestral, no clipping, NEW), ``ddim`` (``steps``, ``eta``) or ``old`` (OLD: x̂₀
    clipped, "fixedlarge" variance, x clamped to [−1, 1] after every step). ``use_ema`` samples with the EMA.
    """

    num_models: int = 200
    sampler: Literal["ddpm", "ddim", "old"] = "ddpm"
    steps: int = 60
    eta: float = 0.05
    use_ema: bool = False

    def check(self) -> None:
        require(self.num_models >= 1, f"generate.num_models={self.num_models} must be >= 1")
        require(self.steps >= 1, f"generate.steps={self.steps} must be >= 1")
        require(0 <= self.eta <= 1, f"generate.eta={self.eta} must be in [0, 1]")


@dataclass(frozen=True)
class EvaluateConfig:
    """Stage 6 (spec §9, §16): accuracies, baselines and similarities.

    ``select_on="val"`` picks "best" on the held-out split; ``"test"`` reproduces the official (optimistic)
    choice. Noise-perturbed originals: ``noise_models`` per level of ``noise_levels`` (in standardised units).
    Memorisation baselines: ``baseline_models`` averages of ``average_of`` random checkpoints and as many
    draws of a per-coordinate Gaussian fitted to the checkpoints; raw noise N(0, a²) for ``raw_noise``.
    """

    select_on: Literal["val", "test"] = "val"
    noise_levels: tuple[float, ...] = (0.001, 0.05, 0.15)
    noise_models: int = 300
    raw_noise: tuple[float, ...] = (0.06, 0.12)
    baseline_models: int = 100
    average_of: int = 16
    chunk: int = 64
    batched: bool = True

    def check(self) -> None:
        require(all(s >= 0 for s in self.noise_levels), "evaluate.noise_levels must be >= 0")
        require(all(a >= 0 for a in self.raw_noise), "evaluate.raw_noise must be >= 0")
        require(self.noise_models >= 0 and self.baseline_models >= 0, "evaluate model counts must be >= 0")
        require(self.average_of >= 1, f"evaluate.average_of={self.average_of} must be >= 1")
        require(self.chunk >= 1, f"evaluate.chunk={self.chunk} must be >= 1")


@dataclass(frozen=True)
class PDiffConfig:
    host: HostConfig = field(default_factory=HostConfig)
    pretrain: OptimConfig = field(default_factory=OptimConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    ae: AEConfig = field(default_factory=AEConfig)
    ddpm: DDPMConfig = field(default_factory=DDPMConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    device: str = "auto"
    seed: int = 0
    # inputs of the stage commands (folders of earlier runs), recorded so that --resume needs none retyped
    base: str = ""
    checkpoints: str = ""
    generator: str = ""
    generated: str = ""
    phase: Literal["ae", "ddpm", "both"] = "both"

    def check(self) -> None:
        batches = {"ae": self.ae.optim.batch_size, "ddpm": self.ddpm.optim.batch_size}
        for phase, batch in batches.items():
            require(batch <= self.collect.k,
                    f"{phase}.optim.batch_size={batch} is larger than the K={self.collect.k} checkpoints it trains on; "
                    f"collect more (--k) or lower it (--set {phase}.optim.batch_size=N)")
        require(self.generate.sampler != "ddim" or self.generate.steps <= self.ddpm.timesteps,
                f"generate.steps={self.generate.steps} exceeds ddpm.timesteps={self.ddpm.timesteps}")
        require(self.ae.arch == "new" or len(self.ae.channels) == 4,
                f"ae.arch=old-medium takes 4 encoder channels, got ae.channels={self.ae.channels}")
        require(self.ddpm.arch == "new" or len(self.ddpm.channels) == 6,
                f"ddpm.arch=old-cnn takes channels (1, c1, c2, c3, c4, 1), got {self.ddpm.channels}")
        check_device(self.device)


def with_designs(config: PDiffConfig, ae: str | None = None, denoiser: str | None = None) -> PDiffConfig:
    """Switch the autoencoder / denoiser design (``--ae``, ``--denoiser``): the architecture fields of that
    design (channels, kernel, noise mode, normalisation) come along; steps and optimisers stay."""
    if ae is not None and ae != config.ae.arch:
        src = OLD.ae if ae == "old-medium" else NEW.ae
        config = replace(config, ae=replace(config.ae, arch=src.arch, channels=src.channels, latent_dim=src.latent_dim,
                                            kernel_size=src.kernel_size, noise_mode=src.noise_mode,
                                            normalise=src.normalise))
    if denoiser is not None and denoiser != config.ddpm.arch:
        src = OLD.ddpm if denoiser == "old-cnn" else NEW.ddpm
        config = replace(config, ddpm=replace(config.ddpm, arch=src.arch, channels=src.channels,
                                              kernel_size=src.kernel_size))
    return config


# ------------------------------------------------------------------------------------------- presets

# NEW design at CPU size (spec §15): AE channels [16, 32, 32, 8], latent 32, denoiser [1, 32, 64, 32, 1].
CPU_AE = AEConfig(channels=(16, 32, 32, 8), latent_dim=32, steps=300,
                  optim=OptimConfig(lr=1e-3, schedule="cosine", batch_size=50))
CPU_DDPM = DDPMConfig(channels=(1, 32, 64, 32, 1), steps=300, ema_decay=0.999,
                      optim=OptimConfig(lr=1e-3, schedule="cosine", batch_size=50))

CPU_MNIST = PDiffConfig(
    host=HostConfig(arch="mnist_mlp", dataset="mnist", val_size=5000, test_limit=0),
    pretrain=OptimConfig(optimizer="adamw", lr=1e-3, epochs=1, batch_size=128),
    collect=CollectConfig(params="last", k=50,
                          optim=OptimConfig(optimizer="adamw", lr=0.01, weight_decay=5e-4, batch_size=128)),
    ae=replace(CPU_AE, steps=500),
    ddpm=replace(CPU_DDPM, steps=1500),  # 300 (spec §15) left a few generated models at chance here
    generate=GenerateConfig(num_models=20, sampler="ddpm"),
    evaluate=EvaluateConfig(noise_models=20, baseline_models=20),
)

MNIST_CNN = replace(
    CPU_MNIST,
    host=HostConfig(arch="mnist_cnn", dataset="mnist", val_size=5000),
    pretrain=OptimConfig(optimizer="adamw", lr=3e-3, epochs=1, batch_size=128),
    collect=CollectConfig(params="norm:2", k=200,
                          optim=OptimConfig(optimizer="adamw", lr=0.03, weight_decay=5e-4, batch_size=128)),
    ae=replace(CPU_AE, steps=1000),
    ddpm=replace(CPU_DDPM, steps=2000),
    generate=GenerateConfig(num_models=100, sampler="ddpm"),
    evaluate=EvaluateConfig(noise_models=50, baseline_models=100),
)

CIFAR10_SUBSET_CNN = replace(
    MNIST_CNN,
    host=HostConfig(arch="cifar_cnn", dataset="cifar10-subset", val_size=1000),
    pretrain=OptimConfig(optimizer="adamw", lr=2e-3, epochs=6, batch_size=128, augment=True),
    collect=replace(MNIST_CNN.collect, optim=replace(MNIST_CNN.collect.optim, augment=True)),
)

MNIST_CNNMEDIUM_FULL = replace(
    MNIST_CNN,
    host=HostConfig(arch="mnist_cnnmedium", dataset="mnist", val_size=5000),
    pretrain=OptimConfig(optimizer="adamw", lr=3e-3, weight_decay=5e-3, epochs=3, batch_size=128),
    collect=CollectConfig(params="all", k=200, optim=OptimConfig(optimizer="adamw", lr=0.01, weight_decay=5e-3)),
    ae=replace(CPU_AE, channels=(16, 32, 64, 64, 16), latent_dim=256, steps=2000),
    evaluate=replace(MNIST_CNN.evaluate, batched=False),  # see tools/bench_pdiff.py: looped is faster here
)

# The NEW official code, CIFAR-100 / ResNet-18 (spec §4, §6.1, §7, §8; workspace/main/cifar100_resnet18.py).
NEW = PDiffConfig(
    host=HostConfig(arch="timm:resnet18", dataset="cifar100", pretrained=True, image_size=224, val_size=5000,
                    eval_batch_size=500),
    pretrain=OptimConfig(optimizer="adamw", lr=5e-4, weight_decay=5e-4, schedule="cosine", epochs=10,
                         batch_size=128, augment=True),
    collect=CollectConfig(params="norm:2", k=300, save_every="iteration", bn_mode="eval",
                          optim=OptimConfig(optimizer="adamw", lr=0.03, weight_decay=5e-4, batch_size=128,
                                            augment=True)),
    ae=AEConfig(),
    ddpm=DDPMConfig(),
    generate=GenerateConfig(num_models=200),
    evaluate=EvaluateConfig(),
    mixed_precision="bf16",
)

# The OLD official code (commit 489e9b1, cifar100_resnet18_k200.sh, configs/system/ae_ddpm.yaml).
OLD = replace(
    NEW,
    host=HostConfig(arch="cifar_resnet18", dataset="cifar100", pretrained=False, val_size=5000),
    pretrain=OptimConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="multistep",
                         milestones=(10, 20, 30), gamma=0.1, epochs=30, batch_size=64, augment=True),
    collect=CollectConfig(params="norm:2", k=200, save_every="epoch", bn_mode="eval",
                          optim=OptimConfig(optimizer="sgd", lr=0.1 * 0.1**3, momentum=0.9, weight_decay=5e-4,
                                            batch_size=64, augment=True)),
    ae=AEConfig(arch="old-medium", channels=(4, 4, 4, 4), latent_dim=12, kernel_size=5, input_noise=0.001,
                latent_noise=0.1, noise_mode="interpolate", normalise="none", steps=30000,
                optim=OptimConfig(optimizer="adamw", lr=1e-3, weight_decay=2e-6, batch_size=200)),
    ddpm=DDPMConfig(arch="old-cnn", channels=(1, 64, 128, 256, 512, 1), kernel_size=3, steps=30000,
                    ema_decay=0.9999, latent_scale="none",
                    optim=OptimConfig(optimizer="adamw", lr=1e-3, weight_decay=2e-6, batch_size=200)),
    generate=GenerateConfig(num_models=100, sampler="old", use_ema=True),
    mixed_precision="no",
)

PRESETS = Presets({
    "cpu-mnist": (CPU_MNIST, "spec §15 CPU configuration (MNIST MLP, last Linear, K = 50)"),
    "mnist-cnn": (MNIST_CNN, "issue 8 point 3: MNIST small BN CNN, last two BNs, K = 200, N = 100"),
    "cifar10-subset-cnn": (CIFAR10_SUBSET_CNN, "issue 8 point 3: the same recipe on the CIFAR-10 15k/1k subset"),
    "mnist-cnnmedium-full": (MNIST_CNNMEDIUM_FULL, "spec §12 whole-network generation of mnist_cnnmedium"),
    "new": (NEW, "NEW official code (HEAD 0ecca89), CIFAR-100 / timm ResNet-18, GPU"),
    "old": (OLD, "OLD official code (489e9b1), CIFAR-100 / CIFAR ResNet-18 k200, GPU"),
})
DEFAULT_PRESET = "cpu-mnist"
