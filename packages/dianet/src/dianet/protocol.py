"""The paper's protocol across runs (spec §6: "mean of 5 runs"): seeds of one configuration → mean ± std.

Shared by ``dianet train --seeds N`` and ``dianet summarize RUN_DIR...``; torch-free. Runs are grouped by their
whole configuration minus the seed — and minus the settings that cannot change a number: the progress bar,
the loader workers and ``seeds`` (a run of a multi-seed command is a one-seed run) — so an ablation with
another cell, learning rate or epoch count is never pooled into another model's mean. Two runs of one
configuration with the same seed are refused: a rerun or a copy would count twice.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffcore.config import flat_dict
from diffcore.errors import ConfigError
from diffcore.runs import read_json_file

#: Config keys that do not define the experiment (see the module docstring).
NOT_THE_EXPERIMENT = ("train.seed", "seeds", "train.progress", "train.num_workers")
#: Accuracies averaged over seeds; ``test_acc_selected`` only where the epoch was selected on a validation split.
METRICS = ("test_acc_final", "test_acc_best", "test_acc_selected")


def seed_dir(run_dir: str | Path, seed: int) -> Path:
    """The folder of seed ``seed`` inside a multi-seed run."""
    return Path(run_dir) / f"seed{seed}"


def seed_runs(config: Any, run_dir: Path) -> Iterator[tuple[Any, Path]]:
    """(one-seed config, its folder) for each seed of a ``TrainRunConfig`` with ``seeds`` runs."""
    for k in range(config.seeds):
        train = dataclasses.replace(config.train, seed=config.train.seed + k)
        yield dataclasses.replace(config, seeds=1, train=train), seed_dir(run_dir, train.seed)


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    results: dict[str, Any]

    @property
    def seed(self) -> int:
        return self.config["train"]["seed"]

    @property
    def experiment(self) -> dict[str, Any]:
        return {k: v for k, v in flat_dict(self.config).items() if k not in NOT_THE_EXPERIMENT}


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """The finished ``dianet train`` runs in ``paths``; a multi-seed run stands for its seeds' runs."""
    runs = []
    for path in map(Path, paths):
        meta = read_json_file(path / "meta.json", "run")
        if (meta.get("package"), meta.get("command")) != ("dianet", "train"):
            raise ConfigError(f"{path} is a `{meta.get('package')} {meta.get('command')}` run; summarize takes the "
                              "run directories of `dianet train`")
        config = read_json_file(path / "config.json", "run")
        if not (path / "results.json").exists():
            raise ConfigError(f"{path} has no results.json: the run has not finished (continue it with "
                              f"`dianet train --resume {path}`)")
        results = read_json_file(path / "results.json", "results")
        if config.get("seeds", 1) > 1:
            runs += load_runs([seed_dir(path, config["train"]["seed"] + k) for k in range(config["seeds"])])
            continue
        missing = [k for k in METRICS[:2] if not isinstance(results.get(k), int | float)]
        if missing or "train" not in config:
            raise ConfigError(f"{path}/results.json has no {', '.join(missing) or 'train config'}: not the result "
                              "of a finished `dianet train` run")
        runs.append(Run(path, config, results))
    return runs


def group_runs(runs: Sequence[Run]) -> list[list[Run]]:
    """Runs with equal configurations up to the seed, in first-seen order; a repeated seed is an error."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        group = groups.setdefault(json.dumps(run.experiment, sort_keys=True), [])
        twin = next((other for other in group if other.seed == run.seed), None)
        if twin is not None and twin.path.resolve() == run.path.resolve():
            raise ConfigError(f"{run.path} is given twice (directly or through its multi-seed run)")
        if twin is not None:
            raise ConfigError(f"{twin.path} and {run.path} are runs of the same configuration with the same seed "
                              f"({run.seed}): pass each seed once")
        group.append(run)
    return [sorted(group, key=lambda run: run.seed) for group in groups.values()]


def protocol_summary(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and population std of :data:`METRICS` over runs (``test_acc_selected`` when selected on validation)."""
    summary: dict[str, Any] = {"runs": len(results), "seeds": [r.get("seed") for r in results]}
    on_val = all(r.get("selected_on") == "val_acc" for r in results)
    for key in METRICS if on_val else METRICS[:2]:
        values = [r[key] for r in results]
        summary[f"{key}_mean"], summary[f"{key}_std"] = statistics.fmean(values), statistics.pstdev(values)
    return summary


def summary_rows(groups: Sequence[Sequence[Run]]) -> list[dict[str, Any]]:
    """One row per group: arch, dataset, the settings that tell the groups apart, and mean/std per metric."""
    flat = [group[0].experiment for group in groups]
    varying = sorted(k for k in set().union(*flat) if len({json.dumps(f.get(k)) for f in flat}) > 1
                     and k not in ("arch", "dataset"))
    rows = []
    for group, experiment in zip(groups, flat, strict=True):
        row = {"arch": experiment["arch"], "dataset": experiment["dataset"]}
        row.update({key: experiment.get(key) for key in varying})
        row.update(protocol_summary([run.results for run in group]))
        row["seeds"] = [run.seed for run in group]
        row["run_dirs"] = [str(run.path) for run in group]
        rows.append(row)
    return rows


def display_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``summary_rows`` for a terminal table: ``mean ± std`` per metric, the seeds on one line."""
    shown = []
    for row in rows:
        out = {k: v for k, v in row.items()
               if k not in ("run_dirs", "per_seed", "seeds") and not k.endswith(("_mean", "_std"))}
        out["seeds"] = ",".join(map(str, row["seeds"]))
        for key in METRICS:
            if f"{key}_mean" in row:
                out[key] = f"{row[f'{key}_mean']:.2f} ± {row[f'{key}_std']:.2f}"
        shown.append(out)
    return shown
