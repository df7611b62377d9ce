"""Feature extraction, label-free by construction, and the safetensors feature cache (spec §2 stage 2, §6, §15.3).

Sources:

* ``ddpm`` — noise each image to timestep T with the model's forward process, run the denoiser once and
  global-average-pool the chosen blocks (``MyUNet``: b_mid, b4, b5, b_out → 80-d; ``VDiffUNet``: mid, dec8,
  dec16, dec32 → 512-d). ``noise_draws`` K averages the pooled features over K noise draws; several
  timesteps concatenate (multi-t features, spec §14).
* ``vae-encoder`` / ``vae-decoder`` / ``vae-mix`` — pooled VAE activations (decoder on z = μ unless
  ``vae_sample_z``; with it the K draws of z are averaged).
* ``pixels`` — the image itself, flattened, in [0, 1].

:func:`extract_features` takes images only: no label ever reaches the model. A label-conditioned U-Net (the
original's leak, spec §9) is refused there; :func:`extract_leaky_features` is the separate, explicitly named
path that reproduces the original by feeding the true labels, and its output is marked ``leaky``.

Noise is a function of (seed, split, timestep, image position): every image draws its own K noise tensors
from one stream per (split, timestep), so the features do not depend on the batch size.

A :class:`FeatureSet` file (safetensors) holds ``train_features [N, d]``, ``train_labels``, ``train_index``
(positions in the dataset's train split), the same three for the test split, and a JSON header (dataset,
source, blocks, dims, timesteps, checkpoint and its sha256, seeds, cache key, ``leaky``). Files are cached in
``cache_dir("diffclassify", "features")`` under a key of everything that determines their content.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from diffcore.errors import ConfigError, DataError
from torch import nn

from diffclassify.data import first_per_class, to_signed, to_unit

Source = Literal["ddpm", "vae-encoder", "vae-decoder", "vae-mix", "pixels"]
SOURCES: tuple[str, ...] = ("ddpm", "vae-encoder", "vae-decoder", "vae-mix", "pixels")
FORMAT = "diffclassify.features/1"
TENSORS = ("train_features", "train_labels", "train_index", "test_features", "test_labels", "test_index")


# ------------------------------------------------------------------------------------------ blocks


def valid_blocks(model: nn.Module | None, source: str) -> tuple[str, ...]:
    """The tap names ``source`` may use on ``model`` (encoder taps for vae-encoder, and so on)."""
    if source == "pixels":
        return ()
    if source == "ddpm":
        return tuple(model.feature_dims())
    if source == "vae-encoder":
        return model.ENCODER_TAPS
    if source == "vae-decoder":
        return model.DECODER_TAPS
    return model.ENCODER_TAPS + model.DECODER_TAPS


def default_blocks(model: nn.Module | None, source: str) -> tuple[str, ...]:
    """The original's feature blocks for ``source`` (all VAE taps of the chosen side; the four decoder taps)."""
    return model.DEFAULT_TAPS if source == "ddpm" else valid_blocks(model, source)


def resolve_blocks(model: nn.Module | None, source: str, blocks: Sequence[str] | None) -> tuple[str, ...]:
    """``blocks`` checked against the source's taps (a :class:`ConfigError` lists the valid ones), or the default."""
    valid = valid_blocks(model, source)
    if source == "pixels":
        if blocks:
            raise ConfigError("--blocks does not apply to --source pixels (the features are the image itself)")
        return ()
    if not blocks:
        return default_blocks(model, source)
    unknown = [b for b in blocks if b not in valid]
    if unknown:
        raise ConfigError(f"unknown block {', '.join(map(repr, unknown))} for --source {source} on "
                          f"{type(model).__name__}; valid blocks: {', '.join(valid)}")
    if len(set(blocks)) != len(blocks):
        raise ConfigError(f"--blocks lists a block twice: {','.join(blocks)}")
    return tuple(blocks)


def block_dims(model: nn.Module | None, source: str, blocks: Sequence[str], image_shape: Sequence[int]) -> list[int]:
    if source == "pixels":
        return [int(np.prod(image_shape))]
    dims = model.feature_dims()
    return [dims[b] for b in blocks]


# ------------------------------------------------------------------------------------------ extraction


def pool(activation: torch.Tensor) -> torch.Tensor:
    """Global average pool: ``[N, C, H, W]`` → ``[N, C]``; 2-D activations pass through."""
    return activation.mean(dim=(2, 3)) if activation.dim() == 4 else activation


def _noise_stream(seed: int, split: str, index: int, device: torch.device) -> torch.Generator:
    stream = np.random.SeedSequence([seed, {"train": 0, "test": 1}[split], index]).generate_state(1)[0]
    return torch.Generator(device).manual_seed(int(stream))


@dataclass(frozen=True)
class ExtractionPlan:
    """Everything that turns images into features, except the images (and never their labels)."""

    source: str
    blocks: tuple[str, ...] = ()
    timesteps: tuple[int, ...] = ()
    noise_draws: int = 1
    seed: int = 0
    vae_sample_z: bool = False
    batch_size: int = 256


def _features_fn(model: nn.Module | None, process: Any, plan: ExtractionPlan
                 ) -> Callable[[torch.Tensor, list[torch.Generator], torch.Tensor | None], torch.Tensor]:
    """``fn(x_uint8 [B, H, W, C], generators, labels or None) → [B, d]`` for one batch."""
    k = plan.noise_draws

    def ddpm(images: torch.Tensor, gens: list[torch.Generator], labels: torch.Tensor | None) -> torch.Tensor:
        x0 = to_signed(images).to(_device(model))
        rep = x0.repeat_interleave(k, dim=0)  # [B·K, C, H, W]: image-major, so draws follow image order
        extra = {} if labels is None else {"y": labels.to(x0.device).repeat_interleave(k)}
        out = []
        for timestep, gen in zip(plan.timesteps, gens, strict=True):
            noise = torch.randn(rep.shape, generator=gen, device=rep.device)
            x_t, model_time = process.noise(rep, timestep, noise)
            acts = model.features(x_t, model_time, plan.blocks, **extra)
            pooled = torch.cat([pool(acts[b]) for b in plan.blocks], dim=1)
            out.append(pooled.view(len(x0), k, -1).mean(1))
        return torch.cat(out, dim=1)

    def vae(images: torch.Tensor, gens: list[torch.Generator], labels: torch.Tensor | None) -> torch.Tensor:
        model_range = to_unit if type(model).__name__ == "MnistConvVAE" else to_signed
        x = model_range(images).to(_device(model))
        draws = k if plan.vae_sample_z else 1
        rep = x.repeat_interleave(draws, dim=0)
        acts = model.features(rep, plan.blocks, sample_z=plan.vae_sample_z, generator=gens[0])
        pooled = torch.cat([pool(acts[b]) for b in plan.blocks], dim=1)
        return pooled.view(len(x), draws, -1).mean(1)

    def pixels(images: torch.Tensor, gens: list[torch.Generator], labels: torch.Tensor | None) -> torch.Tensor:
        return to_unit(images).flatten(1)

    return {"ddpm": ddpm, "pixels": pixels}.get(plan.source, vae)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _run(model: nn.Module | None, process: Any, images: torch.Tensor, plan: ExtractionPlan, split: str,
         labels: torch.Tensor | None) -> torch.Tensor:
    if model is not None:
        model.eval()
    fn = _features_fn(model, process, plan)
    device = _device(model) if model is not None else torch.device("cpu")
    streams = max(len(plan.timesteps), 1)
    gens = [_noise_stream(plan.seed, split, j, device) for j in range(streams)]
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), plan.batch_size):
            rows = slice(start, start + plan.batch_size)
            chunks.append(fn(images[rows], gens, None if labels is None else labels[rows]).float().cpu())
    if not chunks:
        raise DataError("no images to extract features from")
    return torch.cat(chunks)


def extract_features(model: nn.Module | None, process: Any, images: torch.Tensor, plan: ExtractionPlan,
                     split: str = "train") -> torch.Tensor:
    """Pooled features of uint8 ``images [N, H, W, C]`` → ``[N, d]`` (float32, CPU). No labels involved.

    ``process``: the DDPM's forward process (:mod:`diffclassify.diffusion`) for ``source="ddpm"``, else None.
    ``split`` selects an independent noise stream for train and test images.
    """
    if model is not None and getattr(model, "label_conditioned", False):
        raise ConfigError(
            "this U-Net is label-conditioned (trained with --label-conditioning): its features would leak the "
            "labels; pass --label-conditioning to reproduce the original's leaky features anyway"
        )
    return _run(model, process, images, plan, split, None)


def extract_leaky_features(model: nn.Module, process: Any, images: torch.Tensor, labels: torch.Tensor,
                           plan: ExtractionPlan, split: str = "train") -> torch.Tensor:
    """The original's leaky extraction: a label-conditioned U-Net is given each image's *true* label.

    Only for reproducing the original's numbers (spec §9); the result tells nothing about unsupervised
    features. Shapes as :func:`extract_features`, ``labels`` ``[N]``.
    """
    if plan.source != "ddpm" or not getattr(model, "label_conditioned", False):
        raise ConfigError("--label-conditioning applies only to a label-conditioned DDPM checkpoint (--source ddpm)")
    return _run(model, process, images, plan, split, labels)


# ------------------------------------------------------------------------------------------ feature files


@dataclass
class FeatureSet:
    """Features of a train subset and a test subset of one dataset, with where they came from."""

    train_features: torch.Tensor
    train_labels: torch.Tensor
    train_index: torch.Tensor
    test_features: torch.Tensor
    test_labels: torch.Tensor
    test_index: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return self.train_features.shape[1]

    @property
    def num_classes(self) -> int:
        return int(self.meta.get("num_classes") or int(max(self.train_labels.max(), self.test_labels.max())) + 1)

    def save(self, path: str | Path) -> Path:
        from diffcore.io import atomic_path
        from safetensors.torch import save_file

        tensors = {name: getattr(self, name).contiguous() for name in TENSORS}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"format": FORMAT, "diffclassify": json.dumps(self.meta)})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> FeatureSet:
        """Read a features file; anything that is not one is a :class:`DataError` naming the problem."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise DataError(f"features file {path} does not exist; write one with `diffclassify extract`")
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, RuntimeError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise DataError(f"{path} is not a readable safetensors file ({first}); re-run `diffclassify extract`") \
                from None
        missing = [t for t in TENSORS if t not in tensors]
        if header.get("format") != FORMAT or missing:
            raise DataError(f"{path} is not a diffclassify features file "
                            f"({'missing ' + ', '.join(missing) if missing else 'no ' + FORMAT + ' header'}); "
                            "write one with `diffclassify extract`")
        try:
            meta = json.loads(header["diffclassify"])
        except (KeyError, json.JSONDecodeError):
            raise DataError(f"{path} has an unreadable header; re-run `diffclassify extract`") from None
        return cls(**{t: tensors[t] for t in TENSORS}, meta=meta)

    def describe(self) -> str:
        m = self.meta
        parts = [m.get("dataset", "?"), m.get("source", "?")]
        if m.get("blocks"):
            parts.append("blocks " + ",".join(m["blocks"]))
        if m.get("timesteps"):
            parts.append("t=" + ",".join(map(str, m["timesteps"])))
        return " · ".join(parts)


def tensor_digest(*tensors: torch.Tensor) -> str:
    """sha256 of the tensors' bytes (identifies the images and labels a features file was made from)."""
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def cache_key(fields: dict[str, Any]) -> str:
    """A short stable key of everything that determines a features file's content."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


def select_rows(labels: torch.Tensor, per_class: int | None) -> np.ndarray:
    """All rows (``None``) or the first ``per_class`` of every class, in dataset order."""
    if per_class is None:
        return np.arange(len(labels))
    return np.sort(first_per_class(labels, per_class))


@dataclass(frozen=True)
class ExtractionResult:
    features: FeatureSet
    cached: bool
    path: Path
    seconds: float


def cached_extraction(model: nn.Module | None, process: Any, train_images: torch.Tensor, train_labels: torch.Tensor,
                      train_index: np.ndarray, test_images: torch.Tensor, test_labels: torch.Tensor,
                      test_index: np.ndarray, plan: ExtractionPlan, meta: dict[str, Any], key_fields: dict[str, Any],
                      cache: Path, leaky: bool = False, use_cache: bool = True) -> ExtractionResult:
    """Load the features for ``key_fields`` from ``cache`` or compute and store them.

    ``key_fields`` must hold everything that determines the content apart from the images and labels, whose
    digest is added here (the checkpoint's sha256, source, blocks, timesteps, seeds, …).
    """
    started = time.perf_counter()
    fields = {**key_fields, "images": tensor_digest(train_images[train_index], test_images[test_index],
                                                    train_labels[train_index], test_labels[test_index])}
    key = cache_key(fields)
    path = Path(cache) / f"{key}.safetensors"
    if use_cache and path.exists():
        try:
            return ExtractionResult(FeatureSet.load(path), True, path, time.perf_counter() - started)
        except DataError:
            path.unlink(missing_ok=True)  # a damaged cache entry is recomputed
    splits = {}
    for split, images, labels, index in (("train", train_images, train_labels, train_index),
                                         ("test", test_images, test_labels, test_index)):
        chosen = images[torch.as_tensor(index)]
        if leaky:
            feats = extract_leaky_features(model, process, chosen, labels[torch.as_tensor(index)], plan, split)
        else:
            feats = extract_features(model, process, chosen, plan, split)
        splits[split] = (feats, labels[torch.as_tensor(index)].long(), torch.as_tensor(index, dtype=torch.long))
    features = FeatureSet(*splits["train"], *splits["test"],
                          meta={**meta, "format": FORMAT, "key": key, "dim": splits["train"][0].shape[1],
                                "leaky": leaky})
    Path(cache).mkdir(parents=True, exist_ok=True)
    features.save(path)
    return ExtractionResult(features, False, path, time.perf_counter() - started)
