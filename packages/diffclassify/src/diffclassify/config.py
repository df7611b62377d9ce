"""Configs of every command and the named presets (spec §3.2, §4, §5, §6, §8, §13). Torch-free.

Each config is a frozen dataclass with a ``check()`` that validates its own fields (``diffcore.config.require``
style: one :class:`~diffcore.errors.ConfigError` saying what is wrong and what to do), so a whole configuration
is rejected before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from diffcore.config import Presets, require
from diffcore.device import check_device

SOURCES = ("ddpm", "vae-encoder", "vae-decoder", "vae-mix", "pixels")
HEADS = ("linear", "mlp")
#: The original MNIST timestep sweep (linear head, 32 labels per class), spec §6.
T_SWEEP = (3, 5, 10, 15, 20, 25, 30, 50, 100, 250, 500, 600, 700, 800, 900, 950, 990, 999)
#: README: t = 100 (of 1000) for MNIST, t = 50 for CIFAR-10 (= 0.05 on the v-diffusion's continuous scale).
DEFAULT_TIMESTEP = {"mnist": 100, "digits": 100, "cifar10": 50, "cifar10-subset": 50, "cifar100": 50}
Precision = Literal["no", "fp16", "bf16"]


def default_timestep(dataset: str, channels: int | None = None) -> int:
    """The README's feature timestep for ``dataset`` (folders: 100 for grey images, 50 for colour)."""
    if dataset in DEFAULT_TIMESTEP:
        return DEFAULT_TIMESTEP[dataset]
    return 50 if channels == 3 else 100


def _positive(name: str, value: int | float | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    require(value is not None and value > 0, f"{name} must be positive, got {value}")


def _timesteps(name: str, values: tuple[int, ...], num_steps: int = 1000) -> None:
    bad = [t for t in values if not 0 <= t < num_steps]
    require(not bad, f"{name}: timesteps must lie in 0…{num_steps - 1}, got {', '.join(map(str, bad))}")


# ------------------------------------------------------------------------------------------ train-ddpm


@dataclass(frozen=True)
class DenoiserConfig:
    """The denoiser: ``myunet`` (spec §3.1) or ``vdiff`` (spec §4); ``auto`` = vdiff for 3-channel 32×32."""

    arch: Literal["auto", "myunet", "vdiff"] = "auto"
    widths: tuple[int, ...] = (10, 20, 40)
    time_dim: int = 128
    time_table: Literal["sinusoid", "original"] = "sinusoid"
    base_width: int = 64
    dropout: float = 0.1

    def check(self) -> None:
        require(len(self.widths) == 3 and min(self.widths) > 0,
                f"model.widths must be three positive widths (MyUNet's three levels), got {self.widths}")
        _positive("model.time_dim", self.time_dim)
        require(self.time_dim % 2 == 0, f"model.time_dim must be even (sin/cos halves), got {self.time_dim}")
        _positive("model.base_width", self.base_width)
        require(0.0 <= self.dropout < 1.0, f"model.dropout must lie in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class DDPMConfig:
    """``train-ddpm``: an unconditional denoiser on unlabelled training images (spec §3.2, §4).

    ``forward_variance="original"`` (``--legacy-noise``) trains with the original's √(1 − √ᾱ_t) noise std.
    ``label_conditioning`` reproduces the original's label-conditioned U-Net (its features leak labels).
    ``ema_decay``/``ema_start``: EMA ← decay·EMA + (1 − decay)·model every step from ``ema_start`` (the EMA
    copy is initialised from the model then); ``model/`` holds the EMA weights, ``model-online/`` the others.
    """

    dataset: str = "mnist"
    model: DenoiserConfig = field(default_factory=DenoiserConfig)
    num_steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    forward_variance: Literal["standard", "original"] = "standard"
    label_conditioning: bool = False
    optimizer: Literal["adamw", "adam"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    ema_decay: float = 0.99
    ema_start: int = 2000
    epochs: int = 30
    batch_size: int = 128
    grad_accum_steps: int = 1
    max_grad_norm: float | None = None
    mixed_precision: Precision = "no"
    train_limit: int | None = None
    compile: bool = False
    samples: int = 64
    sampler: Literal["ddpm", "ddim"] = "ddpm"
    sample_steps: int | None = None
    clip_x0: bool = False
    seed: int = 0
    progress: bool = True

    def check(self) -> None:
        require(self.dataset != "", "dataset is empty: pass --dataset mnist|cifar10|cifar10-subset|digits|DIR")
        self.model.check()
        require(self.num_steps >= 2, f"num_steps must be at least 2, got {self.num_steps}")
        require(0 < self.beta_start < self.beta_end < 1,
                f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")
        _positive("lr", self.lr)
        require(self.weight_decay >= 0, f"weight_decay must be ≥ 0, got {self.weight_decay}")
        require(0.0 <= self.ema_decay < 1.0, f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        require(self.ema_start >= 0, f"ema_start must be ≥ 0, got {self.ema_start}")
        _positive("epochs", self.epochs)
        _positive("batch_size", self.batch_size)
        _positive("grad_accum_steps", self.grad_accum_steps)
        _positive("max_grad_norm", self.max_grad_norm, allow_none=True)
        _positive("train_limit", self.train_limit, allow_none=True)
        require(self.samples >= 0, f"samples must be ≥ 0, got {self.samples}")
        _positive("sample_steps", self.sample_steps, allow_none=True)
        require(self.sample_steps is None or self.sample_steps <= self.num_steps,
                f"sample_steps ({self.sample_steps}) cannot exceed num_steps ({self.num_steps})")


DDPM_PRESETS: Presets[DDPMConfig] = Presets({
    "mnist": (DDPMConfig(),
              "scripts/mnist_train.py: batch 128, AdamW lr 1e-3, wd 0, 30 epochs, EMA 0.99 from step 2000"),
    "mnist-notebook": (DDPMConfig(batch_size=1024, lr=0.01, epochs=86, clip_x0=True),
                       "notebooks: batch 1024, lr 0.01, 5,000 iterations (≈ 86 epochs of 60k), clip_x0"),
    "mnist-cpu": (DDPMConfig(epochs=4, compile=True, ema_start=500, sampler="ddim", sample_steps=100, clip_x0=True),
                  "≈ 8 min on 2 idle CPU cores: 4 epochs of the original recipe (EMA from step 500), compiled; "
                  "samples with x̂₀ clipped (unclipped, this short a training drifts while sampling)"),
    "mnist-converged": (DDPMConfig(compile=True, sampler="ddim", sample_steps=100),
                        "the original recipe trained to convergence on a CPU (30 epochs, 14,070 steps, EMA 0.99 from "
                        "step 2000), compiled; 100-step DDIM samples without clipping"),
    "digits": (DDPMConfig(dataset="digits", model=DenoiserConfig(widths=(8, 16, 32)), epochs=30, batch_size=64,
                          ema_start=100, sampler="ddim", sample_steps=50, samples=36, clip_x0=True),
               "seconds on a CPU: scikit-learn's 8×8 digits; samples with x̂₀ clipped (660 steps are too few to "
               "sample unclipped: the grid saturates)"),
    "cifar10": (DDPMConfig(dataset="cifar10", model=DenoiserConfig(arch="vdiff"), optimizer="adam", lr=2e-4,
                           batch_size=100, epochs=30, ema_decay=0.998, ema_start=0, sample_steps=500,
                           mixed_precision="fp16"),
                "Crowson's v-diffusion CIFAR-10 v2: Adam 2e-4, batch 100, AMP, 30 epochs (EMA 0.998 throughout)"),
    "cifar10-subset-cpu": (DDPMConfig(dataset="cifar10-subset", model=DenoiserConfig(arch="vdiff", base_width=16),
                                      optimizer="adam", lr=2e-4, batch_size=100, epochs=1, ema_decay=0.99,
                                      ema_start=0, sample_steps=50, samples=36),
                           "CPU smoke run: the v-diffusion layout at base width 16, one epoch of the 15k subset"),
})


# ------------------------------------------------------------------------------------------ train-vae


@dataclass(frozen=True)
class VAEConfig:
    """``train-vae``: the VAE baselines (spec §5); ``arch=auto`` picks ``cifar`` for 3-channel 32×32 images."""

    dataset: str = "mnist"
    arch: Literal["auto", "mnist", "cifar"] = "auto"
    latent_dim: int = 6
    width: int = 32
    beta: float = 1.0
    lr: float = 1e-3
    epochs: int = 10
    batch_size: int = 64
    grad_accum_steps: int = 1
    mixed_precision: Precision = "no"
    train_limit: int | None = None
    compile: bool = False
    samples: int = 64
    seed: int = 0
    progress: bool = True

    def check(self) -> None:
        require(self.dataset != "", "dataset is empty: pass --dataset mnist|cifar10|cifar10-subset|digits|DIR")
        _positive("latent_dim", self.latent_dim)
        _positive("width", self.width)
        require(self.beta >= 0, f"beta must be ≥ 0, got {self.beta}")
        _positive("lr", self.lr)
        _positive("epochs", self.epochs)
        _positive("batch_size", self.batch_size)
        _positive("grad_accum_steps", self.grad_accum_steps)
        _positive("train_limit", self.train_limit, allow_none=True)
        require(self.samples >= 0, f"samples must be ≥ 0, got {self.samples}")


VAE_PRESETS: Presets[VAEConfig] = Presets({
    "mnist": (VAEConfig(), "scripts/VAE/train_vae_mnist.py: latent 6, Adam 1e-3, batch 64, 10 epochs"),
    "mnist-cpu": (VAEConfig(epochs=2), "CPU: two epochs of the MNIST recipe"),
    "digits": (VAEConfig(dataset="digits", epochs=20, batch_size=64), "seconds on a CPU: 8×8 digits"),
    "cifar10": (VAEConfig(dataset="cifar10", arch="cifar", latent_dim=512, lr=3e-4, batch_size=128, epochs=100),
                "scripts/VAE/train_vae_cifar.py: latent 512, β 1, Adam 3e-4, batch 128, 100 epochs"),
    "cifar10-subset-cpu": (VAEConfig(dataset="cifar10-subset", arch="cifar", latent_dim=128, width=16, lr=3e-4,
                                     batch_size=128, epochs=1),
                           "CPU smoke run: the CIFAR VAE at width 16, latent 128, one epoch of the 15k subset"),
})


# ------------------------------------------------------------------------------------------ extract


@dataclass(frozen=True)
class ExtractConfig:
    """``extract``: pooled features of a train subset and the test split, cached as safetensors.

    ``train_per_class``/``test_per_class``: keep the first N images of every class (None: the whole split).
    ``timesteps``: empty → the README's t for the dataset; several concatenate. ``blocks``: empty → the source's
    default taps. ``label_conditioning``: required to extract from a label-conditioned checkpoint, whose
    features are then computed with the true labels (the original's leak) and marked ``leaky``.
    """

    model: str = ""
    source: Literal["ddpm", "vae-encoder", "vae-decoder", "vae-mix", "pixels"] = "ddpm"
    dataset: str = ""
    timesteps: tuple[int, ...] = ()
    blocks: tuple[str, ...] = ()
    noise_draws: int = 1
    weights: Literal["ema", "online"] = "ema"
    train_per_class: int | None = None
    test_per_class: int | None = None
    vae_sample_z: bool = False
    label_conditioning: bool = False
    batch_size: int = 256
    device: str = "cpu"
    cache: bool = True
    cache_dir: str | None = None
    seed: int = 0

    def check(self) -> None:
        require(self.source == "pixels" or self.model != "",
                f"--source {self.source} needs --model DIR (a train-ddpm/train-vae run or its model/ folder)")
        require(self.source != "pixels" or self.dataset != "", "--source pixels needs --dataset")
        require(not (self.source != "ddpm" and self.timesteps),
                f"--timestep applies to --source ddpm only, not {self.source}")
        _timesteps("timesteps", self.timesteps)
        require(len(set(self.timesteps)) == len(self.timesteps), f"--timestep lists a step twice: {self.timesteps}")
        _positive("noise_draws", self.noise_draws)
        require(self.noise_draws == 1 or self.source == "ddpm" or self.vae_sample_z,
                "--noise-draws > 1 needs --source ddpm, or a VAE source with --vae-sample-z")
        require(not self.vae_sample_z or self.source in ("vae-decoder", "vae-mix"),
                "--vae-sample-z changes only decoder features: use it with --source vae-decoder or vae-mix")
        require(not self.label_conditioning or self.source == "ddpm",
                "--label-conditioning applies to --source ddpm only")
        _positive("train_per_class", self.train_per_class, allow_none=True)
        _positive("test_per_class", self.test_per_class, allow_none=True)
        _positive("batch_size", self.batch_size)
        check_device(self.device)


# ------------------------------------------------------------------------------------------ fit / sweep


@dataclass(frozen=True)
class HeadConfig:
    """The few-shot protocol (spec §6): Adam lr 1e-3, batch 32, 90 epochs, hidden 128 for ``mlp``.

    ``standardize`` (default on; the original feeds raw features): z-score every feature dimension with the
    mean and std of the features file's training rows, an unlabelled pool, so no label is involved. Pooled
    U-Net activations vary little from image to image around a large mean, and raw, they leave a head trained
    with these few Adam steps near chance (digits: 10 % raw, 50 % standardised at 10 labels per class); a
    linear probe on standardised features is the usual protocol (MAE, DDAE: BatchNorm without affine).

    ``split``: ``first`` = the first s images of every class (the original; seeds then vary only the head's
    initialisation and data order), ``random`` = s images per class drawn per seed. ``test_source``: ``test``
    = the real test split (``test_per_class`` keeps its first k per class), ``train-next`` = the original's
    next ``test_per_class`` (default: s) training images of every class.
    """

    epochs: int = 90
    batch_size: int = 32
    lr: float = 1e-3
    hidden: int = 128
    standardize: bool = True
    split: Literal["first", "random"] = "first"
    test_source: Literal["test", "train-next"] = "test"
    test_per_class: int | None = None
    device: str = "cpu"

    def check(self) -> None:
        _positive("epochs", self.epochs)
        _positive("batch_size", self.batch_size)
        _positive("lr", self.lr)
        _positive("hidden", self.hidden)
        _positive("test_per_class", self.test_per_class, allow_none=True)
        check_device(self.device)


@dataclass(frozen=True)
class FitConfig:
    """``fit``: heads on one features file, S labelled images per class, mean ± std over seeds."""

    features: str = ""
    head: Literal["linear", "mlp"] = "linear"
    per_class: tuple[int, ...] = (32,)
    seeds: int = 3
    seed: int = 0
    dataset: str | None = None
    source: str | None = None
    protocol: HeadConfig = field(default_factory=HeadConfig)

    def check(self) -> None:
        require(self.features != "", "--features FILE is required (write one with `diffclassify extract`)")
        require(len(self.per_class) > 0 and min(self.per_class) > 0,
                f"--per-class needs positive sizes, got {self.per_class}")
        _positive("seeds", self.seeds)
        require(self.source is None or self.source in SOURCES,
                f"--source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        self.protocol.check()


@dataclass(frozen=True)
class SweepConfig:
    """``sweep``: labels per class × heads × feature sources, and a timestep sweep of the DDPM features.

    ``ddpm``/``vae``: checkpoints (run directories or model folders); a source whose checkpoint is not given
    is an error. ``features``: extra feature files (from ``extract``) to include as they are.
    ``train_per_class`` (None: what the sizes need) bounds the training images whose features are extracted.
    ``t_list`` empty skips the timestep sweep; it uses ``t_sizes`` × ``t_heads`` and ``t_test_per_class``.
    """

    dataset: str = "mnist"
    ddpm: str = ""
    vae: str = ""
    sources: tuple[str, ...] = ("ddpm", "vae-encoder", "vae-decoder", "pixels")
    features: tuple[str, ...] = ()
    heads: tuple[str, ...] = HEADS
    sizes: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128, 256, 512)
    seeds: int = 3
    seed: int = 0
    timesteps: tuple[int, ...] = ()
    blocks: tuple[str, ...] = ()
    noise_draws: int = 1
    weights: Literal["ema", "online"] = "ema"
    vae_sample_z: bool = False
    t_list: tuple[int, ...] = T_SWEEP
    t_sizes: tuple[int, ...] = (32,)
    t_heads: tuple[str, ...] = ("linear",)
    t_test_per_class: int | None = None
    train_per_class: int | None = None
    extract_test_per_class: int | None = None
    batch_size: int = 256
    cache: bool = True
    cache_dir: str | None = None
    protocol: HeadConfig = field(default_factory=HeadConfig)

    def check(self) -> None:
        unknown = [s for s in self.sources if s not in SOURCES]
        require(not unknown, f"unknown source {', '.join(unknown)}; valid sources: {', '.join(SOURCES)}")
        require(bool(self.sources) or bool(self.features), "nothing to sweep: give --sources or --features")
        require(not ("ddpm" in self.sources and self.ddpm == ""), "--sources includes ddpm: pass --ddpm RUN_DIR")
        require(not (any(s.startswith("vae") for s in self.sources) and self.vae == ""),
                "--sources includes a VAE source: pass --vae RUN_DIR")
        bad_heads = [h for h in (*self.heads, *self.t_heads) if h not in HEADS]
        require(not bad_heads, f"unknown head {', '.join(bad_heads)}; valid heads: {', '.join(HEADS)}")
        require(len(self.heads) > 0, "--heads is empty")
        for name, sizes in (("sizes", self.sizes), ("t_sizes", self.t_sizes)):
            require(len(sizes) > 0 and min(sizes) > 0, f"{name} needs positive sizes, got {sizes}")
        _positive("seeds", self.seeds)
        _timesteps("timesteps", self.timesteps)
        _timesteps("t_list", self.t_list)
        require(not self.t_list or "ddpm" in self.sources,
                "the timestep sweep (--t-list) needs the ddpm source; pass --t-list '' to skip it")
        _positive("noise_draws", self.noise_draws)
        _positive("t_test_per_class", self.t_test_per_class, allow_none=True)
        _positive("train_per_class", self.train_per_class, allow_none=True)
        _positive("extract_test_per_class", self.extract_test_per_class, allow_none=True)
        _positive("batch_size", self.batch_size)
        self.protocol.check()


SWEEP_PRESETS: Presets[SweepConfig] = Presets({
    "mnist": (SweepConfig(), "the original's MNIST sweeps: 2…512 labels per class, the 18-point t sweep at 32/class"),
    "mnist-cpu": (SweepConfig(sizes=(1, 2, 5, 10, 20, 50), t_test_per_class=100),
                  "the CPU run of issue 9: 1, 2, 5, 10, 20, 50 labels per class, 3 seeds, full test split; "
                  "the t sweep on 100 test images per class"),
    "digits": (SweepConfig(dataset="digits", sizes=(1, 2, 5, 10), t_list=(3, 10, 30, 100, 300, 600, 900),
                           t_sizes=(10,),
                           protocol=HeadConfig(epochs=30)),
               "seconds on a CPU: 8×8 digits"),
    "cifar10": (SweepConfig(dataset="cifar10", sources=("ddpm", "vae-encoder", "vae-decoder", "vae-mix", "pixels"),
                            sizes=(2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)),
                "the original's CIFAR-10 sizes, 2…1024 labels per class"),
    "cifar10-subset": (SweepConfig(dataset="cifar10-subset",
                                   sources=("ddpm", "vae-encoder", "vae-decoder", "vae-mix", "pixels"),
                                   sizes=(1, 2, 5, 10, 20, 50), t_list=(10, 50, 100, 250, 500, 900)),
                       "the 15k/1k CIFAR-10 subset: 1…50 labels per class and a short t sweep"),
})


# ------------------------------------------------------------------------------------------ sample


@dataclass(frozen=True)
class SampleConfig:
    """``sample``: a PNG grid from a DDPM (``sampler``/``steps``/``eta``) or a VAE (prior samples) checkpoint."""

    model: str = ""
    count: int = 64
    sampler: Literal["ddpm", "ddim"] = "ddim"
    steps: int | None = None
    eta: float | None = None
    clip_x0: bool = False
    weights: Literal["ema", "online"] = "ema"
    device: str = "cpu"
    seed: int = 0

    def check(self) -> None:
        require(self.model != "", "--model DIR is required (a train-ddpm or train-vae run)")
        _positive("count", self.count)
        _positive("steps", self.steps, allow_none=True)
        require(self.eta is None or self.eta >= 0, f"eta must be ≥ 0, got {self.eta}")
        check_device(self.device)


def preset_for(presets: Presets, dataset: str, fallback: str) -> str:
    """The preset named after ``dataset`` (``cifar10-subset`` → ``cifar10``), else ``fallback``."""
    names = list(presets)  # (Presets raises on unknown keys, so `in` cannot ask it directly)
    for name in (dataset, dataset.removesuffix("-subset")):
        if name in names:
            return name
    return fallback
