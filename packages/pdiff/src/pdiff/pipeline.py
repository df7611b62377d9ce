"""The five commands' work: ``collect`` → ``train`` → ``generate`` → ``evaluate`` (and ``run``, all four).

Each stage reads the previous stage's folder and writes its own artefacts into the run directory
(safetensors + a JSON manifest); every reader checks that the artefacts belong together (same dataset,
architecture, parameter names and shapes, and the same frozen host weights), so a generator refuses a host
it was not trained for (spec §14.1).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from diffcore.config import from_dict, to_dict
from diffcore.device import resolve_device
from diffcore.errors import CheckpointError, ConfigError
from diffcore.runs import RunDir

from pdiff import collect as C
from pdiff import evaluate as E
from pdiff.config import HostConfig, PDiffConfig
from pdiff.data import HostData, load_host_data
from pdiff.generator import GENERATOR_DIR, Generator, train_generator
from pdiff.models import build_host
from pdiff.params import Normaliser, ParamSpec

GENERATED = "generated.safetensors"
GENERATED_MANIFEST = "generated.json"
#: a generated-vs-reconstruction accuracy gap (points) that is reported as a collapse warning (§14.3)
GAP_WARN = 5.0


def barrier() -> None:
    """Under ``accelerate launch``/``torchrun``: wait until rank 0 has written a stage's artefacts."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


# ------------------------------------------------------------------------------------------------ collect


def run_collect(config: PDiffConfig, run: RunDir, data_root: str | None = None, base: str | None = None,
                resume: bool = False) -> dict[str, Any]:
    """Pre-train (or load ``base``), collect K checkpoints of S, evaluate them; write the collection artefacts."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    data = load_host_data(config.host, data_root)
    if base is not None:
        from diffcore.checkpoint import load_pretrained, read_checkpoint_config

        header = read_checkpoint_config(base)
        if header["config"].get("arch") != config.host.arch:
            raise ConfigError(f"--base {base} is a {header['config'].get('arch')} host, not {config.host.arch}")
        host = load_pretrained(base)
        pre_metrics: dict[str, Any] = {"loaded": str(base)}
    else:
        host = build_host(config.host.arch, data.num_classes, data.in_chans, config.host.pretrained)
        pre_metrics = C.pretrain(host, data, config, run, resume) if config.pretrain.epochs else {}
    host = host.to(resolve_device(config.device))
    spec = ParamSpec.of(host, arch=config.host.arch, dataset=config.host.dataset, num_classes=data.num_classes,
                        in_chans=data.in_chans, selector=config.collect.params)
    checkpoints, info = C.collect_checkpoints(host, spec, data, config)
    # the frozen host is fixed from here on; its fingerprint excludes S
    spec = ParamSpec.of(host, arch=spec.arch, dataset=spec.dataset, num_classes=spec.num_classes,
                        in_chans=spec.in_chans, selector=spec.selector)
    acc = C.evaluate_on_splits(host, spec, checkpoints, data, config.evaluate.chunk, config.evaluate.batched)
    manifest = {"host": to_dict(config.host), "k": len(checkpoints), "collection": info,
                "accuracy": {"val": acc["val"].tolist(), "test": acc["test"].tolist()}}
    if run.is_main:
        C.save_collection(run.path, host.cpu(), spec, checkpoints, manifest)
    stats = E.accuracy_stats(acc["test"], acc["val"], config.evaluate.select_on)
    return {"stage": "collect", "arch": spec.arch, "dataset": spec.dataset, "params": spec.names, "dim": spec.dim,
            "k": len(checkpoints), "steps": info["steps"], "pretrain": pre_metrics, "original": stats,
            "seconds": time.perf_counter() - started}


# -------------------------------------------------------------------------------------------------- train


def _host_data_of(manifest: dict[str, Any], data_root: str | None) -> HostData:
    return load_host_data(from_dict(HostConfig, manifest["host"]), data_root)


def run_train(config: PDiffConfig, run: RunDir, checkpoints_dir: str, phase: str = "both",
              generator_dir: str | None = None, resume: bool = False, data_root: str | None = None
              ) -> dict[str, Any]:
    """Train the AE and/or latent DDPM on a collection; write ``generator/``; check for collapse (§14.3)."""
    started = time.perf_counter()
    host, spec, checkpoints, manifest = C.load_collection(checkpoints_dir)
    host = host.to(resolve_device(config.device))
    previous = None
    if phase == "ddpm":
        if generator_dir is None:
            raise ConfigError("--phase ddpm trains the DDPM on a trained autoencoder: pass --generator DIR (a "
                              "`pdiff train --phase ae` run)")
        previous = Generator.load(generator_dir)
        same_spec(previous.spec, spec, f"generator {generator_dir}", checkpoints_dir)
    torch.manual_seed(config.seed)
    gen = train_generator(spec, checkpoints, config, run, phase, resume, previous)
    gen.info["checkpoints"] = str(Path(checkpoints_dir).resolve())
    results: dict[str, Any] = {"stage": "train", "phase": phase, "k": len(checkpoints), "dim": spec.dim,
                               "padded_dim": gen.normaliser.padded_dim, "latent_dim": gen.latent_dim,
                               "latents": gen.info["latents"],
                               "ae_params": sum(p.numel() for p in gen.ae.parameters()),
                               "denoiser_params": sum(p.numel() for p in gen.denoiser.parameters())}
    data = _host_data_of(manifest, data_root)
    check = reconstruction_check(gen, host, checkpoints, data, config)
    results["check"] = check
    gen.info["check"] = check
    if run.is_main:
        gen.save(run.path / GENERATOR_DIR)
    results["seconds"] = time.perf_counter() - started
    return results


def reconstruction_check(gen: Generator, host, checkpoints: torch.Tensor, data: HostData, config: PDiffConfig,
                         count: int = 10) -> dict[str, Any]:
    """Validation accuracy of ``count`` AE reconstructions and (if trained) ``count`` generated models (§14.3)."""
    g = torch.Generator().manual_seed(config.seed + 1)
    picks = torch.randperm(len(checkpoints), generator=g)[:count]
    groups = {"original": checkpoints[picks], "reconstructed": gen.reconstruct(checkpoints[picks])}
    if "ddpm" in gen.info.get("phases", []):
        groups["generated"] = gen.generate(count, g)
    images, labels = data.val
    out = {}
    for name, flats in groups.items():
        preds = E.predict(host, gen.spec, flats.to(next(host.parameters()).device), images, data.prepare,
                          C.data_batch(data), config.evaluate.chunk, config.evaluate.batched)
        out[f"{name}_val_acc"] = E.accuracy(preds, labels).mean().item()
    if "generated_val_acc" in out and out["reconstructed_val_acc"] - out["generated_val_acc"] > GAP_WARN:
        warnings.warn(f"generated models ({out['generated_val_acc']:.2f} %) are far below AE reconstructions "
                      f"({out['reconstructed_val_acc']:.2f} %): the latent DDPM has not learned the latents "
                      "(train longer, or check --latent-scale)", stacklevel=2)
    return out


def same_spec(a: ParamSpec, b: ParamSpec, what: str, where: str) -> None:
    """Refuse artefacts made for another dataset, architecture, subset or frozen host (spec §14.1)."""
    if a.dataset != b.dataset:
        raise CheckpointError(f"{what} was made for dataset {a.dataset!r}, but {where} holds {b.dataset!r} "
                              "checkpoints; use the checkpoints it was trained on")
    if (a.arch, a.names, a.shapes) != (b.arch, b.names, b.shapes):
        raise CheckpointError(f"{what} generates {a.arch} parameters {list(a.names)[:2]}…, but {where} holds "
                              f"{b.arch} {list(b.names)[:2]}…; use the checkpoints it was trained on")
    if a.fingerprint != b.fingerprint:
        raise CheckpointError(f"{what} was trained for another {a.arch} host than the one in {where} (its frozen "
                              "weights differ); use the checkpoints it was trained on")


# ----------------------------------------------------------------------------------------------- generate


def run_generate(config: PDiffConfig, run: RunDir, generator_dir: str) -> dict[str, Any]:
    """Sample ``generate.num_models`` parameter vectors in one batch; write ``generated.safetensors``."""
    from dataclasses import replace

    started = time.perf_counter()
    gen = Generator.load(generator_dir)
    gen.config = replace(gen.config, generate=config.generate)
    flats = gen.generate(config.generate.num_models, torch.Generator().manual_seed(config.seed))
    if run.is_main:
        from diffcore.io import atomic_path, atomic_write_text
        from safetensors.torch import save_file

        run.path.mkdir(parents=True, exist_ok=True)
        with atomic_path(run.path / GENERATED) as tmp:
            save_file({"params": flats.contiguous()}, str(tmp), metadata={"format": "pt", "kind": "pdiff-generated"})
        manifest = {"spec": gen.spec.to_json(), "generator": str(Path(generator_dir).resolve()),
                    "checkpoints": gen.info.get("checkpoints"), "generate": to_dict(config.generate)}
        atomic_write_text(run.path / GENERATED_MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return {"stage": "generate", "num_models": len(flats), "sampler": config.generate.sampler,
            "use_ema": config.generate.use_ema, "seconds": time.perf_counter() - started}


def load_generated(folder: str | Path) -> tuple[ParamSpec, torch.Tensor, dict[str, Any]]:
    folder = Path(folder)
    path = folder / GENERATED_MANIFEST
    if not path.exists():
        raise CheckpointError(f"{folder} holds no {GENERATED_MANIFEST}: pass the run directory of `pdiff generate`")
    try:
        manifest = json.loads(path.read_text())
        spec = ParamSpec.from_json(manifest["spec"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is damaged ({err}); re-run `pdiff generate`") from None
    flats = C.read_tensors(folder / GENERATED).get("params")
    if flats is None or flats.dim() != 2 or flats.shape[1] != spec.dim:
        raise CheckpointError(f"{folder / GENERATED} does not hold (N, {spec.dim}) vectors; re-run `pdiff generate`")
    return spec, flats, manifest


# ----------------------------------------------------------------------------------------------- evaluate


def run_evaluate(config: PDiffConfig, run: RunDir, generated_dir: str, checkpoints_dir: str | None = None,
                 data_root: str | None = None) -> dict[str, Any]:
    """Accuracies of originals, generated models and the baselines, similarities and distances; two figures.

    results.json keys: ``original``, ``generated``, ``weight_average``, ``average_of_16``, ``gaussian``,
    ``noise`` (all levels), ``noise_levels`` (per level), ``raw_noise`` (per level), each with ``best``,
    ``mean``, ``median``, ``min``, ``std`` (test accuracy %, best selected on ``select_on``), ``og_mean``,
    ``og_max`` (IoU of wrong predictions to the originals) and ``nearest_l2`` (mean L2 distance to the nearest
    checkpoint); ``similarity`` (``oo``, ``gg``, ``og_mean``, ``og_max`` of the generated models);
    ``distances`` (nearest-checkpoint L2 of generated models vs nearest-neighbour L2 among checkpoints, L2 to
    the weight average, mean per-coordinate std of generated models and of checkpoints).
    """
    started = time.perf_counter()
    cfg = config.evaluate
    spec_g, generated, gen_manifest = load_generated(generated_dir)
    checkpoints_dir = checkpoints_dir or gen_manifest.get("checkpoints")
    if not checkpoints_dir:
        raise ConfigError("pass --checkpoints DIR (the `pdiff collect` run the generator was trained on)")
    host, spec, checkpoints, manifest = C.load_collection(checkpoints_dir)
    same_spec(spec_g, spec, f"the models in {generated_dir}", checkpoints_dir)
    data = _host_data_of(manifest, data_root)
    device = resolve_device(config.device)
    host = host.to(device)
    g = torch.Generator().manual_seed(config.seed)
    sigma = Normaliser.fit(spec, checkpoints, "zscore").sigma_per_coordinate()
    groups: dict[str, torch.Tensor] = {
        "original": checkpoints, "generated": generated, "weight_average": E.weight_average(checkpoints),
        f"average_of_{cfg.average_of}": E.average_of_random(checkpoints, cfg.baseline_models, cfg.average_of, g),
        "gaussian": E.gaussian_fit(checkpoints, cfg.baseline_models, g),
    }
    for s in cfg.noise_levels:
        groups[f"noise_{s:g}"] = E.perturbed(checkpoints, cfg.noise_models, s * sigma, g)
    for a in cfg.raw_noise:
        groups[f"raw_noise_{a:g}"] = E.perturbed(checkpoints, cfg.baseline_models, a, g)
    groups = {k: v for k, v in groups.items() if len(v)}
    names, sizes = list(groups), [len(v) for v in groups.values()]
    everything = torch.cat(list(groups.values())).float().to(device)
    preds = {}
    for split in ("val", "test"):
        images, labels = getattr(data, split)
        p = E.predict(host, spec, everything, images, data.prepare, C.data_batch(data), cfg.chunk, cfg.batched)
        preds[split] = dict(zip(names, p.split(sizes), strict=True))
    labels = data.test[1]
    wrong = {n: preds["test"][n] != labels for n in names}
    acc = {s: {n: E.accuracy(preds[s][n], getattr(data, s)[1]) for n in names} for s in ("val", "test")}
    nn_ckpt = E.nearest_distance(checkpoints, checkpoints, exclude_self=True)
    results: dict[str, Any] = {}
    per_model: dict[str, Any] = {}
    for n in names:
        stats = E.accuracy_stats(acc["test"][n], acc["val"][n], cfg.select_on)
        sim = E.similarity(wrong["original"], wrong[n], same=n == "original")
        dist = E.nearest_distance(groups[n], checkpoints, exclude_self=n == "original")
        stats.update(og_mean=sim["og_mean"], og_max=sim["og_max"], nearest_l2=dist.mean().item())
        results[n] = stats
        per_model[n] = {"test_acc": acc["test"][n].tolist(), "val_acc": acc["val"][n].tolist(),
                        "max_iou": sim["max_iou"].tolist(), "nearest_l2": dist.tolist()}
    noise_names = [n for n in names if n.startswith("noise_")]
    if noise_names:
        results["noise_levels"] = {n[len("noise_"):]: results.pop(n) for n in noise_names}
        all_noise = torch.cat([acc["test"][n] for n in noise_names])
        all_val = torch.cat([acc["val"][n] for n in noise_names])
        wrong_noise = torch.cat([wrong[n] for n in noise_names])
        noise_l2 = torch.cat([E.nearest_distance(groups[n], checkpoints) for n in noise_names])
        results["noise"] = {**E.accuracy_stats(all_noise, all_val, cfg.select_on), "nearest_l2": noise_l2.mean().item(),
                            **{k: v for k, v in E.similarity(wrong["original"], wrong_noise).items() if k != "max_iou"}}
    raw_names = [n for n in names if n.startswith("raw_noise_")]
    if raw_names:
        results["raw_noise"] = {n[len("raw_noise_"):]: results.pop(n) for n in raw_names}
    sim = E.similarity(wrong["original"], wrong["generated"])
    results["similarity"] = {k: v for k, v in sim.items() if k != "max_iou"}
    gen_nn = E.nearest_distance(generated, checkpoints)
    average = E.weight_average(checkpoints)
    results["distances"] = {"generated_to_nearest_checkpoint_mean": gen_nn.mean().item(),
                            "generated_to_nearest_checkpoint_min": gen_nn.min().item(),
                            "checkpoint_to_nearest_other_mean": nn_ckpt.mean().item(),
                            "checkpoint_to_nearest_other_min": nn_ckpt.min().item(),
                            "generated_to_weight_average_mean": (generated - average).norm(dim=1).mean().item(),
                            "checkpoint_to_weight_average_mean": (checkpoints - average).norm(dim=1).mean().item(),
                            "generated_coordinate_std": generated.std(0).mean().item(),
                            "checkpoint_coordinate_std": checkpoints.std(0).mean().item()}
    results.update(select_on=cfg.select_on, test_images=len(labels), val_images=len(data.val[1]),
                   k=len(checkpoints), num_generated=len(generated), dataset=spec.dataset, arch=spec.arch)
    if run.is_main:
        run.write_json("per_model.json", per_model)
        E.plot_histogram({n: acc["test"][n] for n in ("original", "generated", "weight_average", "gaussian",
                                                      f"average_of_{cfg.average_of}") if n in acc["test"]},
                         str(run.path / "accuracy_hist.png"))
        scatter = {n: (torch.tensor(per_model[n]["max_iou"]), acc["test"][n])
                   for n in ("generated", "gaussian", f"average_of_{cfg.average_of}", *noise_names) if n in per_model}
        E.plot_scatter(scatter, str(run.path / "similarity_scatter.png"))
    results["seconds"] = time.perf_counter() - started
    return results




def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per group: accuracy stats, IoU to the originals and nearest-checkpoint distance."""
    rows = []
    for name in [n for n in results if isinstance(results[n], dict) and "mean" in results[n]]:
        r = results[name]
        rows.append({"models": name, "n": r.get("count"), "best": r["best"], "mean": r["mean"], "median": r["median"],
                     "min": r["min"], "std": r["std"], "og_max": r.get("og_max"), "nearest_l2": r.get("nearest_l2")})
    return rows


# ---------------------------------------------------------------------------------------------------- run

STAGES = "stages.json"


def run_pipeline(config: PDiffConfig, run: RunDir, data_root: str | None = None, echo=print) -> dict[str, Any]:
    """collect → train → generate → evaluate in one folder. With ``--resume`` a finished collection is reused
    (``stages.json``) and AE/DDPM training continues from ``ae/state`` and ``ddpm/state``."""
    done = json.loads((run.path / STAGES).read_text()) if run.resumed and (run.path / STAGES).exists() else {}
    folder = str(run.path)
    steps = [("collect", lambda: run_collect(config, run, data_root, config.base or None, run.resumed)),
             ("train", lambda: run_train(config, run, folder, "both", None, run.resumed, data_root)),
             ("generate", lambda: run_generate(config, run, folder)),
             ("evaluate", lambda: run_evaluate(config, run, folder, folder, data_root))]
    for i, (name, stage) in enumerate(steps, 1):
        if name in done and name == "collect":
            echo(f"[{i}/4] {name}: reusing the finished stage")
            continue
        echo(f"[{i}/4] {name}")
        done[name] = stage()
        barrier()
        run.write_json(STAGES, {k: v for k, v in done.items() if k != "evaluate"})
    results = dict(done.pop("evaluate"))
    results.update(done)
    return results
