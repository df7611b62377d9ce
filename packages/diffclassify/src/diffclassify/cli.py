"""``diffclassify`` command line: ``train-ddpm``, ``sample``, ``train-vae``, ``extract``, ``fit``, ``sweep``.

Every command that writes results takes the one path of the core (``diffcore.cli.start_run``): resolve the
config (preset ← options typed ← ``--set``) → validate all of it, including files and data → ``--dry-run``
prints it → open the run directory → work → ``results.json`` → a short table. torch is imported inside the
commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import click
from diffcore.cli import Group, resolve_config, run_options, start_run

from diffclassify.config import (
    DDPM_PRESETS,
    HEADS,
    SOURCES,
    SWEEP_PRESETS,
    VAE_PRESETS,
    ExtractConfig,
    FitConfig,
    SampleConfig,
    preset_for,
)

PACKAGE = "diffclassify"
DATASETS = "mnist|cifar10|cifar10-subset|digits|DIR"
PRECISIONS = click.Choice(["no", "fp16", "bf16"])


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name=PACKAGE)
def main() -> None:
    """Few-shot classification on the features of generative models (DiffClassification, 2024).

    Train a DDPM (or a VAE) on unlabelled images, read pooled activations at a noise level t as features,
    and train tiny heads on 1…512 labels per class. Quick start (seconds, embedded 8×8 digits):

        diffclassify train-ddpm --dataset digits --output-dir runs/ddpm
        diffclassify train-vae --dataset digits --output-dir runs/vae
        diffclassify sweep --preset digits --ddpm runs/ddpm --vae runs/vae --output-dir runs/sweep
    """


def _echo_table(rows: list[dict], floatfmt: str = ".2f") -> None:
    from diffcore.runs import format_table

    click.echo(format_table(rows, floatfmt=floatfmt))


def _name(dataset: str) -> str:
    from pathlib import Path

    return Path(dataset).name or "data"


# ------------------------------------------------------------------------------------------ train-ddpm


@main.command("train-ddpm")
@click.option("--dataset", default=None, metavar=DATASETS, help="Images to learn (labels unused) [default: mnist].")
@click.option("--epochs", type=int, default=None, help="Epochs [default: from the preset].")
@click.option("--batch-size", type=int, default=None, help="Global batch of one step [default: from the preset].")
@click.option("--lr", type=float, default=None, help="Learning rate [default: from the preset].")
@click.option("--arch", type=click.Choice(["auto", "myunet", "vdiff"]), default=None,
              help="Denoiser: MNIST U-Net or v-diffusion CIFAR U-Net [default: auto = vdiff for 3×32×32].")
@click.option("--widths", default=None, metavar="W0,W1,W2", help="MyUNet widths [default: 10,20,40].")
@click.option("--forward-variance", type=click.Choice(["standard", "original"]), default=None,
              help="Noise std of q(x_t|x_0): √(1−ᾱ_t), or the original's √(1−√ᾱ_t) [default: standard].")
@click.option("--legacy-noise", "forward_variance", flag_value="original",
              help="Same as --forward-variance original (reproduces the original's forward process).")
@click.option("--time-table", type=click.Choice(["sinusoid", "original"]), default=None,
              help="Frozen time embedding: textbook sinusoid, or the original's table [default: sinusoid].")
@click.option("--label-conditioning", is_flag=True, default=None,
              help="Train the original's label-conditioned U-Net (its features leak labels; reproduction only).")
@click.option("--ema-decay", type=float, default=None, help="EMA decay per step [default: 0.99].")
@click.option("--mixed-precision", type=PRECISIONS, default=None, help="Autocast dtype [default: no].")
@click.option("--compile", "compile_", is_flag=True, default=None, help="torch.compile the denoiser (in place).")
@click.option("--samples", type=int, default=None, help="Images in samples.png (0: none) [default: 64].")
@run_options(presets=list(DDPM_PRESETS), default_preset=None, resume=True)
@click.pass_context
def train_ddpm(ctx: click.Context, dataset: str | None, preset: str | None, overrides: tuple[str, ...],
               data_root: str | None, **_: object) -> None:
    """Train the unconditional DDPM denoiser on unlabelled training images (spec §3, §4).

    Presets: mnist (scripts/mnist_train.py, the default for MNIST), mnist-notebook, mnist-cpu (≈ 8 min on
    2 cores), digits, cifar10 (v-diffusion, the default for CIFAR), cifar10-subset-cpu. Every other field:
    --set KEY=VALUE (e.g. --set ema_start=500, --set sampler=ddim, --set train_limit=10000). Runs unchanged
    under `accelerate launch -m diffclassify train-ddpm ...`; --resume RUN_DIR continues a run.

    Writes model/ (EMA weights: features and samples come from these), model-online/, state/, metrics.jsonl,
    samples.png and results.json: `arch`, `dataset`, `params`, `train_images`, `epochs`, `steps`,
    `train_loss_final`, `forward_variance`, `label_conditioned`, `ema_active`, `samples`, `seconds`.
    """
    from diffclassify.config import DDPMConfig

    fields = {"dataset": "dataset", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
              "arch": "model.arch", "widths": "model.widths", "forward_variance": "forward_variance",
              "time_table": "model.time_table", "label_conditioning": "label_conditioning",
              "ema_decay": "ema_decay", "mixed_precision": "mixed_precision", "compile_": "compile",
              "samples": "samples", "seed": "seed"}
    base: DDPMConfig = DDPM_PRESETS[preset or preset_for(DDPM_PRESETS, dataset or "mnist", "mnist")]
    config = resolve_config(base, ctx, fields, overrides)
    train = None

    def validate(cfg: DDPMConfig) -> None:
        nonlocal train
        from diffclassify.train import validate_ddpm

        train = validate_ddpm(cfg, data_root)

    run = start_run(ctx, config, package=PACKAGE, command="train-ddpm", name=f"ddpm-{_name(config.dataset)}",
                    validate=validate)
    if run is None:
        return
    from diffclassify.train import run_train_ddpm

    results = run_train_ddpm(config, run, train)
    run.write_results(results)
    if run.is_main:
        _echo_table([{k: results.get(k) for k in ("arch", "dataset", "params", "epochs", "steps", "train_loss_final",
                                                   "seconds")}], floatfmt=".4g")
        click.echo(f"run directory: {run.path}" + (" (samples.png)" if results.get("samples") else ""))


# ------------------------------------------------------------------------------------------ sample


@main.command()
@click.option("--model", "model", required=True, metavar="RUN_DIR", help="A train-ddpm or train-vae run (or model/).")
@click.option("--count", type=int, default=None, help="Number of images [default: 64].")
@click.option("--sampler", type=click.Choice(["ddpm", "ddim"]), default=None,
              help="DDPM (ancestral) or DDIM sampling [default: ddim].")
@click.option("--steps", type=int, default=None,
              help="Sampling steps [default: all steps for ddpm, 50 for ddim, 500 for v-diffusion].")
@click.option("--eta", type=float, default=None, help="DDIM η (0 deterministic) [default: 0; v-diffusion: 1].")
@click.option("--clip-x0", is_flag=True, default=None, help="Clip the predicted x̂_0 to [−1, 1] at every step.")
@click.option("--weights", type=click.Choice(["ema", "online"]), default=None, help="DDPM weights [default: ema].")
@click.option("--device", default=None, help="Torch device [default: cpu].")
@run_options(data=False)
@click.pass_context
def sample(ctx: click.Context, overrides: tuple[str, ...], **_: object) -> None:
    """Write samples.png, a grid of images drawn from a trained DDPM (or decoded from a VAE's prior).

    results.json: `kind`, `model`, `count`, `sampler`, `steps`, `samples`, `seconds`.
    """
    fields = ["model", "count", "sampler", "steps", "eta", "clip_x0", "weights", "device", "seed"]
    config = resolve_config(SampleConfig(), ctx, fields, overrides)
    loaded = None

    def validate(cfg: SampleConfig) -> None:
        nonlocal loaded
        from diffclassify.extract import load_generative

        loaded = load_generative(cfg.model, cfg.weights if cfg.weights else "ema", cfg.device)

    run = start_run(ctx, config, package=PACKAGE, command="sample", name="sample", validate=validate)
    if run is None:
        return
    from diffclassify.sampling import run_sample

    results = run_sample(config, run, loaded)
    run.write_results(results)
    if run.is_main:
        click.echo(f"{results['count']} samples from {results['model']}: {run.path / 'samples.png'}")


# ------------------------------------------------------------------------------------------ train-vae


@main.command("train-vae")
@click.option("--dataset", default=None, metavar=DATASETS, help="Images to learn [default: mnist].")
@click.option("--arch", type=click.Choice(["auto", "mnist", "cifar"]), default=None,
              help="MNIST or CIFAR ConvVAE [default: auto = cifar for 3×32×32].")
@click.option("--latent-dim", type=int, default=None, help="Latent size [default: 6 MNIST, 512 CIFAR].")
@click.option("--beta", type=float, default=None, help="KL weight of the CIFAR VAE [default: 1].")
@click.option("--epochs", type=int, default=None, help="Epochs [default: from the preset].")
@click.option("--batch-size", type=int, default=None, help="Global batch of one step [default: from the preset].")
@click.option("--lr", type=float, default=None, help="Adam learning rate [default: from the preset].")
@click.option("--mixed-precision", type=PRECISIONS, default=None, help="Autocast dtype [default: no].")
@run_options(presets=list(VAE_PRESETS), default_preset=None, resume=True)
@click.pass_context
def train_vae(ctx: click.Context, dataset: str | None, preset: str | None, overrides: tuple[str, ...],
              data_root: str | None, **_: object) -> None:
    """Train a VAE baseline (spec §5): the MNIST ConvVAE (latent 6) or the CIFAR ConvVAE (latent 512).

    Every flag takes effect (the original ignored -bs/-lr and never saved the MNIST VAE). Presets: mnist,
    mnist-cpu, digits, cifar10, cifar10-subset-cpu.

    Writes model/ (safetensors), samples.png, state/, metrics.jsonl (per epoch: train_loss, test_loss =
    negative ELBO per image, test_kl) and results.json: `arch`, `dataset`, `params`, `latent_dim`,
    `train_images`, `test_images`, `epochs`, `steps`, `train_loss_final`, `test_loss_final`, `test_kl_final`,
    `samples`, `seconds`.
    """
    from diffclassify.config import VAEConfig

    fields = {"dataset": "dataset", "arch": "arch", "latent_dim": "latent_dim", "beta": "beta", "epochs": "epochs",
              "batch_size": "batch_size", "lr": "lr", "mixed_precision": "mixed_precision", "seed": "seed"}
    base: VAEConfig = VAE_PRESETS[preset or preset_for(VAE_PRESETS, dataset or "mnist", "mnist")]
    config = resolve_config(base, ctx, fields, overrides)
    splits = None

    def validate(cfg: VAEConfig) -> None:
        nonlocal splits
        from diffclassify.train import validate_vae

        splits = validate_vae(cfg, data_root)

    run = start_run(ctx, config, package=PACKAGE, command="train-vae", name=f"vae-{_name(config.dataset)}",
                    validate=validate)
    if run is None:
        return
    from diffclassify.train import run_train_vae

    results = run_train_vae(config, run, *splits)
    run.write_results(results)
    if run.is_main:
        _echo_table([{k: results.get(k) for k in ("arch", "dataset", "params", "epochs", "train_loss_final",
                                                   "test_loss_final", "seconds")}], floatfmt=".4g")
        click.echo(f"run directory: {run.path}")


# ------------------------------------------------------------------------------------------ extract


@main.command()
@click.option("--model", "model", default=None, metavar="RUN_DIR",
              help="A train-ddpm / train-vae run (or its model/ folder); not needed for --source pixels.")
@click.option("--source", type=click.Choice(SOURCES), default=None, help="Feature source [default: ddpm].")
@click.option("--dataset", default=None, metavar=DATASETS, help="Images [default: the checkpoint's dataset].")
@click.option("--timestep", "timesteps", default=None, metavar="T[,T2,...]",
              help="Noise level(s) of 1000 (several concatenate) [default: 100 MNIST, 50 CIFAR].")
@click.option("--blocks", default=None, metavar="B1,B2,...",
              help="Blocks to pool [default: b_mid,b4,b5,b_out (MNIST U-Net), mid,dec8,dec16,dec32 (CIFAR)].")
@click.option("--noise-draws", type=int, default=None, help="Average the features over K noise draws [default: 1].")
@click.option("--weights", type=click.Choice(["ema", "online"]), default=None, help="DDPM weights [default: ema].")
@click.option("--train-per-class", type=int, default=None,
              help="Extract only the first N training images of each class [default: all].")
@click.option("--test-per-class", type=int, default=None,
              help="Extract only the first N test images of each class [default: all].")
@click.option("--vae-sample-z", is_flag=True, default=None,
              help="Decoder features from sampled z (the original), not z = μ.")
@click.option("--label-conditioning", is_flag=True, default=None,
              help="Allow a label-conditioned checkpoint: feed the true labels (the original's leak; output "
                   "marked leaky).")
@click.option("--batch-size", type=int, default=None, help="Images per forward pass [default: 256].")
@click.option("--device", default=None, help="Torch device [default: cpu].")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Feature cache [default: $DIFFNETS_CACHE/diffclassify/features].")
@click.option("--no-cache", "cache", flag_value=False, default=None, help="Recompute even if cached.")
@run_options()
@click.pass_context
def extract(ctx: click.Context, overrides: tuple[str, ...], data_root: str | None, **_: object) -> None:
    """Pool features of the training images and the test split from a generative model (or pixels).

    The extractor never sees a label. Features are cached as safetensors keyed by the checkpoint's
    sha256, source, blocks, timesteps, noise draws, seed and the images; a second identical extract reads
    the cache. Writes features.safetensors (pass it to `fit --features`) and results.json: `features`,
    `cache`, `cached`, `source`, `dataset`, `blocks`, `timesteps`, `dim`, `train_images`, `test_images`,
    `leaky`, `seconds`.
    """
    fields = {"model": "model", "source": "source", "dataset": "dataset", "timesteps": "timesteps",
              "blocks": "blocks", "noise_draws": "noise_draws", "weights": "weights",
              "train_per_class": "train_per_class", "test_per_class": "test_per_class",
              "vae_sample_z": "vae_sample_z", "label_conditioning": "label_conditioning", "batch_size": "batch_size",
              "device": "device", "cache_dir": "cache_dir", "cache": "cache", "seed": "seed"}
    config = resolve_config(ExtractConfig(), ctx, fields, overrides)
    inputs = None

    def validate(cfg: ExtractConfig) -> None:
        nonlocal inputs
        from diffclassify.extract import prepare

        inputs = prepare(cfg, data_root)

    run = start_run(ctx, config, package=PACKAGE, command="extract",
                    name=f"extract-{config.source}-{_name(config.dataset or 'model')}", validate=validate)
    if run is None:
        return
    from diffclassify.extract import run_extraction, write_run_features

    result = run_extraction(inputs)
    results = write_run_features(result, run)
    run.write_results(results)
    if run.is_main:
        _echo_table([{k: results[k] for k in ("source", "dim", "train_images", "test_images", "cached", "seconds")}])
        click.echo(f"features: {run.path / 'features.safetensors'}")


# ------------------------------------------------------------------------------------------ fit


@main.command()
@click.option("--features", "features", required=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="A features.safetensors from `diffclassify extract`.")
@click.option("--head", type=click.Choice(HEADS), default=None, help="Linear, or Linear–ReLU–Linear [default: linear].")
@click.option("--per-class", default=None, metavar="S[,S2,...]", help="Labelled images per class [default: 32].")
@click.option("--seeds", type=int, default=None, help="Seeds per size (seed, seed+1, ...) [default: 3].")
@click.option("--epochs", type=int, default=None, help="Head epochs [default: 90].")
@click.option("--batch-size", type=int, default=None, help="Head minibatch [default: 32].")
@click.option("--lr", type=float, default=None, help="Adam learning rate [default: 1e-3].")
@click.option("--standardize/--no-standardize", default=None,
              help="z-score features with the file's (unlabelled) training rows; off = the original's raw features "
                   "[default: on].")
@click.option("--split", type=click.Choice(["first", "random"]), default=None,
              help="Labelled set: the first S of each class (the original), or S drawn per seed [default: first].")
@click.option("--test-source", type=click.Choice(["test", "train-next"]), default=None,
              help="The real test split, or the original's next images of the training split [default: test].")
@click.option("--test-per-class", type=int, default=None,
              help="test: keep the first N test images per class; train-next: N per class [default: all / S].")
@click.option("--dataset", default=None, metavar=DATASETS, help="Refuse a features file of another dataset.")
@click.option("--source", type=click.Choice(SOURCES), default=None, help="Refuse a features file of another source.")
@click.option("--device", default=None, help="Torch device for the heads [default: cpu].")
@run_options(data=False)
@click.pass_context
def fit(ctx: click.Context, overrides: tuple[str, ...], **_: object) -> None:
    """Train small heads on S labelled images per class and test them (spec §6), mean ± std over seeds.

    All sizes × seeds train together as one batched run. results.json: `rows` (each: `source`, `head`,
    `per_class`, `timestep`, `acc_mean`, `acc_std`, `seeds`, `accs`, `dim`, `test_images`, `leaky`; accuracy
    in percent) and `features`.
    """
    fields = {"features": "features", "head": "head", "per_class": "per_class", "seeds": "seeds", "seed": "seed",
              "epochs": "protocol.epochs", "batch_size": "protocol.batch_size", "lr": "protocol.lr",
              "standardize": "protocol.standardize", "split": "protocol.split", "test_source": "protocol.test_source",
              "test_per_class": "protocol.test_per_class", "dataset": "dataset", "source": "source",
              "device": "protocol.device"}
    config = resolve_config(FitConfig(), ctx, fields, overrides)
    loaded = None

    def validate(cfg: FitConfig) -> None:
        nonlocal loaded
        from diffclassify.data import dataset_name
        from diffclassify.features import FeatureSet
        from diffclassify.fewshot import check_features, plan_runs

        loaded = FeatureSet.load(cfg.features)
        check_features(loaded, cfg.features, None if cfg.dataset is None else dataset_name(cfg.dataset), cfg.source)
        plan_runs(loaded, cfg.per_class, [cfg.seed], cfg.protocol, cfg.features)

    run = start_run(ctx, config, package=PACKAGE, command="fit", name=f"fit-{config.head}", validate=validate)
    if run is None:
        return
    from diffclassify.fewshot import fit_heads

    seeds = list(range(config.seed, config.seed + config.seeds))
    rows = fit_heads(loaded, config.head, config.per_class, seeds, config.protocol, config.features)
    run.write_results({"rows": rows, "features": config.features, "feature_set": loaded.describe()})
    if run.is_main:
        if rows[0]["leaky"]:
            click.echo("warning: these features come from a label-conditioned model given the true labels (leaky)")
        _echo_table([{k: r[k] for k in ("source", "head", "per_class", "timestep", "acc_mean", "acc_std", "seeds")}
                     for r in rows])


# ------------------------------------------------------------------------------------------ sweep


@main.command()
@click.option("--dataset", default=None, metavar=DATASETS, help="Dataset [default: from the preset].")
@click.option("--ddpm", default=None, metavar="RUN_DIR", help="A train-ddpm run (needed for the ddpm source).")
@click.option("--vae", default=None, metavar="RUN_DIR", help="A train-vae run (needed for the vae-* sources).")
@click.option("--sources", default=None, metavar="S1,S2,...",
              help=f"Feature sources among {', '.join(SOURCES)} [default: ddpm,vae-encoder,vae-decoder,pixels].")
@click.option("--features", "features", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Extra features files to include (repeatable); they must be of --dataset.")
@click.option("--heads", default=None, metavar="H1,H2", help="Heads [default: linear,mlp].")
@click.option("--sizes", default=None, metavar="S1,S2,...", help="Labelled images per class [default: from preset].")
@click.option("--seeds", type=int, default=None, help="Seeds per size [default: 3].")
@click.option("--timestep", "timesteps", default=None, metavar="T[,T2,...]",
              help="DDPM feature timestep(s) of the labels sweep [default: 100 MNIST, 50 CIFAR].")
@click.option("--t-list", default=None, metavar="T1,T2,...",
              help="Timesteps of the timestep sweep ('' skips it) [default: the original's 18].")
@click.option("--t-sizes", default=None, metavar="S1,...", help="Labels per class in the timestep sweep [default: 32].")
@click.option("--blocks", default=None, metavar="B1,B2,...", help="U-Net blocks [default: the model's four].")
@click.option("--noise-draws", type=int, default=None, help="Noise draws averaged per image [default: 1].")
@click.option("--epochs", type=int, default=None, help="Head epochs [default: 90].")
@click.option("--standardize/--no-standardize", default=None,
              help="z-score features with the unlabelled training rows (off: raw, the original) [default: on].")
@click.option("--split", type=click.Choice(["first", "random"]), default=None, help="Labelled sets [default: first].")
@click.option("--test-source", type=click.Choice(["test", "train-next"]), default=None,
              help="Evaluation images [default: test].")
@click.option("--device", default=None, help="Torch device [default: cpu].")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False), help="Feature cache folder.")
@run_options(presets=list(SWEEP_PRESETS), default_preset=None)
@click.pass_context
def sweep(ctx: click.Context, dataset: str | None, preset: str | None, overrides: tuple[str, ...],
          data_root: str | None, **_: object) -> None:
    """Accuracy against labels per class × heads × feature sources, and against the DDPM timestep.

    Presets: mnist (2…512 per class, the original's 18-point t sweep), mnist-cpu (1, 2, 5, 10, 20, 50 per
    class), digits, cifar10, cifar10-subset. Feature files are cached, so a repeated sweep only retrains heads.
    Writes accuracy_vs_labels.png, accuracy_vs_timestep.png and results.json: `rows` (each: `sweep` = labels |
    timestep, `source`, `head`, `per_class`, `timestep`, `acc_mean`, `acc_std`, `seeds`, `accs`, `dim`,
    `test_images`, `leaky`; percent), `features` (files used, `cached`), `plots`, `dataset`.
    """
    fields = {"dataset": "dataset", "ddpm": "ddpm", "vae": "vae", "sources": "sources", "features": "features",
              "heads": "heads", "sizes": "sizes", "seeds": "seeds", "seed": "seed", "timesteps": "timesteps",
              "t_list": "t_list", "t_sizes": "t_sizes", "blocks": "blocks", "noise_draws": "noise_draws",
              "epochs": "protocol.epochs", "standardize": "protocol.standardize", "split": "protocol.split",
              "test_source": "protocol.test_source",
              "device": "protocol.device", "cache_dir": "cache_dir"}
    base = SWEEP_PRESETS[preset or preset_for(SWEEP_PRESETS, dataset or "mnist", "mnist")]
    config = resolve_config(base, ctx, fields, overrides)
    prepared = None

    def validate(cfg) -> None:
        nonlocal prepared
        from diffclassify.sweep import Sweep

        prepared = Sweep(cfg, data_root)

    run = start_run(ctx, config, package=PACKAGE, command="sweep", name=f"sweep-{_name(config.dataset)}",
                    validate=validate)
    if run is None:
        return
    from diffclassify.sweep import pivot_table, timestep_table, write_plots

    results = prepared.run(log=click.echo if run.is_main else (lambda _: None))
    if run.is_main:
        results["plots"] = write_plots(results, run.path)
    run.write_results(results)
    if run.is_main:
        labels = [r for r in results["rows"] if r["sweep"] == "labels"]
        steps = [r for r in results["rows"] if r["sweep"] == "timestep"]
        if labels:
            click.echo("test accuracy (%), mean ± std over seeds, by labelled images per class:")
            _echo_table(pivot_table(labels))
        if steps:
            click.echo("timestep sweep (DDPM features):")
            _echo_table(timestep_table(steps))
        click.echo(f"run directory: {run.path}")
