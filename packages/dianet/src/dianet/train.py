"""Training and evaluation on the core's Trainer (spec §6): SGD, step LR per epoch, test after every epoch.

The same code runs on a CPU, a GPU or under ``accelerate launch -m dianet train ...`` / ``torchrun`` (the global
``train.batch_size`` is split over processes; BatchNorm statistics are per process, as with the original's
DataParallel replicas). Per run, as the original ``cifar.py`` (spec §6):

* ``metrics.jsonl``, per epoch: ``lr``, ``train_loss``, ``train_acc`` (on the augmented training batches, in
  training mode), ``test_loss``, ``test_acc`` (+ ``val_loss``, ``val_acc`` with a validation split);
* ``model/``: the last epoch's weights; ``model_best/``: the selected epoch's (the best ``train.monitor``:
  test accuracy as the original's ``model_best.pth.tar``, or validation accuracy with ``--select-on val``);
  ``model_epoch<e>/``: after each 0-based epoch e of ``snapshot_epochs`` (the original's ``checkpoint_50``);
* ``results.json``: the final-epoch test accuracy (the honest number), the best-epoch test accuracy (selected on
  the test set: the one the official README most likely reports, spec §8) and the test accuracy of the epoch
  selected on the validation split.

``--seeds N`` trains N such runs (``seed<k>/``) one after another and reports their mean ± std.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffcore.checkpoint import export_model, load_pretrained, read_checkpoint_config
from diffcore.cli import processes
from diffcore.config import to_dict
from diffcore.errors import ConfigError
from diffcore.runs import RunDir, check_run_dir, read_json_file
from diffcore.train import TrainConfig, Trainer, check_safetensors, classification_eval

from dianet.config import EvalConfig, TrainRunConfig
from dianet.data import Splits, check_dataset, load_splits
from dianet.models import EXPORT_NAME, DIAResNet, arch_kwargs
from dianet.names import DATASETS
from dianet.protocol import protocol_summary, seed_runs

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


def _channels_last_inputs(batch: Any) -> Any:
    return batch[0].contiguous(memory_format=torch.channels_last), batch[1]


def _identity(batch: Any) -> Any:
    return batch


# ------------------------------------------------------------------------------------- before the run exists


def saved_state(run_dir: Path) -> Path | None:
    """The folder ``--resume`` would load (``state/``, or ``state.old/`` after a crash mid-save), with its counters
    and weights checked; None when the run saved none. A truncated or corrupt file is an error naming it."""
    for folder in (run_dir / "state", run_dir / "state.old"):
        if (folder / "trainer_state.json").exists():
            read_json_file(folder / "trainer_state.json", "training state")
            for weights in sorted(folder.glob("*.safetensors")):
                check_safetensors(weights)
            return folder
    return None


def check_resume(run_dir: Path, config: TrainRunConfig) -> None:
    """What ``--resume RUN_DIR`` continues must be there and intact, checked before anything is written: the same
    command and configuration (differing keys named), and a saved training state for a single run (a multi-seed
    run restarts a seed that saved none)."""
    check_run_dir(run_dir, "resume", package=PACKAGE, command="train", config=to_dict(config))
    if config.seeds > 1:
        for _, seed_dir in seed_runs(config, run_dir):
            if not (seed_dir / "results.json").exists():
                saved_state(seed_dir)
    elif saved_state(run_dir) is None:
        raise ConfigError(f"{run_dir} has no saved training state (state/): the run stopped before its first "
                          "epoch ended, so there is nothing to resume; start it again with --overwrite")


def prepare_train(config: TrainRunConfig, data_root: str | None = None, resume: str | None = None,
                  load: bool = True) -> Splits | None:
    """Every check of a ``train`` config that needs torch or files, then (``load``) its data, so that a refused
    command writes nothing: the dataset, the model options (the model is built on the meta device: no memory,
    no random numbers), the run to resume, the images."""
    check_dataset(config.dataset)
    with torch.device("meta"):
        create_model(config.arch, DATASETS.get(config.dataset, 10), **config.model.kwargs())
    if resume:
        check_resume(Path(resume), config)
    if not load:
        return None
    return load_splits(config.dataset, data_root, config.norm_stats, image_size(config.arch), config.train_limit,
                       config.test_limit, val_split=config.val_split)


# ------------------------------------------------------------------------------------------------ training


def _export(net: DIAResNet, folder: Path, config: TrainRunConfig, **extra: Any) -> None:
    """``folder/`` ← the weights of ``net`` (safetensors + config.json), without touching the training model:
    a copy is rebuilt on the meta device (no random numbers drawn) and filled with contiguous CPU tensors."""
    with torch.device("meta"):
        copy = DIAResNet(**net.config)
    state = {k: v.detach().to("cpu", memory_format=torch.contiguous_format) for k, v in net.state_dict().items()}
    copy.load_state_dict(state, assign=True)
    export_model(copy, folder, name=EXPORT_NAME, config=copy.config, package=PACKAGE,
                 extra={"arch": config.arch, "dataset": config.dataset, "norm_stats": config.norm_stats, **extra})


class ProtocolTrainer(Trainer):
    """The core :class:`~diffcore.train.Trainer` plus the original protocol's bookkeeping (spec §6).

    * each epoch's training accuracy — top-1 on the augmented batches in training mode, as ``cifar.py`` logs
      it — is counted in the loss function and joins the epoch's metrics (``train_acc``);
    * when an epoch's state is saved, the weights are first exported to ``model_best/`` if it is the best epoch
      so far (``train.monitor``; first maximum, as the original's strict ``>``) and to ``model_epoch<e>/`` after
      each 0-based epoch e of ``snapshot_epochs``. Exported before the state, so a run killed in between redoes
      that epoch on resume; a resumed run keeps what was exported before.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: TrainRunConfig,
                 splits: Splits, run: RunDir, scheduler: Any):
        evals = {"test": splits.test} if splits.val is None else {"val": splits.val, "test": splits.test}
        self.protocol = config
        self._inputs = _channels_last_inputs if config.channels_last else _identity
        super().__init__(model, optimizer, config.train, splits.train, evals, run=run, scheduler=scheduler,
                         loss_fn=self._counted_loss, eval_fn=self._eval)
        self._counts = torch.zeros(2, dtype=torch.long, device=self.accelerator.device)  # correct, seen
        self._counted_epoch = -1

    def _eval(self, model: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        return classification_eval(model, self._inputs(batch))

    def _counted_loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        inputs, targets = self._inputs(batch)
        logits = model(inputs)
        if self._counted_epoch != self.epoch:  # first batch of a new epoch
            self._counts.zero_()
            self._counted_epoch = self.epoch
        self._counts[0] += (logits.argmax(-1) == targets).sum()
        self._counts[1] += targets.numel()
        return F.cross_entropy(logits, targets)

    def evaluate(self) -> dict[str, float]:
        metrics = super().evaluate()
        if self._counted_epoch == self.epoch - 1:  # the epoch just trained
            correct, seen = self.accelerator.reduce(self._counts.clone(), reduction="sum").tolist()
            metrics["train_acc"] = 100.0 * correct / max(seen, 1)
        return metrics

    def save_state(self) -> None:
        if self.accelerator.is_main_process:
            net, config = self.unwrapped_model(), self.protocol
            if self.best_epoch == self.epoch:
                _export(net, self.run.path / "model_best", config, epoch=self.epoch,
                        selected_on=self.config.monitor, value=self.best_value)
            if self.epoch - 1 in config.snapshot_epochs:
                _export(net, self.run.path / f"model_epoch{self.epoch - 1}", config, epoch=self.epoch)
        super().save_state()


def train_run(config: TrainRunConfig, run: RunDir, splits: Splits) -> dict[str, Any]:
    """Train ``config.arch`` once (seed ``config.train.seed``; continuing a resumed ``run``); export its weights."""
    started = time.perf_counter()
    torch.manual_seed(config.train.seed)
    model = create_model(config.arch, splits.num_classes, **config.model.kwargs())
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if config.compile:
        model.compile()  # in place: parameter names and the exported layout stay the same
    # Weight decay on every parameter (BN and attention MLPs included), as the original does.
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=config.nesterov)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.schedule), gamma=config.gamma)
    trainer = ProtocolTrainer(model, optimizer, config, splits, run, scheduler)
    summary = trainer.fit(resume=run.resumed)
    net = trainer.unwrapped_model()
    if trainer.accelerator.is_main_process:
        _export(net, run.path / "model", config, epoch=summary["epochs"])
    trainer.accelerator.wait_for_everyone()
    results = {
        "arch": config.arch, "dataset": config.dataset, "seed": config.train.seed, "num_classes": splits.num_classes,
        "params": sum(p.numel() for p in net.parameters()), "epochs": summary["epochs"], "steps": summary["steps"],
        **epoch_results(run.read_metrics(), config.train.monitor),
        "train_images": len(splits.train), "val_images": len(splits.val) if splits.val is not None else 0,
        "test_images": len(splits.test), "world_size": trainer.accelerator.num_processes,
        "mixed_precision": config.train.mixed_precision,
        "exports": sorted(p.name for p in run.path.glob("model*") if p.is_dir()),
        "seconds": time.perf_counter() - started,
    }
    del trainer, model, net, optimizer
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return results


def epoch_results(records: list[dict[str, Any]], monitor: str) -> dict[str, Any]:
    """``results.json`` accuracies from the per-epoch ``metrics.jsonl`` lines (all epochs, also after a resume).

    Best epochs are the first maximum (the original's strict ``>``); epochs are 1-based.
    """
    evaluated = [r for r in records if "test_acc" in r]
    if not evaluated:
        raise ConfigError("no epoch was evaluated: check train.eval_every / train.eval_start")
    final, best = evaluated[-1], max(evaluated, key=lambda r: r["test_acc"])
    selected = max(evaluated, key=lambda r: r[monitor])
    results = {
        "test_acc_final": final["test_acc"], "test_loss_final": final["test_loss"],
        "test_acc_best": best["test_acc"], "best_epoch": best["epoch"],
        "selected_on": monitor, "selected_epoch": selected["epoch"], "test_acc_selected": selected["test_acc"],
        "train_acc_final": final.get("train_acc"), "train_loss_first": records[0]["train_loss"],
        "train_loss_final": records[-1]["train_loss"],
    }
    if "val_acc" in final:
        results.update(val_acc_final=final["val_acc"], val_acc_best=max(r["val_acc"] for r in evaluated))
    return results


def run_train(config: TrainRunConfig, run: RunDir, splits: Splits) -> dict[str, Any]:
    """One run, or with ``config.seeds > 1`` one run per seed in ``<run>/seed<k>/`` (each a complete run directory
    that ``dianet summarize`` and ``--resume`` accept) and their mean ± std. Resuming continues the seed that
    was interrupted and skips the finished ones."""
    if config.seeds == 1:
        return train_run(config, run, splits)
    _, world = processes()
    per_seed = []
    for seed_config, seed_dir in seed_runs(config, run.path):
        if (seed_dir / "results.json").exists():
            per_seed.append(read_json_file(seed_dir / "results.json", "results"))
            continue
        mode = "resume" if saved_state(seed_dir) is not None else "overwrite" if seed_dir.exists() else "new"
        seed_run = RunDir.create(seed_dir, seed_config, package=PACKAGE, command="train",
                                 seed=seed_config.train.seed, world_size=world, is_main=run.is_main, mode=mode)
        results = train_run(seed_config, seed_run, splits)
        seed_run.write_results(results)
        per_seed.append(results)
    return {"arch": config.arch, "dataset": config.dataset, **protocol_summary(per_seed),
            "run_dirs": [str(seed_dir) for _, seed_dir in seed_runs(config, run.path)], "per_seed": per_seed}


# ---------------------------------------------------------------------------------------------- evaluation


def _loop_config(config: EvalConfig) -> TrainConfig:
    return TrainConfig(eval_batch_size=config.eval_batch_size, mixed_precision=config.mixed_precision,
                       seed=config.seed, num_workers=config.num_workers, monitor="test_acc", monitor_mode="max",
                       progress=False)


def prepare_eval(config: EvalConfig, data_root: str | None = None,
                 load: bool = True) -> tuple[DIAResNet, Splits] | None:
    """The model and the test split of ``dianet eval``, checked before its run directory exists."""
    check_dataset(config.dataset)
    if not load:
        return None
    model = load_pretrained(config.checkpoint)
    size = 224 if model.config.get("stem") == "imagenet" else 32
    splits = load_splits(config.dataset, data_root, config.norm_stats, size, test_limit=config.test_limit,
                         need_train=False)
    if splits.num_classes != model.num_classes:
        raise ConfigError(f"{config.checkpoint} has {model.num_classes} classes but {config.dataset} has "
                          f"{splits.num_classes}; pass the --dataset it was trained on")
    return model, splits


def run_eval(config: EvalConfig, run: RunDir, model: DIAResNet, splits: Splits) -> dict[str, Any]:
    """Test accuracy of the exported ``model`` (from ``config.checkpoint``) on the test split."""
    header = read_checkpoint_config(config.checkpoint)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    inputs = _channels_last_inputs if config.channels_last else _identity
    # The core Trainer owns distributed evaluation (gather_for_metrics); its optimiser is never stepped here.
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), _loop_config(config), splits.test,
                      {"test": splits.test}, run=run, eval_fn=lambda m, batch: classification_eval(m, inputs(batch)))
    started = time.perf_counter()
    metrics = trainer.evaluate()
    return {"checkpoint": str(Path(config.checkpoint)), "arch": header.get("arch", ""), "dataset": config.dataset,
            "test_acc": metrics["test_acc"], "test_loss": metrics["test_loss"], "test_images": len(splits.test),
            "params": sum(p.numel() for p in model.parameters()), "seconds": time.perf_counter() - started}
