"""``pdiff`` command line: ``collect`` → ``train`` → ``generate`` → ``evaluate``, or all four with ``run``.

Every command resolves its config (preset, or the config of the run it reads ← options typed ← ``--set``),
validates all of it (including the folders it reads), then opens its run directory. torch is imported inside
the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from diffcore.cli import Group, resolve_config, run_options, start_run
from diffcore.config import from_dict, require

from pdiff.config import DEFAULT_PRESET, PRESETS, PDiffConfig, with_designs

PACKAGE = "pdiff"
PRECISIONS = click.Choice(["no", "fp16", "bf16"])

COLLECT_FIELDS = {"model": "host.arch", "dataset": "host.dataset", "params": "collect.params", "k": "collect.k",
                  "save_every": "collect.save_every", "bn_mode": "collect.bn_mode", "epochs": "pretrain.epochs",
                  "lr": "collect.optim.lr", "base": "base"}
TRAIN_FIELDS = {"phase": "phase", "input_noise": "ae.input_noise", "latent_noise": "ae.latent_noise",
                "noise_mode": "ae.noise_mode", "latent_dim": "ae.latent_dim", "latent_scale": "ddpm.latent_scale",
                "ae_steps": "ae.steps", "ddpm_steps": "ddpm.steps", "time_embed_bug": "ddpm.time_embed_bug"}
GENERATE_FIELDS = {"num_models": "generate.num_models", "sampler": "generate.sampler", "steps": "generate.steps",
                   "eta": "generate.eta", "ema": "generate.use_ema"}
EVALUATE_FIELDS = {"select_on": "evaluate.select_on", "noise_levels": "evaluate.noise_levels",
                   "noise_models": "evaluate.noise_models", "baseline_models": "evaluate.baseline_models"}
COMMON_FIELDS = {"seed": "seed", "mixed_precision": "mixed_precision", "device": "device"}


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name=PACKAGE)
def main() -> None:
    """p-diff (Wang et al., 2024): generate neural-network parameters with a latent diffusion model — and
    check whether they are new (memorisation baselines of arXiv 2506.07998).

    Quick start (MNIST from ../shared/data, a few minutes on a CPU):

        pdiff run --preset cpu-mnist --data-root ../shared/data
    """


# ------------------------------------------------------------------------------------------------ options


def _options(*decorators: Callable) -> Callable:
    def apply(f: Callable) -> Callable:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


def _o(*names: str, **kwargs: Any) -> Callable:
    return click.option(*names, default=None, **kwargs)


COMMON = _options(
    _o("--mixed-precision", type=PRECISIONS, help="Autocast dtype for every training stage [default: from preset]."),
    _o("--device", help="auto | cpu | cuda | cuda:N [default: auto]."),
)
COLLECT = _options(
    _o("--model", metavar="NAME", help="Host: mnist_mlp, mnist_cnn, cifar_cnn, mnist_cnnmedium, cifar_resnet18, "
       "timm:<name> or torchvision:<name> [default: from preset]."),
    _o("--dataset", metavar="NAME|DIR", help="mnist | cifar10 | cifar100 | cifar10-subset | digits | DIR with "
       "train/<class>/ and test/<class>/ [default: from preset]."),
    _o("--params", metavar="SELECTOR", help="Generated subset S: norm:N (last N norm layers; the paper's norm:2), "
       "all, last, comma-separated module/parameter names, or re:<regex> [default: from preset]."),
    _o("--k", type=int, help="Checkpoints to save (K) [default: from preset]."),
    _o("--save-every", type=click.Choice(["iteration", "epoch"]),
       help="Save S after every optimiser step (NEW) or every epoch (OLD) [default: from preset]."),
    _o("--bn-mode", type=click.Choice(["eval", "train"]),
       help="BatchNorm statistics during collection: frozen (eval) or drifting (train, the OLD code)."),
    _o("--epochs", type=int, help="Pre-training epochs of the whole host before collection [default: from preset]."),
    _o("--lr", type=float, help="Learning rate while collecting (constant) [default: from preset]."),
    _o("--base", type=click.Path(file_okay=False), help="Load this exported host (a collect run's host/) instead of "
       "pre-training."),
)
TRAIN = _options(
    _o("--ae", type=click.Choice(["new", "old-medium"]), help="Autoencoder design [default: from preset (new)]."),
    _o("--denoiser", type=click.Choice(["new", "old-cnn"]), help="Denoiser design [default: from preset (new)]."),
    _o("--input-noise", type=float, help="σ_V, noise added to parameters while training the AE."),
    _o("--latent-noise", type=float, help="σ_Z, noise added to latents while training the AE (0.5 = OLD yaml)."),
    _o("--noise-mode", type=click.Choice(["additive", "interpolate"]), help="NEW additive or OLD interpolation."),
    _o("--latent-dim", type=int, help="Latent size of the NEW autoencoder."),
    _o("--latent-scale", type=click.Choice(["auto", "none"]), help="Standardise latents before the DDPM (auto) "
       "or not (none, the official code)."),
    _o("--ae-steps", type=int, help="Autoencoder optimiser steps."),
    _o("--ddpm-steps", type=int, help="DDPM optimiser steps."),
    _o("--time-embed-bug", type=bool, help="Reproduce the old denoiser's one-t-per-batch training bug."),
)
GENERATE = _options(
    _o("--num-models", type=int, help="Models to generate, sampled in one batch [default: from preset]."),
    _o("--sampler", type=click.Choice(["ddpm", "ddim", "old"]), help="Ancestral DDPM (NEW), DDIM, or the OLD "
       "clamping sampler [default: from preset]."),
    _o("--steps", type=int, help="DDIM steps."),
    _o("--eta", type=float, help="DDIM η."),
    _o("--ema/--no-ema", help="Sample with the EMA of the denoiser [default: from preset]."),
)
EVALUATE = _options(
    _o("--select-on", type=click.Choice(["val", "test"]), help="Split that picks the 'best' model; test = the "
       "official, optimistic choice [default: val]."),
    _o("--noise-levels", metavar="S1,S2,...", help="Noise-perturbed originals: levels in standardised units."),
    _o("--noise-models", type=int, help="Noise-perturbed models per level."),
    _o("--baseline-models", type=int,
       help="Models of each memorisation baseline (average of 16, gaussian, raw noise)."),
)


def _config(ctx: click.Context, base: PDiffConfig, fields: dict[str, str], overrides: tuple[str, ...]) -> PDiffConfig:
    params = ctx.params
    base = with_designs(base, params.get("ae"), params.get("denoiser"))
    return resolve_config(base, ctx, {**fields, **COMMON_FIELDS}, overrides)


def _base_from(ctx: click.Context, preset: str | None, folder: str | None) -> PDiffConfig:
    """The typed ``--preset``, else the config of the run that made ``folder``, else the default preset."""
    from click.core import ParameterSource

    typed = ctx.get_parameter_source("preset") == ParameterSource.COMMANDLINE
    if not typed and folder and (Path(folder) / "config.json").exists():
        try:
            return from_dict(PDiffConfig, json.loads((Path(folder) / "config.json").read_text()))
        except (ValueError, TypeError):
            pass  # not a pdiff run: the reader of the folder reports what is wrong with it
    return PRESETS[preset or DEFAULT_PRESET]


def _results_table(results: dict[str, Any]) -> None:
    from diffcore.runs import format_table

    from pdiff.pipeline import summary_rows

    rows = summary_rows(results)
    if rows:
        click.echo(format_table(rows, floatfmt=".4g"))
    if "similarity" in results:
        sim = results["similarity"]
        click.echo("similarity (IoU of wrong predictions): " + ", ".join(f"{k} {v:.3f}" for k, v in sim.items()))
    if "distances" in results:
        d = results["distances"]
        click.echo(f"L2 to nearest checkpoint: generated {d['generated_to_nearest_checkpoint_mean']:.4g} "
                   f"(mean) vs checkpoint-to-nearest-other {d['checkpoint_to_nearest_other_mean']:.4g}")


def _finish(run, results: dict[str, Any]) -> None:
    run.write_results(results)
    if run.is_main:
        _results_table(results)
        click.echo(f"run directory: {run.path}")


# ----------------------------------------------------------------------------------------------- validate


def _validate_collect(data_root: str | None, generator: bool = False) -> Callable[[PDiffConfig], None]:
    """Checks of ``collect`` (and of ``run``, which also builds the autoencoder for the subset's size)."""

    def validate(config: PDiffConfig) -> None:
        from pdiff.data import check_dataset
        from pdiff.generator import build_autoencoder, pad_multiple
        from pdiff.models import build_host
        from pdiff.params import select_parameters

        classes = 100 if config.host.dataset == "cifar100" else 10  # a folder's count only changes the head
        host = build_host(config.host.arch, classes, 3)
        names = select_parameters(host, config.collect.params)
        check_dataset(config.host.dataset, data_root, config.host.val_size)
        if generator:
            dim = sum(p.numel() for n, p in host.named_parameters() if n in set(names))
            build_autoencoder(config.ae, -(-dim // pad_multiple(config.ae)) * pad_multiple(config.ae))
        if config.base:
            from diffcore.checkpoint import read_checkpoint_config

            read_checkpoint_config(config.base)

    return validate


def _validate_train(config: PDiffConfig) -> None:
    from pdiff.collect import load_collection

    require(bool(config.checkpoints), "pass --checkpoints DIR (the run directory of `pdiff collect`)")
    from pdiff.generator import build_autoencoder, pad_multiple

    _, spec, checkpoints, _ = load_collection(config.checkpoints)
    build_autoencoder(config.ae, -(-spec.dim // pad_multiple(config.ae)) * pad_multiple(config.ae))
    k = len(checkpoints)
    for phase, batch in (("ae", config.ae.optim.batch_size), ("ddpm", config.ddpm.optim.batch_size)):
        require(batch <= k, f"{phase}.optim.batch_size={batch} is larger than the K={k} checkpoints in "
                f"{config.checkpoints}; collect more (--k) or lower it (--set {phase}.optim.batch_size=N)")
    if config.phase == "ddpm":
        from pdiff.generator import Generator

        require(bool(config.generator), "--phase ddpm trains the DDPM on a trained autoencoder: pass --generator DIR")
        Generator.load(config.generator)


def _validate_generate(config: PDiffConfig) -> None:
    from pdiff.generator import Generator

    require(bool(config.generator), "pass --generator DIR (the run directory of `pdiff train`)")
    gen = Generator.load(config.generator)
    require("ddpm" in gen.info.get("phases", []), f"{config.generator}: its DDPM is not trained (made with --phase "
            "ae); run `pdiff train --phase ddpm --generator DIR` first")


def _validate_evaluate(config: PDiffConfig) -> None:
    from pdiff.collect import load_collection
    from pdiff.pipeline import load_generated, same_spec

    require(bool(config.generated), "pass --generated DIR (the run directory of `pdiff generate`)")
    spec, _, manifest = load_generated(config.generated)
    checkpoints = config.checkpoints or manifest.get("checkpoints")
    require(bool(checkpoints), "pass --checkpoints DIR (the `pdiff collect` run the generator was trained on)")
    _, collected, _, _ = load_collection(checkpoints)
    same_spec(spec, collected, f"the models in {config.generated}", checkpoints)


# ----------------------------------------------------------------------------------------------- commands


@main.command()
@COLLECT
@COMMON
@run_options(presets=list(PRESETS), default_preset=DEFAULT_PRESET, seed=None, resume=True)
@click.pass_context
def collect(ctx: click.Context, preset: str, overrides: tuple[str, ...], data_root: str | None, **_: Any) -> None:
    """Stage 1: train (or --base load) the host, then train only S and save it K times.

    What is saved, exactly: every parameter outside S is frozen; S trains with the collect optimiser at a
    constant learning rate; with --save-every iteration (NEW) S is copied after every optimiser step, with
    epoch (OLD) after every pass over the training split. --bn-mode eval keeps BatchNorm statistics frozen.

    Writes checkpoints.safetensors (params: K × D), manifest.json (dataset, architecture, parameter names,
    order, shapes, host fingerprint, per-checkpoint val/test accuracies, how they were collected), host/
    (load_pretrained-able). results.json: `original` (best/mean/median/min/std test accuracy %, best chosen
    on the validation split), `k`, `dim`, `steps`, `params`, `pretrain`, `seconds`.
    """
    config = _config(ctx, PRESETS[preset], COLLECT_FIELDS, overrides)
    run = start_run(ctx, config, package=PACKAGE, command="collect",
                    name=f"collect-{config.host.arch.replace(':', '-')}-{Path(config.host.dataset).name}",
                    validate=_validate_collect(data_root))
    if run is None:
        return
    from pdiff.pipeline import run_collect

    results = run_collect(config, run, data_root, config.base or None, run.resumed)
    _finish(run, results)


@main.command()
@click.option("--checkpoints", type=click.Path(file_okay=False), default=None,
              help="The run directory of `pdiff collect`.")
@click.option("--generator", type=click.Path(file_okay=False), default=None,
              help="With --phase ddpm: the `pdiff train --phase ae` run whose autoencoder is reused.")
@_o("--phase", type=click.Choice(["ae", "ddpm", "both"]), help="Train the autoencoder, the DDPM, or both "
    "[default: both].")
@TRAIN
@COMMON
@run_options(presets=list(PRESETS), default_preset=None, seed=None, resume=True)
@click.pass_context
def train(ctx: click.Context, preset: str | None, overrides: tuple[str, ...], checkpoints: str | None,
          generator: str | None, data_root: str | None, **_: Any) -> None:
    """Stages 2–4: normalise the K vectors, train the parameter autoencoder (input and latent noise), encode,
    standardise the latents (--latent-scale auto) and train the latent DDPM.

    The base config is --preset if typed, else the config of the collect run. Latent mean/std/max are
    logged (metrics.jsonl) and a warning is printed when they are far from unit scale. At the end, 10 AE
    reconstructions and 10 generated models are evaluated on the validation split (a collapse check).

    Writes generator/ (generator.safetensors: AE, denoiser, EMA; generator.json: spec, normalisation,
    latent scale and statistics, config), ae/ and ddpm/ (metrics and state for --resume). results.json:
    `latents` (raw/scaled mean, std, abs_max; scale), `check` (original/reconstructed/generated val acc %),
    `k`, `dim`, `padded_dim`, `latent_dim`, `ae_params`, `denoiser_params`, `seconds`.
    """
    base = _base_from(ctx, preset, checkpoints)
    if checkpoints:
        base = _replace(base, checkpoints=checkpoints)
    if generator:
        base = _replace(base, generator=generator)
    config = _config(ctx, base, TRAIN_FIELDS, overrides)
    run = start_run(ctx, config, package=PACKAGE, command="train", name="train", validate=_validate_train)
    if run is None:
        return
    from pdiff.pipeline import run_train

    results = run_train(config, run, config.checkpoints, config.phase, config.generator or None, run.resumed,
                        data_root)
    _finish(run, results)
    if run.is_main:
        click.echo(f"check (val acc %): {json.dumps({k: round(v, 2) for k, v in results['check'].items()})}")


@main.command()
@click.option("--generator", type=click.Path(file_okay=False), default=None, help="The run directory of `pdiff train`.")
@GENERATE
@COMMON
@run_options(seed=None, data=False)
@click.pass_context
def generate(ctx: click.Context, overrides: tuple[str, ...], generator: str | None, **_: Any) -> None:
    """Stage 5: sample --num-models latents in one batch, decode, un-normalise.

    Writes generated.safetensors (params: N × D raw parameter vectors of S) and generated.json (spec,
    generator, checkpoints, sampler). results.json: `num_models`, `sampler`, `use_ema`, `seconds`.
    """
    base = _base_from(ctx, None, str(Path(generator)) if generator else None)
    if generator:
        base = _replace(base, generator=generator)
    config = _config(ctx, base, GENERATE_FIELDS, overrides)
    run = start_run(ctx, config, package=PACKAGE, command="generate", name="generate", validate=_validate_generate)
    if run is None:
        return
    from pdiff.pipeline import run_generate

    _finish(run, run_generate(config, run, config.generator))


@main.command()
@click.option("--generated", type=click.Path(file_okay=False), default=None,
              help="The run directory of `pdiff generate`.")
@click.option("--checkpoints", type=click.Path(file_okay=False), default=None,
              help="The `pdiff collect` run [default: the one the generator was trained on].")
@EVALUATE
@COMMON
@run_options(seed=None)
@click.pass_context
def evaluate(ctx: click.Context, overrides: tuple[str, ...], generated: str | None, checkpoints: str | None,
             data_root: str | None, **_: Any) -> None:
    """Stage 6: accuracies of originals, generated models and the memorisation baselines, and how similar
    they are to the originals.

    results.json: `original`, `generated`, `weight_average`, `average_of_16`, `gaussian`, `noise` (all
    levels; per level in `noise_levels`), `raw_noise` — each with `best` (test accuracy of the model best on
    --select-on), `mean`, `median`, `min`, `std` (test accuracy %), `og_mean`/`og_max` (IoU of wrong
    predictions to the originals; og_max is the memorisation indicator) and `nearest_l2` (mean L2 distance to
    the nearest checkpoint); `similarity` (`oo`, `gg`, `og_mean`, `og_max` of the generated models);
    `distances`. Also per_model.json, accuracy_hist.png and similarity_scatter.png.
    """
    base = _base_from(ctx, None, generated)
    base = _replace(base, generated=generated or base.generated, checkpoints=checkpoints or "")
    config = _config(ctx, base, EVALUATE_FIELDS, overrides)
    run = start_run(ctx, config, package=PACKAGE, command="evaluate", name="evaluate", validate=_validate_evaluate)
    if run is None:
        return
    from pdiff.pipeline import run_evaluate

    _finish(run, run_evaluate(config, run, config.generated, config.checkpoints or None, data_root))


@main.command("run")
@COLLECT
@TRAIN
@GENERATE
@EVALUATE
@COMMON
@run_options(presets=list(PRESETS), default_preset=DEFAULT_PRESET, seed=None, resume=True)
@click.pass_context
def run_all(ctx: click.Context, preset: str, overrides: tuple[str, ...], data_root: str | None, **_: Any) -> None:
    """All stages in one run directory: collect → train → generate → evaluate (a progress bar per stage).

    The folder holds every stage's artefacts (see each command's --help); results.json has `collect`,
    `train`, `generate` and the keys of `pdiff evaluate`.
    """
    fields = {**COLLECT_FIELDS, **TRAIN_FIELDS, **GENERATE_FIELDS, **EVALUATE_FIELDS}
    config = _config(ctx, PRESETS[preset], fields, overrides)
    run = start_run(ctx, config, package=PACKAGE, command="run",
                    name=f"run-{config.host.arch.replace(':', '-')}-{Path(config.host.dataset).name}",
                    validate=_validate_collect(data_root, generator=True))
    if run is None:
        return
    from pdiff.pipeline import run_pipeline

    _finish(run, run_pipeline(config, run, data_root, echo=click.echo))


def _replace(config: PDiffConfig, **changes: Any) -> PDiffConfig:
    from dataclasses import replace

    return replace(config, **changes)
