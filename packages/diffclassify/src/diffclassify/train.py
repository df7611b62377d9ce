"""``train-ddpm``, ``train-vae`` and ``sample``: the generative stage on the core's Trainer (spec §3.2, §4, §5).

Both training commands read the *training split without its labels* (only ``--label-conditioning`` uses them,
to reproduce the original's leaky U-Net), run on :class:`diffcore.train.Trainer` — so ``accelerate launch -m
diffclassify train-ddpm ...`` and ``--resume RUN_DIR`` work unchanged — and export safetensors folders whose
``config.json`` carries a ``diffclassify`` entry (kind, dataset, image shape, classes, forward process) that
``extract`` and ``sample`` read back:

* ``train-ddpm`` → ``model/`` (the EMA weights, the ones features come from), ``model-online/``,
  ``samples.png`` (a grid drawn from the EMA model);
* ``train-vae`` → ``model/`` and ``samples.png`` (decoded prior samples, above reconstructions of test images).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from diffcore.checkpoint import export_model
from diffcore.data import ImageArrays, ImageDataset, load_image_splits
from diffcore.errors import ConfigError
from diffcore.runs import RunDir
from diffcore.train import TrainConfig, Trainer

from diffclassify.config import DDPMConfig, VAEConfig
from diffclassify.data import ImageSpec, dataset_name, image_spec
from diffclassify.diffusion import DiscreteProcess, VDiffusionProcess, linear_schedule_kwargs
from diffclassify.models import CifarConvVAE, MnistConvVAE, MyUNet, VDiffUNet, count_parameters

PACKAGE = "diffclassify"


def _limit(arrays: ImageArrays, limit: int | None) -> ImageArrays:
    return arrays if limit is None else ImageArrays(arrays.images[:limit], arrays.labels[:limit], arrays.classes)


def _train_config(config: DDPMConfig | VAEConfig, monitor: str = "val_loss") -> TrainConfig:
    return TrainConfig(epochs=config.epochs, batch_size=config.batch_size, grad_accum_steps=config.grad_accum_steps,
                       max_grad_norm=getattr(config, "max_grad_norm", None), mixed_precision=config.mixed_precision,
                       seed=config.seed, progress=config.progress, monitor=monitor, eval_batch_size=500)


def _signed(images: torch.Tensor) -> torch.Tensor:
    """A batch of uint8 ``[N, C, H, W]`` → float in [−1, 1]."""
    return images.float().div(127.5).sub(1.0)


def _unit(images: torch.Tensor) -> torch.Tensor:
    return images.float().div(255.0)


def image_info(spec: ImageSpec, dataset: str, classes: list[str]) -> dict[str, Any]:
    return {"dataset": dataset_name(dataset), "image": {"channels": spec.channels, "size": spec.size},
            "classes": list(classes)}


# ------------------------------------------------------------------------------------------ DDPM


def denoiser_arch(config: DDPMConfig, spec: ImageSpec) -> str:
    if config.model.arch != "auto":
        return config.model.arch
    return "vdiff" if (spec.channels, spec.size) == (3, 32) else "myunet"


def build_denoiser(config: DDPMConfig, spec: ImageSpec) -> torch.nn.Module:
    """The denoiser for ``spec``'s images; a :class:`ConfigError` when the architecture cannot take them."""
    arch = denoiser_arch(config, spec)
    m = config.model
    try:
        if arch == "vdiff":
            if config.label_conditioning:
                raise ConfigError("--label-conditioning exists only for the MNIST U-Net (model.arch=myunet)")
            if config.forward_variance != "standard":
                raise ConfigError("--legacy-noise applies to the discrete DDPM (model.arch=myunet); the v-diffusion "
                                  "model has its own continuous schedule")
            return VDiffUNet(base_width=m.base_width, in_channels=spec.channels, image_size=spec.size,
                             dropout=m.dropout)
        return MyUNet(image_size=spec.size, in_channels=spec.channels, widths=m.widths, time_dim=m.time_dim,
                      num_steps=config.num_steps, time_table=m.time_table,
                      num_classes=spec.num_classes if config.label_conditioning else None)
    except ValueError as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"model.arch={arch} cannot take {spec.channels}×{spec.size}×{spec.size} images: {err}") \
            from None


def build_process(config: DDPMConfig, arch: str) -> DiscreteProcess | VDiffusionProcess:
    if arch == "vdiff":
        return VDiffusionProcess()
    from diffcore.ddpm import DDPM

    schedule = DDPM(**linear_schedule_kwargs(config.num_steps, config.beta_start, config.beta_end))
    return DiscreteProcess(schedule, config.forward_variance)


def process_info(config: DDPMConfig, arch: str) -> dict[str, Any]:
    if arch == "vdiff":
        return {"type": "vdiff", "num_steps": VDiffusionProcess.num_steps}
    return {"type": "discrete", "num_steps": config.num_steps, "beta_start": config.beta_start,
            "beta_end": config.beta_end, "forward_variance": config.forward_variance}


def validate_ddpm(config: DDPMConfig, data_root: str | None) -> ImageArrays:
    """Load the training split and build the model once, so every error comes before the run directory."""
    _train_config(config).check()  # e.g. fp16 without a GPU, before the run directory exists
    (train,) = load_image_splits(config.dataset, data_root, ("train",))
    train = _limit(train, config.train_limit)
    build_denoiser(config, image_spec(train))
    return train


def run_train_ddpm(config: DDPMConfig, run: RunDir, train: ImageArrays) -> dict[str, Any]:
    from diffcore.ddpm import EMA

    started = time.perf_counter()
    spec = image_spec(train)
    arch = denoiser_arch(config, spec)
    torch.manual_seed(config.seed)
    model = build_denoiser(config, spec)
    process = build_process(config, arch)
    if config.compile:
        model.compile()
    conditional = config.label_conditioning

    def loss_fn(net: torch.nn.Module, batch: Any) -> torch.Tensor:
        images, labels = batch
        return process.loss(net, _signed(images), labels if conditional else None)

    optimizer_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_cls(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    ema = EMA(model, decay=config.ema_decay, start_step=config.ema_start)
    trainer = Trainer(model, optimizer, _train_config(config), ImageDataset(train), run=run, loss_fn=loss_fn, ema=ema)
    acc = trainer.accelerator
    if acc.num_processes > 1:
        # The Trainer seeds every process alike; each process must draw its own t and ε for its share of the batch.
        torch.manual_seed(config.seed + acc.process_index)
    summary = trainer.fit(resume=run.resumed)
    online = trainer.unwrapped_model()
    ema_active = summary["steps"] > config.ema_start
    # An EMA that never started still holds the initial weights: export the trained ones instead.
    averaged = ema.module if ema_active else online
    results: dict[str, Any] = {
        "arch": arch, "dataset": dataset_name(config.dataset), "params": count_parameters(online),
        "train_images": len(train), "epochs": summary["epochs"], "steps": summary["steps"],
        "train_loss_final": _last_train_loss(run), "forward_variance": config.forward_variance,
        "label_conditioned": conditional, "ema_active": ema_active,
    }
    if run.is_main:
        info = {"kind": "ddpm", **image_info(spec, config.dataset, train.classes),
                "process": process_info(config, arch), "label_conditioned": conditional,
                "leaky": conditional}
        name = "diffclassify.vdiff_unet" if arch == "vdiff" else "diffclassify.myunet"
        export_model(averaged, run.path / "model", name=name, config=averaged.config, package=PACKAGE,
                     extra={"diffclassify": {**info, "weights": "ema" if ema_active else "online"}})
        export_model(online, run.path / "model-online", name=name, config=online.config, package=PACKAGE,
                     extra={"diffclassify": {**info, "weights": "online"}})
        if config.samples:
            sample_started = time.perf_counter()
            images = draw_samples(averaged, process, spec, config.samples, config.sampler, config.sample_steps,
                                  clip=config.clip_x0, seed=config.seed,
                                  num_classes=spec.num_classes if conditional else None)
            from diffclassify.plots import save_image_grid

            save_image_grid(images, run.path / "samples.png",
                            title=f"{arch} on {dataset_name(config.dataset)}: {summary['steps']} steps, EMA, "
                                  f"{config.sampler}")
            results["samples"] = "samples.png"
            results["sample_seconds"] = time.perf_counter() - sample_started
    results["seconds"] = time.perf_counter() - started
    return results


def _last_train_loss(run: RunDir) -> float | None:
    metrics = run.read_metrics() if run.is_main else []
    return metrics[-1].get("train_loss") if metrics else None


@torch.no_grad()
def draw_samples(model: torch.nn.Module, process: DiscreteProcess | VDiffusionProcess, spec: ImageSpec, count: int,
                 sampler: str, steps: int | None, clip: bool = False, seed: int = 0, eta: float | None = None,
                 num_classes: int | None = None) -> torch.Tensor:
    """``count`` images in [0, 1] ``[count, C, H, W]`` from the denoiser (class-by-class when conditional)."""
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    shape = (count, spec.channels, spec.size, spec.size)
    if isinstance(process, VDiffusionProcess):
        x = process.sample(model, shape, steps=steps, eta=1.0 if eta is None else eta, generator=generator,
                           clip_sample=clip, device=device)
    else:
        labels = None if num_classes is None else torch.arange(count, device=device) % num_classes
        x = process.sample(model, shape, sampler=sampler, steps=steps, eta=0.0 if eta is None else eta,
                           generator=generator, clip_sample=clip, labels=labels)
    return ((x.clamp(-1, 1) + 1) / 2).cpu()


# ------------------------------------------------------------------------------------------ VAE


def vae_arch(config: VAEConfig, spec: ImageSpec) -> str:
    if config.arch != "auto":
        return config.arch
    return "cifar" if (spec.channels, spec.size) == (3, 32) else "mnist"


def build_vae(config: VAEConfig, spec: ImageSpec) -> MnistConvVAE | CifarConvVAE:
    arch = vae_arch(config, spec)
    try:
        if arch == "cifar":
            return CifarConvVAE(in_channels=spec.channels, latent_dim=config.latent_dim, width=config.width,
                                beta=config.beta, image_size=spec.size)
        if config.beta != 1.0:
            raise ConfigError("beta applies to the CIFAR VAE (arch=cifar); the MNIST VAE's loss is BCE + KL")
        return MnistConvVAE(image_size=spec.size, in_channels=spec.channels, latent_dim=config.latent_dim)
    except ValueError as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"arch={arch} cannot take {spec.channels}×{spec.size}×{spec.size} images: {err}") from None


def validate_vae(config: VAEConfig, data_root: str | None) -> tuple[ImageArrays, ImageArrays]:
    _train_config(config).check()
    train, test = load_image_splits(config.dataset, data_root)
    train = _limit(train, config.train_limit)
    build_vae(config, image_spec(train))
    return train, test


def run_train_vae(config: VAEConfig, run: RunDir, train: ImageArrays, test: ImageArrays) -> dict[str, Any]:
    started = time.perf_counter()
    spec = image_spec(train)
    arch = vae_arch(config, spec)
    torch.manual_seed(config.seed)
    model = build_vae(config, spec)
    scale = _unit if arch == "mnist" else _signed
    if config.compile:
        model.compile()

    def loss_fn(net: torch.nn.Module, batch: Any) -> torch.Tensor:
        return net.loss(scale(batch[0]))["loss"]

    def eval_fn(net: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        recon, kl = net.elbo_terms(scale(batch[0]))
        return {"loss": recon + net.config.get("beta", 1.0) * kl, "kl": kl}

    def metrics_fn(gathered: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"loss": gathered["loss"].mean().item(), "kl": gathered["kl"].mean().item()}

    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    trainer = Trainer(model, optimizer, _train_config(config, "test_loss"), ImageDataset(train),
                      {"test": ImageDataset(test)}, run=run, loss_fn=loss_fn, eval_fn=eval_fn, metrics_fn=metrics_fn)
    summary = trainer.fit(resume=run.resumed)
    final = summary["final_metrics"] or trainer.evaluate()
    net = trainer.unwrapped_model().eval()
    results: dict[str, Any] = {
        "arch": arch, "dataset": dataset_name(config.dataset), "params": count_parameters(net),
        "latent_dim": config.latent_dim, "train_images": len(train), "test_images": len(test),
        "epochs": summary["epochs"], "steps": summary["steps"], "train_loss_final": _last_train_loss(run),
        "test_loss_final": final.get("test_loss"), "test_kl_final": final.get("test_kl"),
    }
    if run.is_main:
        name = "diffclassify.cifar_vae" if arch == "cifar" else "diffclassify.mnist_vae"
        export_model(net, run.path / "model", name=name, config=net.config, package=PACKAGE,
                     extra={"diffclassify": {"kind": "vae", **image_info(spec, config.dataset, train.classes)}})
        if config.samples:
            from diffclassify.plots import save_image_grid

            save_image_grid(vae_samples(net, config.samples, test, scale, config.seed), run.path / "samples.png",
                            title=f"{arch} VAE on {dataset_name(config.dataset)}: prior samples (top), test images "
                                  "and reconstructions (bottom)")
            results["samples"] = "samples.png"
    results["seconds"] = time.perf_counter() - started
    return results


@torch.no_grad()
def vae_samples(model: MnistConvVAE | CifarConvVAE, count: int, test: ImageArrays | None, scale: Any,
                seed: int = 0) -> torch.Tensor:
    """Decoded prior samples, then (with ``test``) pairs of test images and their reconstructions (z = μ)."""
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    z = torch.randn(count, model.config["latent_dim"], generator=generator, device=device)
    parts = [model.reconstruct(model.decode(z))]
    if test is not None:
        half = max(1, count // 2)
        x = scale(test.images[:half].permute(0, 3, 1, 2)).to(device)
        recon = model.reconstruct(model.decode(model.encode(x)[0]))
        original = x if scale is _unit else (x + 1) / 2
        parts += [original, recon]
    return torch.cat(parts).cpu()
