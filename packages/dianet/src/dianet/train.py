"""Training and evaluation on the core's Trainer (spec §6): SGD, step LR per epoch, test after every epoch.

The same code runs on a CPU, a GPU or under ``accelerate launch -m dianet train ...`` (``batch_size`` is the
global batch; BatchNorm statistics are per process, as with the original's DataParallel replicas).
``results.json`` keeps both the final-epoch and the best-epoch test accuracy: the official README most
likely reports the best epoch, selected on the test set (spec §6, §8); the final one is the honest number.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from diffcore.checkpoint import export_model, load_pretrained, read_checkpoint_config
from diffcore.errors import ConfigError
from diffcore.runs import RunDir
from diffcore.train import TrainConfig, Trainer, classification_eval, classification_loss

from dianet.config import MODEL_NAMES, EvalConfig, TrainRunConfig
from dianet.data import check_dataset, load_splits
from dianet.models import EXPORT_NAME, DIAResNet, arch_kwargs

PACKAGE = "dianet"


def create_model(arch: str, num_classes: int, **overrides: Any) -> DIAResNet:
    """The registered model ``arch`` with ``num_classes`` outputs, built through timm."""
    import timm

    try:
        return timm.create_model(arch, num_classes=num_classes, **overrides)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"cannot build {arch} with {overrides}: {err}") from None


def image_size(arch: str) -> int:
    return 224 if arch_kwargs(arch).get("stem") == "imagenet" else 32


def _check_precision(mixed_precision: str) -> None:
    if mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("mixed_precision=fp16 needs a CUDA GPU; on a CPU use bf16")


def _task_fns(channels_last: bool):
    """Loss and eval functions of the core's classification task, feeding channels-last inputs if asked."""
    if not channels_last:
        return classification_loss, classification_eval

    def to_cl(batch):
        return batch[0].contiguous(memory_format=torch.channels_last), batch[1]

    return (lambda model, batch: classification_loss(model, to_cl(batch)),
            lambda model, batch: classification_eval(model, to_cl(batch)))


def _loop_config(config: TrainRunConfig | EvalConfig, **kwargs: Any) -> TrainConfig:
    return TrainConfig(eval_batch_size=config.eval_batch_size, mixed_precision=config.mixed_precision,
                       seed=config.seed, num_workers=config.num_workers, monitor="test_acc", monitor_mode="max",
                       **kwargs)


def validate(config: TrainRunConfig) -> None:
    """Reject unusable combinations before any data is loaded."""
    if config.arch not in MODEL_NAMES:
        raise ConfigError(f"unknown --arch {config.arch!r}; choose one of {', '.join(MODEL_NAMES)}")
    if not config.dataset:
        raise ConfigError(f"{config.arch} has no default dataset: pass --dataset DIR (an ImageNet-style folder)")
    check_dataset(config.dataset)
    if config.epochs < 1:
        raise ConfigError(f"epochs must be ≥ 1, got {config.epochs}")
    if list(config.schedule) != sorted(config.schedule) or any(e < 1 for e in config.schedule):
        raise ConfigError(f"schedule must list increasing positive epochs, got {','.join(map(str, config.schedule))}")
    if config.lr <= 0 or config.gamma <= 0 or config.weight_decay < 0:
        raise ConfigError(f"need lr > 0, gamma > 0, weight decay ≥ 0 (got {config.lr}, {config.gamma}, "
                          f"{config.weight_decay})")
    _check_precision(config.mixed_precision)


def run_train(config: TrainRunConfig, run: RunDir, data_root: str | None = None) -> dict:
    """Train ``config.arch`` on ``config.dataset`` (continuing a resumed ``run``); export ``<run>/model/``."""
    validate(config)
    splits = load_splits(config.dataset, data_root, config.norm_stats, image_size(config.arch),
                         config.train_limit, config.test_limit)
    torch.manual_seed(config.seed)
    model = create_model(config.arch, splits.num_classes, **config.model.kwargs())
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if config.compile:
        model.compile()  # in place: parameter names and the exported layout stay the same
    # Weight decay on every parameter (BN and attention MLPs included), as the original does.
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=config.nesterov)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.schedule), gamma=config.gamma)
    loss_fn, eval_fn = _task_fns(config.channels_last)
    loop = _loop_config(config, epochs=config.epochs, batch_size=config.batch_size,
                        grad_accum_steps=config.grad_accum_steps, max_grad_norm=config.max_grad_norm,
                        scheduler_interval="epoch", progress=config.progress)
    trainer = Trainer(model, optimizer, loop, splits.train, {"test": splits.test}, run=run, scheduler=scheduler,
                      loss_fn=loss_fn, eval_fn=eval_fn)
    started = time.perf_counter()
    summary = trainer.fit(resume=run.resumed)
    seconds = time.perf_counter() - started
    final = summary["final_metrics"] or trainer.evaluate()  # a resumed run that had already finished
    net = trainer.unwrapped_model()
    records = run.read_metrics()
    results = {
        "arch": config.arch, "dataset": config.dataset, "num_classes": splits.num_classes,
        "params": sum(p.numel() for p in net.parameters()),
        "epochs": summary["epochs"], "steps": summary["steps"],
        "test_acc_final": final["test_acc"], "test_loss_final": final["test_loss"],
        "test_acc_best": summary["best_test_acc"], "best_epoch": summary["best_epoch"],
        "train_loss_final": records[-1]["train_loss"] if records else None,
        "train_loss_first": records[0]["train_loss"] if records else None,
        "train_images": len(splits.train), "test_images": len(splits.test),
        "world_size": trainer.accelerator.num_processes, "mixed_precision": config.mixed_precision,
        "seconds": seconds,
    }
    if trainer.accelerator.is_main_process:
        net = net.to(memory_format=torch.contiguous_format)  # safetensors stores contiguous tensors
        export_model(net, run.path / "model", name=EXPORT_NAME, config=net.config, package=PACKAGE,
                     extra={"arch": config.arch, "dataset": config.dataset, "norm_stats": config.norm_stats})
    trainer.accelerator.wait_for_everyone()
    return results


def run_eval(config: EvalConfig, run: RunDir, data_root: str | None = None) -> dict:
    """Test accuracy of the exported model in ``config.checkpoint`` on ``config.dataset``'s test split."""
    _check_precision(config.mixed_precision)
    header = read_checkpoint_config(config.checkpoint)
    model = load_pretrained(config.checkpoint)
    arch = header.get("arch", "")
    size = 224 if model.config.get("stem") == "imagenet" else 32
    splits = load_splits(config.dataset, data_root, config.norm_stats, size, test_limit=config.test_limit,
                         need_train=False)
    if splits.num_classes != model.num_classes:
        raise ConfigError(f"{config.checkpoint} has {model.num_classes} classes but {config.dataset} has "
                          f"{splits.num_classes}; pass the --dataset it was trained on")
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    _, eval_fn = _task_fns(config.channels_last)
    # The core Trainer owns distributed evaluation (gather_for_metrics); its optimiser is never stepped here.
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), _loop_config(config, progress=False),
                      splits.test, {"test": splits.test}, run=run, eval_fn=eval_fn)
    started = time.perf_counter()
    metrics = trainer.evaluate()
    return {"checkpoint": str(Path(config.checkpoint)), "arch": arch, "dataset": config.dataset,
            "test_acc": metrics["test_acc"], "test_loss": metrics["test_loss"], "test_images": len(splits.test),
            "params": sum(p.numel() for p in model.parameters()), "seconds": time.perf_counter() - started}
