"""A small training loop on HF Accelerate, for minibatch and full-batch training.

The same code runs on one CPU, one GPU or many (``accelerate launch -m <pkg> ...`` / ``torchrun``):

* ``batch_size`` is always the **global** batch of one optimiser step. Accelerate splits each batch across
  processes (``split_batches=True``) and gradient accumulation splits it further in time, so a run's
  maths does not depend on the number of processes (up to float summation order).
* Shuffling uses :class:`EpochSampler`, a permutation drawn from ``seed + epoch``: identical in every
  process and after a resume.
* ``state/`` holds Accelerate's ``save_state`` (model, optimiser, scheduler, RNG) plus the loop's own
  counters, written at the end of an epoch into a fresh folder and then renamed, so an interrupted save
  never destroys the previous state. ``resume=True`` continues from it.
* Full-batch tasks (a whole graph per step) pass ``FullBatch(obj)`` instead of a dataset: every process
  computes the same step, one step per epoch.

A task supplies ``loss_fn(model, batch) -> scalar`` and, for evaluation,
``eval_fn(model, batch) -> dict[str, Tensor]`` of per-sample tensors (gathered across processes with
``gather_for_metrics``) and ``metrics_fn(gathered) -> dict[str, float]``. The defaults do classification
on ``(inputs, targets)`` batches: cross-entropy and accuracy.
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from diffcore.config import require
from diffcore.errors import ConfigError, DiffnetsError
from diffcore.io import atomic_write_text
from diffcore.runs import RunDir, read_json_file

Batch = Any
LossFn = Callable[[torch.nn.Module, Batch], torch.Tensor]
EvalFn = Callable[[torch.nn.Module, Batch], Mapping[str, torch.Tensor]]
MetricsFn = Callable[[Mapping[str, torch.Tensor]], Mapping[str, float]]


@dataclass(frozen=True)
class TrainConfig:
    """Loop settings shared by every package; a paper's config embeds one of these as ``train``.

    ``batch_size`` is the global batch per optimiser step (all processes × accumulation steps).
    ``early_stopping_patience`` counts evaluations without improvement of ``monitor``. Evaluation runs after
    every ``eval_every``-th epoch (and the last) once more than ``eval_start`` epochs are complete.
    """

    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 256
    grad_accum_steps: int = 1
    max_grad_norm: float | None = None
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    cpu: bool = False
    seed: int = 0
    eval_every: int = 1
    eval_start: int = 0
    monitor: str = "val_loss"
    monitor_mode: Literal["min", "max"] = "min"
    early_stopping_patience: int | None = None
    restore_best: bool = False
    save_every: int = 1
    scheduler_interval: Literal["epoch", "step"] = "epoch"
    num_workers: int = 0
    drop_last: bool = False
    progress: bool = True

    def check(self) -> None:
        """Every field in range; fp16 only where a GPU exists (bf16 autocast also runs on the CPU)."""
        require(self.epochs >= 1, f"epochs must be ≥ 1, got {self.epochs}")
        require(self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}")
        require(self.eval_batch_size >= 1, f"eval_batch_size must be ≥ 1, got {self.eval_batch_size}")
        require(self.grad_accum_steps >= 1, f"grad_accum_steps must be ≥ 1, got {self.grad_accum_steps}")
        require(self.max_grad_norm is None or self.max_grad_norm > 0,
                f"max_grad_norm must be > 0 (or None for no clipping), got {self.max_grad_norm}")
        require(self.eval_every >= 1, f"eval_every must be ≥ 1, got {self.eval_every}")
        require(self.eval_start >= 0, f"eval_start must be ≥ 0, got {self.eval_start}")
        require(self.save_every >= 1, f"save_every must be ≥ 1, got {self.save_every}")
        require(self.early_stopping_patience is None or self.early_stopping_patience >= 1,
                f"early_stopping_patience must be ≥ 1 (or None), got {self.early_stopping_patience}")
        require(self.num_workers >= 0, f"num_workers must be ≥ 0, got {self.num_workers}")
        if self.mixed_precision == "fp16":
            require(not self.cpu and torch.cuda.is_available(),
                    "mixed_precision=fp16 needs a CUDA GPU; use bf16 on the CPU, or no")


class FullBatch:
    """Marks one object (e.g. a whole graph) as the batch of every step: one step per epoch."""

    def __init__(self, batch: Any):
        self.batch = batch


class EpochSampler(Sampler[int]):
    """Random permutation of ``range(n)`` drawn from ``seed + epoch``; same in every process and on resume."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


def classification_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    inputs, targets = batch[0], batch[1]
    return F.cross_entropy(model(inputs), targets)


def classification_eval(model: torch.nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    inputs, targets = batch[0], batch[1]
    logits = model(inputs)
    return {"loss": F.cross_entropy(logits.float(), targets, reduction="none"),
            "correct": (logits.argmax(-1) == targets).float()}


def classification_metrics(gathered: Mapping[str, torch.Tensor]) -> dict[str, float]:
    return {"loss": gathered["loss"].mean().item(), "acc": 100.0 * gathered["correct"].mean().item()}


class TrainingError(DiffnetsError):
    """The loop cannot continue (e.g. the loss became NaN, or ``resume`` found no usable state)."""


class Trainer:
    """Train ``model`` with ``optimizer`` on Accelerate; see the module docstring for the contract.

    Args:
        model, optimizer, scheduler: plain PyTorch objects; the Trainer prepares them.
        train_data: a map-style ``Dataset`` (minibatches of ``config.batch_size``) or a :class:`FullBatch`.
        eval_data: ``{"val": dataset_or_FullBatch, "test": ...}``; metrics are logged as ``<split>_<name>``.
        run: the run directory (``metrics.jsonl``, ``state/``); None keeps everything in memory.
        collate_fn: optional DataLoader collate function.
        ema: an :class:`~diffcore.ddpm.EMA` of ``model``, updated after every optimiser step and saved with the
            training state (so ``resume`` continues it); evaluate or export ``ema.module`` yourself.
    """

    def __init__(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig,
        train_data: Dataset | FullBatch, eval_data: Mapping[str, Dataset | FullBatch] | None = None, *,
        run: RunDir | None = None, scheduler: Any = None, loss_fn: LossFn = classification_loss,
        eval_fn: EvalFn = classification_eval, metrics_fn: MetricsFn = classification_metrics,
        collate_fn: Callable | None = None, accelerator: Any = None, ema: torch.nn.Module | None = None,
    ):
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration, set_seed

        self.config = config
        config.check()
        self.accelerator = accelerator or Accelerator(
            mixed_precision=config.mixed_precision, cpu=config.cpu,
            gradient_accumulation_steps=config.grad_accum_steps,
            dataloader_config=DataLoaderConfiguration(split_batches=True),
            step_scheduler_with_optimizer=False,
        )
        set_seed(config.seed)
        world = self.accelerator.num_processes
        micro = config.batch_size // config.grad_accum_steps
        if not isinstance(train_data, FullBatch) and (
            config.batch_size % config.grad_accum_steps or micro % world
        ):
            raise ConfigError(
                f"batch_size={config.batch_size} (the global batch) must be divisible by grad_accum_steps "
                f"({config.grad_accum_steps}) × processes ({world}); choose a multiple of "
                f"{config.grad_accum_steps * world}"
            )
        self.run = run
        if run is not None:
            run.is_main = run.is_main and self.accelerator.is_main_process
        self.loss_fn, self.eval_fn, self.metrics_fn = loss_fn, eval_fn, metrics_fn
        self.train_loader = self._loader(train_data, micro, shuffle=True, collate_fn=collate_fn)
        self.eval_loaders = {
            name: self._loader(data, config.eval_batch_size, shuffle=False, collate_fn=collate_fn)
            for name, data in (eval_data or {}).items()
        }
        prepared = self.accelerator.prepare(model, optimizer, *([scheduler] if scheduler is not None else []))
        self.model, self.optimizer = prepared[0], prepared[1]
        self.scheduler = prepared[2] if scheduler is not None else None
        self.ema = ema
        if ema is not None:
            ema.to(self.accelerator.device)
            self.accelerator.register_for_checkpointing(ema)
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.bad_evals = 0
        self.stopped_early = False
        self._best_state: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------------------------------ data

    def _loader(self, data: Dataset | FullBatch, batch_size: int, shuffle: bool, collate_fn: Callable | None):
        if isinstance(data, FullBatch):
            return data
        loader = DataLoader(
            data, batch_size=batch_size, sampler=EpochSampler(len(data), self.config.seed, shuffle),
            num_workers=self.config.num_workers, drop_last=self.config.drop_last and shuffle,
            collate_fn=collate_fn,
        )
        return self.accelerator.prepare(loader)

    def _batches(self, loader) -> Iterator[Batch]:
        if isinstance(loader, FullBatch):
            yield _to_device(loader.batch, self.accelerator.device)
        else:
            yield from loader

    def _num_batches(self, loader) -> int:
        return 1 if isinstance(loader, FullBatch) else len(loader)

    # ------------------------------------------------------------------------------------------ loop

    @property
    def state_dir(self) -> Path | None:
        return None if self.run is None else self.run.path / "state"

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train until ``epochs`` or early stopping; returns the summary (best/final metrics)."""
        if resume:
            self.load_state()
        cfg = self.config
        acc = self.accelerator
        total = cfg.epochs - self.epoch
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="epochs", disable=not (cfg.progress and acc.is_local_main_process),
                   dynamic_ncols=True, leave=False)
        last_metrics: dict[str, float] = {}
        while self.epoch < cfg.epochs and not self.stopped_early:
            started = time.perf_counter()
            train_loss = self._train_epoch()
            self.epoch += 1
            record: dict[str, Any] = {"epoch": self.epoch, "step": self.global_step, "train_loss": train_loss,
                                      "lr": self.optimizer.param_groups[0]["lr"]}
            if self.scheduler is not None and cfg.scheduler_interval == "epoch":
                self.scheduler.step()
            if self.eval_loaders and self.epoch > cfg.eval_start and (
                self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs
            ):
                last_metrics = self.evaluate()
                record.update(last_metrics)
                self._early_stopping(last_metrics)
            record["seconds"] = time.perf_counter() - started
            if self.run is not None:
                self.run.log_metrics(record)
            if self.run is not None and (self.epoch % cfg.save_every == 0 or self.epoch == cfg.epochs
                                         or self.stopped_early):
                self.save_state()
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k in ("train_loss", cfg.monitor)})
        bar.close()
        if cfg.restore_best and self._best_state is not None:
            acc.unwrap_model(self.model).load_state_dict(self._best_state)
        return {"epochs": self.epoch, "steps": self.global_step, "best_epoch": self.best_epoch,
                f"best_{cfg.monitor}": self.best_value, "stopped_early": self.stopped_early,
                "final_metrics": last_metrics}

    def _train_epoch(self) -> float:
        cfg, acc = self.config, self.accelerator
        self.model.train()
        loader = self.train_loader
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(self.epoch)
        total, count = torch.zeros((), device=acc.device), 0
        for batch in self._batches(loader):
            with acc.accumulate(self.model):
                loss = self.loss_fn(self.model, batch)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"loss became {loss.item()} at epoch {self.epoch + 1}, step {self.global_step}; "
                        "lower the learning rate or enable --max-grad-norm"
                    )
                acc.backward(loss)
                if cfg.max_grad_norm is not None and acc.sync_gradients:
                    acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            if acc.sync_gradients:
                if self.ema is not None:
                    self.ema.update(acc.unwrap_model(self.model), self.global_step)
                self.global_step += 1
                if self.scheduler is not None and cfg.scheduler_interval == "step":
                    self.scheduler.step()
            total += loss.detach().float()
            count += 1
        return (acc.reduce(total, reduction="mean") / max(count, 1)).item()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Metrics of every eval split, computed over the whole split across processes."""
        self.model.eval()
        results: dict[str, float] = {}
        for name, loader in self.eval_loaders.items():
            chunks: dict[str, list[torch.Tensor]] = {}
            for batch in self._batches(loader):
                with self.accelerator.autocast():
                    out = self.eval_fn(self.model, batch)
                if not isinstance(loader, FullBatch):
                    out = self.accelerator.gather_for_metrics(dict(out))
                for key, value in out.items():
                    chunks.setdefault(key, []).append(value.detach().float().cpu())
            gathered = {k: torch.cat([v.reshape(-1) if v.dim() == 0 else v for v in vs]) for k, vs in chunks.items()}
            for key, value in self.metrics_fn(gathered).items():
                results[f"{name}_{key}"] = float(value)
        return results

    def _early_stopping(self, metrics: Mapping[str, float]) -> None:
        cfg = self.config
        if cfg.monitor not in metrics:
            if cfg.early_stopping_patience is None and not cfg.restore_best:
                return
            raise ConfigError(f"monitor={cfg.monitor!r} is not among the metrics {', '.join(metrics)}")
        value = metrics[cfg.monitor]
        better = self.best_value is None or (value < self.best_value if cfg.monitor_mode == "min"
                                             else value > self.best_value)
        if better:
            self.best_value, self.best_epoch, self.bad_evals = value, self.epoch, 0
            if cfg.restore_best:
                state = self.accelerator.unwrap_model(self.model).state_dict()
                self._best_state = {k: v.detach().clone() for k, v in state.items()}
        else:
            self.bad_evals += 1
            if cfg.early_stopping_patience is not None and self.bad_evals >= cfg.early_stopping_patience:
                self.stopped_early = True

    # ------------------------------------------------------------------------------------------ state

    def save_state(self) -> None:
        """Write ``state/`` (Accelerate state + loop counters) via ``state.tmp/`` and a rename."""
        if self.state_dir is None:
            return
        acc = self.accelerator
        tmp = self.state_dir.with_name("state.tmp")
        if acc.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        acc.wait_for_everyone()  # every process writes its RNG state into tmp: all must finish before the rename
        if acc.is_main_process:
            counters = {"epoch": self.epoch, "global_step": self.global_step, "best_value": self.best_value,
                        "best_epoch": self.best_epoch, "bad_evals": self.bad_evals,
                        "stopped_early": self.stopped_early}
            atomic_write_text(tmp / "trainer_state.json", json.dumps(counters) + "\n")
            if self._best_state is not None:
                from safetensors.torch import save_file

                save_file({k: v.contiguous() for k, v in self._best_state.items()}, str(tmp / "best_model.safetensors"))
            old = self.state_dir.with_name("state.old")
            if self.state_dir.exists():
                self.state_dir.rename(old)
            tmp.rename(self.state_dir)
            shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    def load_state(self) -> None:
        """Restore from ``state/`` (or, after a crash mid-save, ``state.old/``).

        No saved state, a truncated or corrupt file, or a state of another model is a :class:`TrainingError`
        naming the folder or file; lines of ``metrics.jsonl`` logged after the saved epoch are dropped.
        """
        if self.state_dir is None:
            raise TrainingError("resume needs a run directory: pass --resume RUN_DIR of the interrupted run")
        candidates = [self.state_dir, self.state_dir.with_name("state.old")]
        folder = next((c for c in candidates if (c / "trainer_state.json").exists()), None)
        if folder is None:
            raise TrainingError(f"{self.run.path} has no saved training state ({self.state_dir.name}/): nothing to "
                                "resume; start a new run without --resume")
        for weights in sorted(folder.glob("*.safetensors")):
            check_safetensors(weights)
        try:
            self.accelerator.load_state(str(folder))
        except (RuntimeError, OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise TrainingError(f"cannot resume from {folder}: {first}; is it a run of the same model?") from None
        try:
            counters = read_json_file(folder / "trainer_state.json", "training state")
        except ConfigError as err:
            raise TrainingError(str(err)) from None
        self.epoch, self.global_step = counters["epoch"], counters["global_step"]
        self.best_value, self.best_epoch = counters["best_value"], counters["best_epoch"]
        self.bad_evals, self.stopped_early = counters["bad_evals"], counters["stopped_early"]
        best = folder / "best_model.safetensors"
        if best.exists():
            from safetensors.torch import load_file

            self._best_state = load_file(str(best))
        self.run.truncate_metrics(lambda line: line.get("epoch", 0) <= self.epoch)

    def unwrapped_model(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)


def check_safetensors(path: Path) -> None:
    """A truncated or corrupt safetensors file is a :class:`TrainingError` naming it (its header is checked
    against the file size, which is cheap)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except (SafetensorError, OSError) as err:
        raise TrainingError(f"{path} is truncated or corrupt ({str(err).splitlines()[0]}); "
                            "the run cannot be resumed from it (start a new run)") from None


def _to_device(obj: Any, device: torch.device) -> Any:
    if hasattr(obj, "to"):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def steps_per_epoch(num_samples: int, config: TrainConfig) -> int:
    """Optimiser steps in one epoch of ``num_samples`` with the global ``batch_size``."""
    micro = config.batch_size // config.grad_accum_steps
    batches = num_samples // micro if config.drop_last else math.ceil(num_samples / micro)
    return math.ceil(batches / config.grad_accum_steps)
