"""``diff-resnet fewshot``: backbone pre-training, feature extraction and episodic evaluation (§4.3).

torch is imported inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click
from diffcore.cli import Group, resolve_config, run_options, start_run

from diff_resnet.config import PACKAGE
from diff_resnet.distributed import single_process
from diff_resnet.fewshot.config import FEWSHOT_DATASETS, FEWSHOT_PRESETS, FewShotConfig

DATASET_HELP = (f"{' | '.join(FEWSHOT_DATASETS)}, or a folder with images/ and split/{{train,val,test}}.csv. "
                "mini/tiered/cub are looked up as <data-root>/<name>/ (the original's fewshot/data layout).")


@click.group(cls=Group)
def fewshot() -> None:
    """Transductive few-shot classification (§4.3): `backbone` → `extract` → `eval`.

    A backbone pre-trained on the base classes embeds the novel classes once (cached); every 5-way episode
    then trains its own small diffusion head from scratch, many episodes at a time.
    """


@fewshot.command()
@click.option("--dataset", default="mini", help=DATASET_HELP)
@click.option("--backbone", "backbone_name", type=click.Choice(["resnet18", "wrn28_10", "conv4"]),
              default="resnet18", help="ResNet-18 (84×84, no max-pool), WRN-28-10, or the small conv4 for stand-ins.")
@click.option("--epochs", type=int, default=None,
              help="Epochs [default: 100 mini/tiered/folders, 400 cub, 6 mnist, 15 cifar10-subset].")
@click.option("--batch-size", type=int, default=256, help="Global batch of one step (split over processes).")
@click.option("--lr", type=float, default=0.1, help="SGD learning rate (MultiStepLR at 50 % and 75 % of the epochs).")
@click.option("--workers", type=int, default=0, help="DataLoader worker processes (image decoding).")
@run_options(seed=1, resume=True)
@click.pass_context
def backbone(ctx: click.Context, dataset: str, backbone_name: str, overrides: tuple[str, ...],
             data_root: str | None, **_: object) -> None:
    """Pre-train a backbone on the base classes (§4.3a) and export it as <run>/model (safetensors).

    Label smoothing 0.1, SGD(0.1, 0.9, 5e-4), MultiStepLR, RandomResizedCrop + ColorJitter + flip. With
    validation classes (mini, tiered, cub, folders) the checkpoint with the best 1-shot nearest-prototype
    accuracy on 1000 val episodes from epoch ⌊0.75E⌋ on is kept; the stand-ins (mnist, cifar10-subset:
    base classes 0–4, novel 5–9) keep the last epoch. Accelerate-aware: `accelerate launch -m diff_resnet fewshot
    backbone ...` spreads the batches over processes (the batch stays global); `--resume RUN_DIR` continues.

    results.json: `dataset`, `backbone`, `base_classes`, `train_images`, `feature_dim`, `epochs`,
    `selected_epoch`, `selection`, `best_val_proto_acc` (%, null without validation classes),
    `final_metrics` (last evaluation: `val_proto_acc` or `base_test_loss`/`base_test_acc`), `model_dir`,
    `world_size`, `seconds`.
    """
    from diff_resnet.fewshot.backbone import (
        BackboneConfig,
        backbone_config,
        load_backbone_data,
        print_backbone_results,
        train_backbone,
    )

    fields = {"epochs": "train.epochs", "batch_size": "train.batch_size", "lr": "lr", "workers": "train.num_workers",
              "seed": "train.seed"}
    config = resolve_config(backbone_config(dataset, backbone_name), ctx, fields, overrides)
    loaded = {}

    def load_data(config: BackboneConfig) -> None:  # a missing dataset fails here, before the run directory exists
        loaded["data"] = load_backbone_data(config, data_root)

    run = start_run(ctx, config, package=PACKAGE, command="fewshot backbone",
                    name=f"fewshot-backbone-{Path(config.dataset).name}-{config.backbone}", validate=load_data)
    if run is None:
        return
    results = train_backbone(config, run, loaded["data"])
    if run.is_main:
        print_backbone_results(results)
        click.echo(f"run directory: {run.path}")


@fewshot.command()
@click.option("--checkpoint", required=True, type=click.Path(file_okay=False),
              help="Exported backbone folder (<backbone run>/model, or one made by `fewshot convert`).")
@click.option("--dataset", default=None, help=f"{DATASET_HELP} [default: the checkpoint's dataset]")
@click.option("--batch-size", type=int, default=1000, help="Images per forward pass.")
@click.option("--workers", type=int, default=0, help="DataLoader worker processes.")
@click.option("--device", default="auto", help="torch device, or auto (CUDA when available).")
@run_options(seed=None)
@click.pass_context
def extract(ctx: click.Context, overrides: tuple[str, ...], data_root: str | None, **_: object) -> None:
    """Features of the novel classes and the base-class mean (§4.3b), cached by the checkpoint's hash.

    Writes a feature file (safetensors: `features` [N, d] float, `labels` [N] int64, `base_mean` [d] float;
    see the package README) to the cache ($DIFFNETS_CACHE/diff-resnet/features/); the next run with the same
    checkpoint and dataset reuses it. One process only (not Accelerate-aware).

    results.json: `features_file`, `cached` (true when reused), `path`, `samples`, `dim`, `classes`,
    `dataset`, `backbone`, `checkpoint_sha256`, `base_images`, `seconds`.
    """
    from diffcore.runs import format_table

    from diff_resnet.fewshot.config import ExtractConfig
    from diff_resnet.fewshot.data import plan_extract, run_extract

    single_process("fewshot extract")
    fields = {"checkpoint": "checkpoint", "dataset": "dataset", "batch_size": "batch_size", "workers": "num_workers",
              "device": "device"}
    config = resolve_config(ExtractConfig(), ctx, fields, overrides)
    planned = {}

    def plan(config: ExtractConfig) -> None:  # checkpoint and images are read before the run directory exists
        planned["plan"] = plan_extract(config, data_root)

    run = start_run(ctx, config, package=PACKAGE, command="fewshot extract", name="fewshot-extract", validate=plan)
    if run is None:
        return
    results = run_extract(config, planned["plan"])
    run.write_results(results)
    click.echo(format_table([{"features file": results["features_file"], "cached": results["cached"],
                              "samples": results["samples"], "dim": results["dim"], "classes": results["classes"],
                              "s": f"{results['seconds']:.1f}"}]))
    click.echo(f"run directory: {run.path}")


@fewshot.command("eval")
@click.option("--features", "features_file", required=True, type=click.Path(dir_okay=False),
              help="Feature file from `fewshot extract` (or your own: features [N, d], labels [N], base_mean [d]).")
@click.option("--method", type=click.Choice(["simple", "laplacian", "diffusion"]), default="diffusion",
              help="SimpleShot, LaplacianShot-style baseline, or Diff-ResNet.")
@click.option("--shot", type=int, default=1, help="Support images per class (the paper: 1 or 5).")
@click.option("--way", type=int, default=5, help="Classes per episode (≤ the novel classes).")
@click.option("--query", type=int, default=15, help="Query images per class.")
@click.option("--episodes", type=int, default=10_000, help="Episodes (the paper: 10,000).")
@click.option("--step-size", type=float, default=None, help="Diffusion step size γ [default: from preset].")
@click.option("--layers", type=int, default=None, help="Diffusion steps T, 0 = no diffusion [default: from preset].")
@click.option("--n-top", type=int, default=None, help="kNN rank cut-off (self = 1st) [default: from preset].")
@click.option("--sigma", type=int, default=None, help="Rank of the local scale [default: from preset].")
@click.option("--lamda", type=float, default=None, help="LaplacianShot λ [default: from preset].")
@click.option("--alpha", type=float, default=None, help="Prototype-loss weight α, 0 = off [default: from preset].")
@click.option("--batch-episodes", type=int, default=None,
              help="Episodes trained together [default: from preset]; results do not depend on it.")
@click.option("--device", default=None, help="torch device [default: from preset (cpu)].")
@run_options(presets=list(FEWSHOT_PRESETS), default_preset="mini-resnet18-1shot", seed=1, data=False)
@click.pass_context
def evaluate(ctx: click.Context, features_file: str, preset: str, overrides: tuple[str, ...], **_: object) -> None:
    """Episodic evaluation (§4.3c–f): mean query accuracy ± 95 % confidence interval over the episodes.

    Episode i draws its classes, images and head initialisation from its own seed (from --seed and i), so
    the batch size never changes the results; `--set batched=false` runs the one-at-a-time reference.
    Accelerate-aware: under `accelerate launch -m diff_resnet fewshot eval ...` (or torchrun) each process
    takes a contiguous share of the episodes and rank 0 writes the same results as one process.

    results.json: `method`, `way`, `shot`, `query`, `episodes`, `acc_mean`, `acc_ci95` (1.96·std/√n),
    `acc_std` (ddof 0), `episode_accs` (% per episode), `features` (path, samples, dim, classes, dataset,
    backbone, checkpoint_sha256), `seed`, `raw_features`, `mu`, `batched`, `batch_episodes`, `world_size`,
    `seconds`, `episodes_per_second`.
    """
    fields = ["method", "shot", "way", "query", "episodes", "step_size", "layers", "n_top", "sigma", "lamda", "alpha",
              "batch_episodes", "device", "seed"]
    config = resolve_config(FEWSHOT_PRESETS[preset], ctx, fields, overrides)
    _run_episodes(ctx, config, features_file, "fewshot eval", f"fewshot-{config.method}-{config.shot}shot",
                  {"features": features_file, "preset": preset})


def _run_episodes(ctx: click.Context, config: FewShotConfig, features_file: str, command: str, name: str,
                  extra_meta: dict[str, str]) -> None:
    """The episode commands' one path: validate the config and the feature file → run → results."""
    from diff_resnet.fewshot.data import load_features
    from diff_resnet.fewshot.episodes import print_fewshot_results, run_fewshot, validate_features

    loaded = {}

    def load_and_check(config: FewShotConfig) -> None:  # reading the file is part of validation: nothing written yet
        loaded["features"] = load_features(features_file)
        validate_features(loaded["features"], config)

    run = start_run(ctx, config, package=PACKAGE, command=command, name=name, validate=load_and_check,
                    extra_meta=extra_meta)
    if run is None:
        return
    results = run_fewshot(loaded["features"], config, run)
    run.write_results(results)
    if run.is_main:
        print_fewshot_results(results)
        click.echo(f"run directory: {run.path}")


@fewshot.command()
@click.option("--features", "features_file", required=True, type=click.Path(dir_okay=False),
              help="Feature file from `fewshot extract` (or your own: features [N, d], labels [N], base_mean [d]).")
@click.option("--step-size", type=float, required=True, help="Diffusion step size γ.")
@click.option("--layers", type=int, required=True, help="Diffusion steps T inside the network, 0 = none.")
@click.option("--n-top", type=int, required=True, help="kNN rank cut-off of W′ (self = 1st).")
@click.option("--sigma", type=int, required=True, help="Rank of the local scale of W′.")
@click.option("--mu", type=float, default=0.0, help="Weight μ of the smoothness loss μ Σ W′_ij ‖z_i − z_j‖², 0 = off.")
@click.option("--shot", type=int, default=1, help="Support images per class (the paper: 1 or 5).")
@click.option("--way", type=int, default=5, help="Classes per episode.")
@click.option("--query", type=int, default=15, help="Query images per class.")
@click.option("--episodes", type=int, default=1000, help="Episodes (the paper's ablation: 1000).")
@click.option("--batch-episodes", type=int, default=None, help="Episodes trained together [default: 100].")
@click.option("--device", default=None, help="torch device [default: cpu].")
@run_options(seed=1, data=False)
@click.pass_context
def ablation(ctx: click.Context, features_file: str, overrides: tuple[str, ...], **_: object) -> None:
    """The ablation of the paper's Table 2 (§4.3e, `fewshot/ablation.py`): diffusion inside the network
    versus graph smoothness as a loss.

    The episode pipeline of `fewshot eval --method diffusion` on raw features (no centring, normalisation,
    cross-domain shift or rectification): a fresh head h = x + fc2(ReLU(fc1 x)), T diffusion steps with
    L = diag(W′1) − W′, a linear classifier, 100 SGD steps on the support cross-entropy + μ Σ_ij W′_ij ‖z_i − z_j‖²
    over the logits z of all points. `--layers T --mu 0` is diffusion in the network, `--layers 0 --mu μ` the
    smoothness loss, `--layers 0 --mu 0` neither. Accelerate-aware like `fewshot eval`; results.json as there.
    """
    from diff_resnet.fewshot.config import ABLATION_BASE

    fields = ["step_size", "layers", "n_top", "sigma", "mu", "shot", "way", "query", "episodes", "batch_episodes",
              "device", "seed"]
    config = resolve_config(ABLATION_BASE, ctx, fields, overrides)
    _run_episodes(ctx, config, features_file, "fewshot ablation",
                  f"fewshot-ablation-T{config.layers}-mu{config.mu:g}-{config.shot}shot", {"features": features_file})


@fewshot.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, exists=True),
              help="An original saved_models/<dataset>_<backbone>.pt (DataParallel state dict).")
@click.option("--backbone", "backbone_name", type=click.Choice(["resnet18", "wrn28_10"]), required=True,
              help="Its architecture (the original's `wideres` is wrn28_10).")
@click.option("--dataset", type=click.Choice(["mini", "tiered", "cub"]), required=True,
              help="Its base classes: 64 mini, 351 tiered, 100 cub.")
@click.option("--output-dir", required=True, type=click.Path(file_okay=False), help="Folder to export into.")
@click.option("--overwrite", is_flag=True, help="Replace an exported model already in --output-dir.")
def convert(checkpoint: str, backbone_name: str, dataset: str, output_dir: str, overwrite: bool) -> None:
    """Convert an original pre-trained backbone (.pt, read weights-only, `module.` stripped) to safetensors."""
    from diff_resnet.fewshot.backbone import check_export_dir, convert_checkpoint

    spec = FEWSHOT_DATASETS[dataset]
    check_export_dir(output_dir, overwrite)
    path = convert_checkpoint(checkpoint, backbone_name, spec.num_base_classes or 0, output_dir, dataset)
    click.echo(f"exported {backbone_name} ({spec.title}) to {path}; "
               f"next: diff-resnet fewshot extract --checkpoint {path}")
