"""Stage 1 of p-diff (spec §4): train the host, then keep training only S and save it K times.

Exactly what is saved (the question of issue #11):

1. **Pre-training** (``pretrain.epochs`` > 0): every parameter of the host trains for ``pretrain.epochs`` epochs
   with :class:`diffcore.train.Trainer` (the NEW code fine-tunes a pretrained model 10 epochs; the OLD code
   trains from scratch 30–100 epochs). ``--base DIR`` loads an exported host instead.
2. **Collection**: every parameter outside S is frozen (``requires_grad=False``); S trains with
   ``collect.optim`` at a constant learning rate. With ``bn_mode="eval"`` (default) the host is in eval mode,
   so BatchNorm running statistics stay those of the host used at test time; ``"train"`` lets them drift.
   ``save_every="iteration"`` (NEW): S is copied after *every optimiser step* (K steps, less than an epoch
   for K = 200 at batch 128 on MNIST); ``"epoch"`` (OLD): after every pass over the training split (K epochs).
3. All K vectors are evaluated at once (:func:`pdiff.evaluate.predict_many`) on the validation and test
   splits; accuracies go into the manifest.

Artefacts: ``checkpoints.safetensors`` (``params`` ``(K, D)`` float32, the rows in save order),
``manifest.json`` (:class:`pdiff.params.ParamSpec` + accuracies + how they were collected) and ``host/``
(the whole host with its frozen weights, ``load_pretrained``-able).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffcore.errors import CheckpointError
from diffcore.runs import RunDir
from torch import nn

from pdiff.config import OptimConfig, PDiffConfig
from pdiff.data import HostData
from pdiff.evaluate import accuracy, predict
from pdiff.params import ParamSpec

CHECKPOINTS = "checkpoints.safetensors"
MANIFEST = "manifest.json"
HOST_DIR = "host"


def make_optimizer(params: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total: int) -> Any:
    """Cosine over ``total`` units, MultiStep at ``milestones``, or None (constant)."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total, 1))
    if cfg.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.milestones), cfg.gamma)
    return None


def classification_fns(data: HostData, augment: bool) -> tuple[Callable, Callable]:
    """``loss_fn`` / ``eval_fn`` for the Trainer on uint8 ``(images, labels)`` batches."""

    def loss_fn(model: nn.Module, batch: Any) -> torch.Tensor:
        return F.cross_entropy(model(data.prepare(batch[0], augment)), batch[1])

    def eval_fn(model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        logits = model(data.prepare(batch[0]))
        return {"loss": F.cross_entropy(logits.float(), batch[1], reduction="none"),
                "correct": (logits.argmax(-1) == batch[1]).float()}

    return loss_fn, eval_fn


def subrun(run: RunDir, name: str) -> RunDir:
    """A stage's own folder inside the run (its ``metrics.jsonl`` and ``state/`` for ``--resume``)."""
    sub = RunDir(run.path / name, run.is_main)
    if run.is_main:
        sub.path.mkdir(parents=True, exist_ok=True)
    return sub


def pretrain(host: nn.Module, data: HostData, config: PDiffConfig, run: RunDir, resume: bool = False
             ) -> dict[str, Any]:
    """Train every parameter of the host for ``config.pretrain.epochs`` epochs (state in ``run/pretrain``)."""
    from diffcore.data import ImageArrays, ImageDataset
    from diffcore.train import TrainConfig, Trainer

    cfg = config.pretrain

    def dataset(split: tuple[torch.Tensor, torch.Tensor]) -> ImageDataset:
        return ImageDataset(ImageArrays(split[0].permute(0, 2, 3, 1), split[1], []))

    optimizer = make_optimizer(list(host.parameters()), cfg)
    train_cfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, eval_batch_size=config.host.eval_batch_size,
                            mixed_precision=config.mixed_precision, seed=config.seed, monitor="val_acc",
                            monitor_mode="max", progress=True, cpu=config.device == "cpu")
    loss_fn, eval_fn = classification_fns(data, cfg.augment)
    trainer = Trainer(host, optimizer, train_cfg, dataset(data.train), {"val": dataset(data.val)},
                      run=subrun(run, "pretrain"), scheduler=make_scheduler(optimizer, cfg, cfg.epochs),
                      loss_fn=loss_fn, eval_fn=eval_fn)
    summary = trainer.fit(resume=resume)
    return summary["final_metrics"]


def collect_checkpoints(host: nn.Module, spec: ParamSpec, data: HostData, config: PDiffConfig,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Train S only and return the K saved vectors ``(K, D)`` and what was done (steps, epochs, losses)."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    cfg = config.collect
    selected = set(spec.names)
    for name, param in host.named_parameters():
        param.requires_grad_(name in selected)
    params = [p for n, p in host.named_parameters() if n in selected]
    optimizer = make_optimizer(params, cfg.optim)
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=config.device == "cpu")
    model, optimizer = accelerator.prepare(host, optimizer)
    model.train(cfg.bn_mode == "train")
    # with drifting statistics the host still keeps its own, as the OLD code's saved host did
    buffers = {k: v.clone() for k, v in host.named_buffers()} if cfg.bn_mode == "train" else {}
    images, labels = data.train
    generator = generator or torch.Generator().manual_seed(config.seed)
    per_epoch = math.ceil(len(labels) / cfg.optim.batch_size)
    saved: list[torch.Tensor] = []
    losses: list[float] = []
    step = epoch = 0
    bar = tqdm(total=cfg.k, desc="collect", disable=not accelerator.is_local_main_process, leave=False)
    while len(saved) < cfg.k:
        order = torch.randperm(len(labels), generator=generator)
        for b in range(per_epoch):
            index = order[b * cfg.optim.batch_size: (b + 1) * cfg.optim.batch_size]
            x = data.prepare(images[index], cfg.optim.augment, generator).to(accelerator.device)
            with accelerator.autocast():
                loss = F.cross_entropy(model(x), labels[index].to(accelerator.device))
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(loss.item())
            if cfg.save_every == "iteration":
                saved.append(spec.flatten(dict(host.named_parameters())).detach().float().cpu().clone())
                bar.update(1)
                if len(saved) == cfg.k:
                    break
        epoch += 1
        if cfg.save_every == "epoch" and len(saved) < cfg.k:
            saved.append(spec.flatten(dict(host.named_parameters())).detach().float().cpu().clone())
            bar.update(1)
    bar.close()
    with torch.no_grad():
        for name, buffer in host.named_buffers():
            if name in buffers:
                buffer.copy_(buffers[name])
    host.eval()
    for param in host.parameters():
        param.requires_grad_(False)
    info = {"steps": step, "epochs_started": epoch, "save_every": cfg.save_every, "bn_mode": cfg.bn_mode,
            "optimizer": cfg.optim.optimizer, "lr": cfg.optim.lr, "batch_size": cfg.optim.batch_size,
            "first_loss": losses[0], "last_loss": losses[-1]}
    return torch.stack(saved), info


def evaluate_on_splits(host: nn.Module, spec: ParamSpec, flats: torch.Tensor, data: HostData, chunk: int,
                       batched: bool = True) -> dict[str, torch.Tensor]:
    """``{"val": (M,), "test": (M,)}`` accuracies (%) and the test predictions ``(M, N)``, batched."""
    out = {}
    for split in ("val", "test"):
        images, labels = getattr(data, split)
        preds = predict(host, spec, flats, images, data.prepare, data_batch(data), chunk, batched)
        out[split] = accuracy(preds, labels)
        out[f"{split}_predictions"] = preds
    return out


def data_batch(data: HostData) -> int:
    """Images per evaluation batch (bounded so chunk × batch activations fit comfortably)."""
    return 500 if data.image_size <= 64 else 50


# ------------------------------------------------------------------------------------------- artefacts


def save_collection(folder: Path, host: nn.Module, spec: ParamSpec, checkpoints: torch.Tensor,
                    manifest: dict[str, Any]) -> None:
    """Write ``checkpoints.safetensors``, ``manifest.json`` and ``host/`` into ``folder``."""
    from diffcore.checkpoint import export_model
    from diffcore.io import atomic_path, atomic_write_text
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    export_model(host, folder / HOST_DIR, name="pdiff_host", package="pdiff",
                 config={"arch": spec.arch, "num_classes": spec.num_classes, "in_chans": spec.in_chans},
                 extra={"module": "pdiff.models"})
    with atomic_path(folder / CHECKPOINTS) as tmp:
        save_file({"params": checkpoints.contiguous()}, str(tmp),
                  metadata={"format": "pt", "kind": "pdiff-checkpoints"})
    atomic_write_text(folder / MANIFEST, json.dumps({"spec": spec.to_json(), **manifest}, indent=2) + "\n")


def read_manifest(folder: Path, what: str) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.exists():
        raise CheckpointError(f"{folder} has no {MANIFEST}: not a pdiff {what} folder (run `pdiff {what}` first)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err.msg}); re-run `pdiff {what}`") from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, or one clear error for a missing/truncated/foreign file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.exists():
        raise CheckpointError(f"{path} is missing; re-run the stage that writes it")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, RuntimeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path} is truncated or not a safetensors file ({first}); re-run the stage that "
                              "writes it") from None


def load_collection(folder: str | Path) -> tuple[nn.Module, ParamSpec, torch.Tensor, dict[str, Any]]:
    """``(host, spec, checkpoints (K, D), manifest)`` of a ``pdiff collect`` folder, every part checked."""
    from diffcore.checkpoint import load_pretrained

    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist; pass the run directory of `pdiff collect`")
    manifest = read_manifest(folder, "collect")
    spec = ParamSpec.from_json(manifest["spec"])
    host = load_pretrained(folder / HOST_DIR)
    host.eval().requires_grad_(False)
    spec.check_host(host, spec.dataset, str(folder))
    tensors = read_tensors(folder / CHECKPOINTS)
    checkpoints = tensors.get("params")
    if checkpoints is None or checkpoints.dim() != 2 or checkpoints.shape[1] != spec.dim:
        raise CheckpointError(f"{folder / CHECKPOINTS} does not hold (K, {spec.dim}) parameter vectors for "
                              f"{spec.arch}; re-run `pdiff collect`")
    return host, spec, checkpoints, manifest
