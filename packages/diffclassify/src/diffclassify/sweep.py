"""The ``sweep`` stage: labels per class × heads × feature sources, then the DDPM timestep sweep (spec §2 stage 5).

Every feature file comes from :func:`diffclassify.extract.run_extraction` (so a repeated sweep reuses the cache)
and every (file, head) pair trains all its sizes × seeds in one batched run (:func:`diffclassify.fewshot.fit_heads`).

``results.json``: ``rows`` (each ``sweep`` = ``labels`` or ``timestep``, ``source``, ``head``, ``per_class``,
``timestep``, ``acc_mean``, ``acc_std``, ``seeds``, ``accs``, ``dim``, ``test_images``, ``leaky``; percent),
``features`` (the files used, with ``cached`` and ``seconds``), ``plots`` and ``dataset``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffcore.data import load_image_splits

from diffclassify.config import ExtractConfig, SweepConfig
from diffclassify.data import dataset_name
from diffclassify.extract import Generative, load_generative, prepare, run_extraction
from diffclassify.features import FeatureSet
from diffclassify.fewshot import check_features, fit_heads, plan_runs

Log = Callable[[str], None]


def _train_needed(config: SweepConfig, sizes: tuple[int, ...]) -> int | None:
    if config.train_per_class is not None:
        return config.train_per_class
    extra = (config.protocol.test_per_class or max(sizes)) if config.protocol.test_source == "train-next" else 0
    return max(sizes) + extra


class Sweep:
    """A validated sweep: checkpoints and data loaded, every extraction prepared (nothing computed yet)."""

    def __init__(self, config: SweepConfig, data_root: str | None):
        self.config = config
        self.extra = []
        for path in config.features:  # before loading anything else: a wrong file is the cheapest error
            features = FeatureSet.load(path)
            check_features(features, path, dataset=dataset_name(config.dataset))
            plan_runs(features, config.sizes, [config.seed], config.protocol, path)
            self.extra.append((path, features))
        self.train, self.test = load_image_splits(config.dataset, data_root)
        self.ddpm: Generative | None = None
        self.vae: Generative | None = None
        if "ddpm" in config.sources:
            self.ddpm = load_generative(config.ddpm, config.weights, config.protocol.device)
        if any(s.startswith("vae") for s in config.sources):
            self.vae = load_generative(config.vae, "ema", config.protocol.device)
        self.label_inputs = [self._prepare(s, config.timesteps, _train_needed(config, config.sizes),
                                           config.extract_test_per_class) for s in config.sources]
        self.t_inputs = [self._prepare("ddpm", (t,), _train_needed(config, config.t_sizes), config.t_test_per_class)
                         for t in config.t_list]

    def _prepare(self, source: str, timesteps: tuple[int, ...], train_per_class: int | None,
                 test_per_class: int | None):
        c = self.config
        gen = self.ddpm if source == "ddpm" else self.vae if source.startswith("vae") else None
        sample_z = c.vae_sample_z and source in ("vae-decoder", "vae-mix")
        ecfg = ExtractConfig(
            model=c.ddpm if source == "ddpm" else c.vae if gen else "", source=source, dataset=c.dataset,
            timesteps=timesteps if source == "ddpm" else (), blocks=c.blocks if source == "ddpm" else (),
            noise_draws=c.noise_draws if source == "ddpm" or sample_z else 1,
            weights=c.weights if source == "ddpm" else "ema", train_per_class=train_per_class,
            test_per_class=test_per_class, vae_sample_z=sample_z, batch_size=c.batch_size,
            device=c.protocol.device, cache=c.cache, cache_dir=c.cache_dir, seed=c.seed,
        )
        ecfg.check()
        return prepare(ecfg, None, generative=gen, splits=(self.train, self.test))

    def run(self, log: Log = print) -> dict[str, Any]:
        c = self.config
        seeds = list(range(c.seed, c.seed + c.seeds))
        rows: list[dict[str, Any]] = []
        used: list[dict[str, Any]] = []

        def fit_all(features: FeatureSet, path: str, heads: tuple[str, ...], sizes: tuple[int, ...], sweep: str):
            for head in heads:
                started = time.perf_counter()
                new = fit_heads(features, head, sizes, seeds, c.protocol, path)
                rows.extend({"sweep": sweep, **r} for r in new)
                log(f"  {features.describe()} · {head}: {len(sizes)} sizes × {len(seeds)} seeds in "
                    f"{time.perf_counter() - started:.1f} s")

        for inputs in self.label_inputs:
            result = run_extraction(inputs)
            used.append(_used(result, "labels"))
            log(f"features {result.features.describe()} ({result.features.dim}-d): "
                f"{'cached' if result.cached else f'extracted in {result.seconds:.1f} s'}")
            fit_all(result.features, str(result.path), c.heads, c.sizes, "labels")
        for path, features in self.extra:
            used.append({"path": path, "source": features.meta.get("source"), "cached": True, "seconds": 0.0,
                         "sweep": "labels"})
            fit_all(features, path, c.heads, c.sizes, "labels")
        for inputs in self.t_inputs:
            result = run_extraction(inputs)
            used.append(_used(result, "timestep"))
            log(f"features {result.features.describe()}: "
                f"{'cached' if result.cached else f'extracted in {result.seconds:.1f} s'}")
            fit_all(result.features, str(result.path), c.t_heads, c.t_sizes, "timestep")
        return {"dataset": dataset_name(c.dataset), "rows": rows, "features": used}


def _used(result, sweep: str) -> dict[str, Any]:
    return {"path": str(result.path), "source": result.features.meta.get("source"),
            "timesteps": result.features.meta.get("timesteps"), "cached": result.cached,
            "seconds": round(result.seconds, 2), "sweep": sweep}


def write_plots(results: dict[str, Any], folder: Path) -> list[str]:
    from diffclassify.plots import plot_accuracy_vs_labels, plot_accuracy_vs_timestep

    written = []
    label_rows = [r for r in results["rows"] if r["sweep"] == "labels"]
    t_rows = [r for r in results["rows"] if r["sweep"] == "timestep"]
    if label_rows:
        plot_accuracy_vs_labels(label_rows, folder / "accuracy_vs_labels.png",
                                title=f"{Path(results['dataset']).name}: few-shot accuracy by feature source")
        written.append("accuracy_vs_labels.png")
    if t_rows:
        plot_accuracy_vs_timestep(t_rows, folder / "accuracy_vs_timestep.png",
                                  title=f"{Path(results['dataset']).name}: DDPM features against the noise level")
        written.append("accuracy_vs_timestep.png")
    return written


def pivot_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` of one sweep → one line per (source, timestep, head), one ``mean ± std`` column per size."""
    lines: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        t = r.get("timestep")
        key = (r["source"], str(t), r["head"])
        line = lines.setdefault(key, {"source": r["source"] + (" (leaky)" if r.get("leaky") else ""),
                                      "t": "" if t is None else t, "head": r["head"]})
        line[str(r["per_class"])] = f"{r['acc_mean']:.1f} ± {r['acc_std']:.1f}"
    return list(lines.values())


def timestep_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Timestep-sweep rows → one line per (head, size), one column per timestep."""
    lines: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        line = lines.setdefault((r["head"], r["per_class"]), {"head": r["head"], "per_class": r["per_class"]})
        line[f"t={r['timestep']}"] = f"{r['acc_mean']:.1f}"
    return list(lines.values())

