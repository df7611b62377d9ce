"""The ``extract`` stage: checkpoint + dataset → a cached features file (spec §2 stage 2).

A generative checkpoint is an exported model folder (``model/`` of a ``train-ddpm`` or ``train-vae`` run, or the
run directory itself) whose ``config.json`` carries, besides the constructor arguments, a ``diffclassify``
entry: ``kind`` (ddpm | vae), ``dataset``, ``image`` (channels, size), ``classes`` and, for a DDPM, its
forward ``process`` (discrete schedule and variance, or v-diffusion).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffcore.data import ImageArrays, cache_dir, load_image_splits
from diffcore.errors import CheckpointError, ConfigError
from diffcore.io import file_sha256
from torch import nn

from diffclassify.config import ExtractConfig, default_timestep
from diffclassify.data import dataset_name, image_spec
from diffclassify.features import (
    ExtractionPlan,
    ExtractionResult,
    block_dims,
    cached_extraction,
    resolve_blocks,
    select_rows,
)

ONLINE_DIR = "model-online"


@dataclass
class Generative:
    """A loaded generative checkpoint: the model, its folder, weights digest and the ``diffclassify`` header."""

    model: nn.Module
    folder: Path
    sha256: str
    info: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.info["kind"]


def checkpoint_folder(path: str | Path, weights: str = "ema") -> Path:
    """The exported model folder of ``path``: ``path/model`` (``path/model-online`` for online weights) when
    ``path`` is a run directory, else ``path`` itself when it holds ``model.safetensors``."""
    path = Path(path).expanduser()
    run_dir = path.parent if path.name in ("model", ONLINE_DIR) and (path / "model.safetensors").exists() else path
    if weights == "online":
        if not (run_dir / ONLINE_DIR / "model.safetensors").exists():
            raise CheckpointError(f"{path} has no {ONLINE_DIR}/ (online weights are written by train-ddpm); "
                                  "use --weights ema")
        return run_dir / ONLINE_DIR
    if (path / "model" / "model.safetensors").exists():
        return path / "model"
    if (path / "model.safetensors").exists():
        return path
    raise CheckpointError(f"{path} is neither a run directory with model/ nor an exported model folder "
                          "(model.safetensors + config.json); pass a train-ddpm or train-vae run")


def load_generative(path: str | Path, weights: str = "ema", device: str = "cpu") -> Generative:
    """A train-ddpm / train-vae checkpoint, or a diffusers ``UNet2DModel`` folder (:mod:`diffclassify.backends`),
    on ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``)."""
    from diffcore.checkpoint import load_pretrained, read_checkpoint_config
    from diffcore.device import resolve_device

    from diffclassify.backends import is_diffusers_unet, load_diffusers

    device = resolve_device(device)
    if is_diffusers_unet(Path(path).expanduser()):
        model, info, sha = load_diffusers(Path(path).expanduser(), device)
        return Generative(model, Path(path).expanduser(), sha, info)
    folder = checkpoint_folder(path, weights)
    header = read_checkpoint_config(folder)
    info = header.get("diffclassify")
    if header.get("package") != "diffclassify" or not isinstance(info, dict) or "kind" not in info:
        raise CheckpointError(f"{folder} is not a diffclassify generative model (its config.json names package "
                              f"{header.get('package')!r}); pass a train-ddpm or train-vae run")
    model = load_pretrained(folder, map_location=device)
    return Generative(model.eval(), folder, file_sha256(folder / "model.safetensors"), info)


def check_source(gen: Generative | None, source: str, path: str) -> None:
    if source == "pixels":
        return
    wanted = "ddpm" if source == "ddpm" else "vae"
    if gen.kind != wanted:
        command = "train-ddpm" if wanted == "ddpm" else "train-vae"
        raise ConfigError(f"--source {source} needs a {wanted.upper()} checkpoint, but {path} holds a {gen.kind} "
                          f"model; pass a {command} run")


def check_images(gen: Generative | None, arrays: ImageArrays, dataset: str) -> None:
    if gen is None:
        return
    spec = image_spec(arrays)
    image = gen.info["image"]
    if (spec.channels, spec.size) != (image["channels"], image["size"]):
        raise ConfigError(f"{gen.folder} was trained on {image['channels']}-channel {image['size']}×{image['size']} "
                          f"images ({gen.info['dataset']}), but {dataset} has {spec.channels}-channel "
                          f"{spec.size}×{spec.size} images")


@dataclass
class Inputs:
    """Everything an extraction needs, resolved and validated (no features computed yet)."""

    config: ExtractConfig
    generative: Generative | None
    train: ImageArrays
    test: ImageArrays
    plan: ExtractionPlan
    dataset: str


def prepare(config: ExtractConfig, data_root: str | None, generative: Generative | None = None,
            splits: tuple[ImageArrays, ImageArrays] | None = None) -> Inputs:
    """Load the checkpoint and data, and check that they fit the config (every error before any work)."""
    if generative is None and config.source != "pixels":
        generative = load_generative(config.model, config.weights, config.device)
    check_source(generative, config.source, config.model)
    dataset = config.dataset or (generative.info["dataset"] if generative else "")
    if not dataset:
        raise ConfigError(f"{config.model} does not say which images it was trained on: pass --dataset")
    train, test = splits or load_image_splits(dataset, data_root)
    check_images(generative, train, dataset)
    model = generative.model if generative else None
    if generative is not None and getattr(model, "label_conditioned", False) and not config.label_conditioning:
        raise ConfigError(f"{generative.folder} is label-conditioned (trained with --label-conditioning): its features "
                          "would leak the labels; pass --label-conditioning to reproduce the original's leaky features")
    if config.label_conditioning and not getattr(model, "label_conditioned", False):
        raise ConfigError(f"--label-conditioning needs a label-conditioned checkpoint; {config.model} is unconditional")
    blocks = resolve_blocks(model, config.source, config.blocks)
    timesteps = config.timesteps
    if config.source == "ddpm":
        timesteps = timesteps or (default_timestep(dataset, image_spec(train).channels),)
        steps = generative.info["process"].get("num_steps", 1000)
        bad = [t for t in timesteps if t >= steps]
        if bad:
            raise ConfigError(f"--timestep {bad[0]} is beyond the model's {steps} steps (0…{steps - 1})")
    for split, arrays, per_class in (("train", train, config.train_per_class), ("test", test, config.test_per_class)):
        if per_class is not None:
            counts = torch.bincount(arrays.labels, minlength=len(arrays.classes))
            smallest = int(counts.argmin())
            if counts[smallest] < per_class:
                raise ConfigError(f"--{split}-per-class {per_class} is larger than class {smallest} of the {dataset} "
                                  f"{split} split, which has {int(counts[smallest])} images")
    plan = ExtractionPlan(source=config.source, blocks=blocks, timesteps=tuple(timesteps),
                          noise_draws=config.noise_draws, seed=config.seed, vae_sample_z=config.vae_sample_z,
                          batch_size=config.batch_size)
    return Inputs(config, generative, train, test, plan, dataset)


def run_extraction(inputs: Inputs, cache: str | Path | None = None) -> ExtractionResult:
    """Features of the first ``train_per_class`` training images per class and the (first ``test_per_class``
    per class of the) test split, from the cache when an identical extraction was done before."""
    config, gen, plan = inputs.config, inputs.generative, inputs.plan
    process = None
    if plan.source == "ddpm":
        from diffclassify.diffusion import make_process

        process = make_process(gen.info["process"])
    train_rows = select_rows(inputs.train.labels, config.train_per_class)
    test_rows = select_rows(inputs.test.labels, config.test_per_class)
    spec = image_spec(inputs.train)
    dims = block_dims(gen.model if gen else None, plan.source, plan.blocks, (spec.channels, spec.size, spec.size))
    key_fields = {
        "checkpoint_sha256": gen.sha256 if gen else None, "source": plan.source, "blocks": list(plan.blocks),
        "timesteps": list(plan.timesteps), "noise_draws": plan.noise_draws, "seed": plan.seed,
        "vae_sample_z": plan.vae_sample_z, "leaky": config.label_conditioning, "dataset": dataset_name(inputs.dataset),
        "process": gen.info.get("process") if gen else None,
    }
    meta = {
        **key_fields, "checkpoint": str(gen.folder) if gen else None,
        "model": type(gen.model).__name__ if gen else None,
        "block_dims": dims, "weights": config.weights if gen else None, "train_per_class": config.train_per_class,
        "test_per_class": config.test_per_class, "num_classes": len(inputs.train.classes),
        "classes": list(inputs.train.classes),
    }
    folder = Path(cache or config.cache_dir or cache_dir("diffclassify", "features"))
    return cached_extraction(
        gen.model if gen else None, process, inputs.train.images, inputs.train.labels, train_rows,
        inputs.test.images, inputs.test.labels, test_rows, plan, meta, key_fields, folder,
        leaky=config.label_conditioning, use_cache=config.cache,
    )


def write_run_features(result: ExtractionResult, run: Any) -> dict[str, Any]:
    """Put the features file into the run directory (a hard link to the cache entry where possible)."""
    import os
    import shutil

    target = run.path / "features.safetensors"
    if run.is_main:
        target.unlink(missing_ok=True)
        try:
            os.link(result.path, target)
        except OSError:
            shutil.copyfile(result.path, target)
    f = result.features
    return {"features": "features.safetensors", "cache": str(result.path), "cached": result.cached,
            "source": f.meta["source"], "dataset": f.meta["dataset"], "blocks": f.meta["blocks"],
            "timesteps": f.meta["timesteps"], "dim": f.dim, "train_images": len(f.train_labels),
            "test_images": len(f.test_labels), "leaky": f.meta["leaky"], "seconds": result.seconds}
