"""Backbone pre-training on the base classes, on the core's Trainer (§4.3a), and the legacy converter.

Paper: T. Wang, Z. Dou, C. Bao, Z. Shi, "Diffusion Mechanism in Residual Neural Network: Theory and
Applications", IEEE TPAMI 46(2):667–680, 2024 (``fewshot/backbone/train_backbone.py``).

Recipe: SGD(lr 0.1, momentum 0.9, weight decay 5e-4), global batch 256, cross-entropy with label smoothing
0.1, MultiStepLR at ⌊0.5E⌋ and ⌊0.75E⌋ (γ 0.1), E = 100 (mini, tiered) or 400 (CUB), RandomResizedCrop(84) +
ColorJitter(0.4, 0.4, 0.4) + horizontal flip, ImageNet normalisation, seed 1. Model selection: after every
epoch from ⌊0.75E⌋ on (0-based), 1000 random 5-way 1-shot 15-query episodes on the validation classes,
classified by the nearest prototype of raw backbone features; the best mean accuracy (strictly better)
is kept. The features come through the Trainer's evaluation (``gather_for_metrics``), one streamed pass
over the validation images per epoch — never the whole split as one tensor (quirk 14) — and every
evaluation uses the same 1000 episodes (drawn from the seed), so checkpoints are compared on equal tasks
and a resumed run chooses the same one. The 10-class stand-ins have no validation classes: the last
epoch is kept, and the accuracy on the base classes' test images is logged instead.

``accelerate launch -m diff_resnet fewshot backbone ...`` spreads the same run over processes (the batch
stays global); rank 0 alone writes files.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffcore.checkpoint import export_model
from diffcore.config import require
from diffcore.runs import RunDir, format_table
from diffcore.train import TrainConfig, Trainer

from diff_resnet.backbones import BACKBONES, build_backbone, convert_legacy_state_dict
from diff_resnet.config import (
    require_milestones,
    require_momentum,
    require_non_negative,
    require_positive,
    require_seed,
)
from diff_resnet.fewshot.config import fewshot_dataset
from diff_resnet.fewshot.data import load_split
from diff_resnet.fewshot.episodes import EpisodeSampler, gather_episodes, nearest_prototype


@dataclass(frozen=True)
class BackboneConfig:
    """Backbone pre-training on the base classes (§4.3a, ``fewshot/backbone/train_backbone.py``).

    SGD(``lr``, ``momentum``, ``weight_decay``), cross-entropy with ``label_smoothing``, MultiStepLR at
    ``⌊m·epochs⌋`` for each fraction m of ``milestones`` (γ ``lr_decay``). Datasets with validation classes
    keep the checkpoint with the best mean accuracy of ``val_episodes`` ``val_way``-way ``val_shot``-shot
    ``val_query``-query nearest-prototype episodes on raw features, evaluated from epoch
    ``⌊select_from·epochs⌋`` on (0-based, as the original; this sets ``train.eval_start``); the stand-ins keep the
    last epoch. The loop settings (epochs, global batch 256, seed 1, mixed precision, workers, ...) are in ``train``.
    ``width`` is the channel count of ``conv4``.
    """

    dataset: str = "mini"
    backbone: Literal["resnet18", "wrn28_10", "conv4"] = "resnet18"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    milestones: tuple[float, ...] = (0.5, 0.75)
    lr_decay: float = 0.1
    select_from: float = 0.75
    val_episodes: int = 1000
    val_way: int = 5
    val_shot: int = 1
    val_query: int = 15
    width: int = 64
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=100, batch_size=256, eval_batch_size=1000, seed=1, monitor="val_proto_acc", monitor_mode="max",
        restore_best=True))

    def check(self) -> None:
        fewshot_dataset(self.dataset)  # a name or an existing folder
        require_positive("--lr", self.lr)
        require_momentum(self.momentum)
        require_non_negative("weight_decay", self.weight_decay)
        require(0 <= self.label_smoothing < 1, f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        require_milestones(self.milestones)
        require(0 < self.lr_decay <= 1, f"lr_decay must lie in (0, 1], got {self.lr_decay}")
        require(0 <= self.select_from < 1, f"select_from must lie in [0, 1), got {self.select_from}")
        require(self.val_episodes >= 1, f"val_episodes must be ≥ 1, got {self.val_episodes}")
        require(self.val_way >= 2 and self.val_shot >= 1 and self.val_query >= 1,
                f"val_way ≥ 2, val_shot ≥ 1 and val_query ≥ 1 are needed, got {self.val_way}, {self.val_shot}, "
                f"{self.val_query}")
        require(self.width >= 1, f"width must be ≥ 1, got {self.width}")
        require_seed(self.train.seed)


def backbone_config(dataset: str, backbone: str) -> BackboneConfig:
    """The recipe for ``dataset`` × ``backbone``: epochs 100 (mini, tiered, folders), 400 (CUB), few for stand-ins;
    the best validation checkpoint where validation classes exist, the last one otherwise."""
    spec = fewshot_dataset(dataset)
    train = dataclasses.replace(BackboneConfig().train, epochs=spec.epochs, restore_best=spec.has_val)
    return BackboneConfig(dataset=spec.name, backbone=backbone, train=train)  # type: ignore[arg-type]


def _smoothed_loss(label_smoothing: float, model: torch.nn.Module, batch: Any) -> torch.Tensor:
    images, labels = batch
    return F.cross_entropy(model(images), labels, label_smoothing=label_smoothing)


def _feature_eval(model: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
    images, labels = batch
    return {"feature": model(images, return_feature=True)[0], "label": labels}


def nearest_prototype_accuracy(features: torch.Tensor, labels: torch.Tensor, episodes: int, way: int, shot: int,
                               query: int, seed: int) -> float:
    """Mean accuracy (%) of ``episodes`` nearest-prototype episodes on raw features (the selection rule).

    Shapes: ``features`` ``[N, d]``, ``labels`` ``[N]``.
    """
    sampler = EpisodeSampler(labels)
    sampler.check(way, shot + query, "val_shot + val_query")
    picks = torch.from_numpy(sampler.draw(seed, range(episodes), way, shot + query)).to(features.device)
    support, queries = gather_episodes(features, picks, shot)
    predictions = nearest_prototype(support, queries, way)
    truth = torch.arange(way, device=features.device).repeat_interleave(query)
    return 100.0 * (predictions == truth).double().mean().item()


def _validation_metrics(config: BackboneConfig, gathered: dict[str, torch.Tensor]) -> dict[str, float]:
    return {"proto_acc": nearest_prototype_accuracy(gathered["feature"], gathered["label"].long(), config.val_episodes,
                                                    config.val_way, config.val_shot, config.val_query,
                                                    config.train.seed)}


@dataclass
class BackboneData:
    """The images a backbone run needs: the base classes and the split it is selected or checked on."""

    base: Any
    evaluation: dict[str, Any]
    has_val: bool


def load_backbone_data(config: BackboneConfig, data_root: str | Path | None = None) -> BackboneData:
    """Base-class images and the validation (or base-test) split; a missing dataset is a ``DataError``.

    Called before the run directory is created, so a missing dataset leaves nothing behind.
    """
    spec = fewshot_dataset(config.dataset)
    base = load_split(spec, "base", data_root, train=True)
    role = "val" if spec.has_val else "base_test"
    return BackboneData(base, {role: load_split(spec, role, data_root).dataset}, spec.has_val)


def train_backbone(config: BackboneConfig, run: RunDir, data: BackboneData) -> dict[str, Any]:
    """Train ``config.backbone`` on the base classes of ``config.dataset`` and export it to ``<run>/model``.

    A resumed ``run`` (``run.resumed``) continues from its saved state. Returns the results.json dictionary.
    """
    started = time.perf_counter()
    spec = fewshot_dataset(config.dataset)
    base, evaluation = data.base, data.evaluation
    epochs = config.train.epochs
    if data.has_val:
        hooks: dict[str, Any] = {"eval_fn": _feature_eval, "metrics_fn": functools.partial(_validation_metrics, config)}
        train_config = dataclasses.replace(config.train, eval_start=int(config.select_from * epochs))
    else:
        hooks, train_config = {}, config.train
    torch.manual_seed(config.train.seed)
    model = build_backbone(config.backbone, len(base.classes), spec.channels,
                           **({"width": config.width} if config.backbone == "conv4" else {}))
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, [int(m * epochs) for m in config.milestones], gamma=config.lr_decay)
    trainer = Trainer(model, optimizer, train_config, base.dataset, evaluation, run=run, scheduler=scheduler,
                      loss_fn=functools.partial(_smoothed_loss, config.label_smoothing), **hooks)
    summary = trainer.fit(resume=run.resumed)
    best = summary["best_epoch"] if train_config.restore_best else None
    selected = best or summary["epochs"]
    model = trainer.unwrapped_model()
    model_dir = run.path / "model"
    if trainer.accelerator.is_main_process:
        export_model(model, model_dir, name=BACKBONES[config.backbone], config=model.config, package="diff_resnet",
                     extra={"dataset": spec.name, "backbone": config.backbone, "selected_epoch": selected,
                            "base_classes": base.classes})
    trainer.accelerator.wait_for_everyone()
    results = {
        "dataset": spec.name, "backbone": config.backbone, "base_classes": len(base.classes),
        "train_images": len(base.labels), "feature_dim": model.feature_dim, "epochs": summary["epochs"],
        "selected_epoch": selected, "selection": f"best {train_config.monitor}" if best else "last epoch",
        "best_val_proto_acc": summary.get("best_val_proto_acc") if best else None,
        "final_metrics": summary["final_metrics"], "model_dir": str(model_dir),
        "world_size": trainer.accelerator.num_processes, "seconds": time.perf_counter() - started,
    }
    run.write_results(results)
    return results


def print_backbone_results(results: dict[str, Any]) -> None:
    import click

    metrics = results["final_metrics"]
    row = {"dataset": Path(results["dataset"]).name, "backbone": results["backbone"],
           "base classes": results["base_classes"], "epochs": results["epochs"],
           "kept epoch": f"{results['selected_epoch']} ({results['selection']})"}
    if results["best_val_proto_acc"] is not None:
        row["val 1-shot proto acc (%)"] = f"{results['best_val_proto_acc']:.2f}"
    elif "base_test_acc" in metrics:
        row["base-class test acc (%)"] = f"{metrics['base_test_acc']:.2f}"
    row["s"] = f"{results['seconds']:.0f}"
    click.echo(format_table([row]))


def check_export_dir(path: str | Path, overwrite: bool = False) -> None:
    """Refuse, before anything is read or written, an export folder that would lose files.

    ``path`` must be absent or empty, or, with ``overwrite``, an exported model folder (``model.safetensors``
    + ``config.json`` only), since the export replaces the folder as a whole. Its first existing parent must
    be a writable folder.
    """
    path = Path(path)
    anchor = next(p for p in (path, *path.parents) if p.exists())
    require(anchor.is_dir(), f"cannot export to {path}: {anchor} is a file; choose another --output-dir")
    require(os.access(anchor, os.W_OK | os.X_OK),
            f"cannot export to {path}: no write permission in {anchor}; choose another --output-dir")
    entries = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if entries:
        require(overwrite, f"{path} is not empty ({', '.join(entries[:4])}); choose a new --output-dir, or pass "
                           "--overwrite to replace the model exported there")
        require(set(entries) <= {"model.safetensors", "config.json"},
                f"--overwrite replaces only an exported model folder (model.safetensors, config.json), but {path} "
                f"also holds {', '.join(e for e in entries if e not in ('model.safetensors', 'config.json'))}; "
                "choose a new --output-dir")


def convert_checkpoint(path: str | Path, backbone: str, num_classes: int, output_dir: str | Path,
                       dataset: str | None = None) -> Path:
    """An original ``saved_models/*.pt`` (DataParallel, pickled state dict) → an exported safetensors folder."""
    model = build_backbone(backbone, num_classes)
    convert_legacy_state_dict(path, model)
    return export_model(model, output_dir, name=BACKBONES[backbone], config=model.config, package="diff_resnet",
                        extra={"dataset": dataset, "backbone": backbone, "converted_from": str(path)})
