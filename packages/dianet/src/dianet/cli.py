"""``dianet`` command line: ``train``, ``eval``, ``models``, ``convert``, ``summarize``.

Commands build a config (recipe of the architecture ← options typed ← ``--set``), open a run directory and
call :mod:`dianet.train`. torch is imported inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click
from diffcore.cli import Group, resolve_config, run_options, start_run
from diffcore.runs import format_table

from dianet.names import MODEL_NAMES, RECIPE_NAMES, SELECT_ON, family

PACKAGE = "dianet"
PRECISIONS = click.Choice(["no", "fp16", "bf16"])
NORM_STATS = click.Choice(["cifar10", "cifar100", "imagenet"])


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name=PACKAGE)
def main() -> None:
    """DIANet (Huang et al., AAAI 2020): one LSTM-style attention unit shared by all blocks of a stage."""


def _dataset_name(dataset: str) -> str:
    return Path(dataset).name or "data"


def _select_on(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    return SELECT_ON.get(value) if value else None


@main.command()
@click.option("--arch", type=click.Choice(MODEL_NAMES), default=None, metavar="NAME",
              help="Registered model (`dianet models` lists them); its paper recipe (spec §6) is the starting config. "
                   "Required unless --resume.")
@click.option("--dataset", default=None, metavar="cifar10|cifar100|cifar10-subset|DIR",
              help="Dataset name or an image folder (DIR/train, DIR/val) [default: from the recipe].")
@click.option("--epochs", type=int, default=None, help="Epochs (train.epochs) [default: from the recipe].")
@click.option("--schedule", default=None, metavar="E1,E2,...",
              help="0-based epochs at whose start the LR is multiplied by --gamma [default: from the recipe].")
@click.option("--gamma", type=float, default=None, help="LR decay factor [default: from the recipe].")
@click.option("--lr", type=float, default=None, help="Initial learning rate [default: 0.1].")
@click.option("--wd", type=float, default=None, help="Weight decay, on all parameters [default: from the recipe].")
@click.option("--batch-size", type=int, default=None,
              help="Global batch of one step, over all processes (train.batch_size) [default: 128].")
@click.option("--mixed-precision", type=PRECISIONS, default=None,
              help="Autocast dtype (fp16 needs a GPU) [default: no].")
@click.option("--norm-stats", type=NORM_STATS, default=None,
              help="Normalisation statistics; the original uses CIFAR-10's for CIFAR-100 too [default: cifar10].")
@click.option("--seeds", type=int, default=None,
              help="Train N runs, seeds --seed, --seed + 1, ..., in RUN_DIR/seed<k>/, and report mean ± std "
                   "(the paper's protocol: 5) [default: 1].")
@click.option("--val-split", type=int, default=None, metavar="N",
              help="Hold N training images out as a validation split (class-balanced, the same images for every "
                   "seed) [default: 0].")
@click.option("--select-on", type=click.Choice(list(SELECT_ON)), default=None, callback=_select_on,
              help="Accuracy that selects the best epoch (model_best/, test_acc_selected): test, as the original, "
                   "or val (needs --val-split) [default: test].")
@click.option("--channels-last", is_flag=True, help="Channels-last memory format for the model and its inputs.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model (in place).")
@run_options(presets=list(RECIPE_NAMES), default_preset=None, resume=True)
@click.pass_context
def train(ctx: click.Context, arch: str | None, overrides: tuple[str, ...], data_root: str | None,
          preset: str | None, resume: str | None, dry_run: bool, **_: object) -> None:
    """Train a DIANet (or its plain / SE twin) with the paper's recipe for that architecture.

    The recipe (--preset, default: the one filed under the architecture; dia_resnet50 also has
    dia_resnet50-ean) sets every field; each option given overrides its field only; --set KEY=VALUE
    reaches the rest: the model (--set model.cell=lstm, model.share=none, model.layers=2,2,2,
    model.widths=bearpaw, model.num_layers=2, model.dia_bias_init=official, ...), the loop (--set
    train.num_workers=0, train.progress=false, ...), train_limit=2000, snapshot_epochs=50. `--resume RUN_DIR`
    continues an interrupted run (its saved config; options typed must agree). Accelerate-aware: the same
    command runs under `accelerate launch -m dianet train ...` or `torchrun ... -m dianet train ...` (data
    parallel; every process writes to rank 0's run directory).

    Writes config.json, meta.json, metrics.jsonl (per epoch: lr, train_loss, train_acc, test_loss, test_acc,
    and val_loss, val_acc with --val-split), the last epoch's weights in model/, the selected epoch's in
    model_best/, those after 0-based epoch 50 in model_epoch50/ (safetensors; load with
    diffcore.checkpoint.load_pretrained), state/ for --resume, and results.json: `test_acc_final` (test
    accuracy % after the last epoch), `test_acc_best` and `best_epoch` (best per-epoch test accuracy, 1-based:
    the selection the original README most likely reports), `selected_on`, `selected_epoch` and
    `test_acc_selected` (the epoch chosen by --select-on), `val_acc_best`, `train_acc_final`,
    `test_loss_final`, `train_loss_first`, `train_loss_final`, `params`, `epochs`, `steps`, `seed`,
    `num_classes`, `train_images`, `val_images`, `test_images`, `world_size`, `mixed_precision`, `exports`,
    `seconds`. With --seeds N: one such run per seed in seed<k>/, and results.json holds `runs`, `seeds`,
    `<metric>_mean` / `<metric>_std` (population) of test_acc_final, test_acc_best (and test_acc_selected when
    selected on val), `run_dirs` and `per_seed`.
    """
    if arch is None and not resume:
        raise click.UsageError("Missing option '--arch' (or --resume RUN_DIR).")
    fields = {"arch": "arch", "dataset": "dataset", "epochs": "train.epochs", "schedule": "schedule",
              "gamma": "gamma", "lr": "lr", "wd": "weight_decay", "batch_size": "train.batch_size",
              "mixed_precision": "train.mixed_precision", "norm_stats": "norm_stats", "seeds": "seeds",
              "val_split": "val_split", "select_on": "train.monitor", "channels_last": "channels_last",
              "compile_": "compile", "seed": "train.seed"}
    from dianet.config import RECIPES, TrainRunConfig

    base = dataclasses.replace(RECIPES[preset or family(arch)], arch=arch) if arch else TrainRunConfig()
    config = resolve_config(base, ctx, fields, overrides)
    from dianet.train import prepare_train, run_train

    loaded = {}

    def validate(config: TrainRunConfig) -> None:
        loaded["splits"] = prepare_train(config, data_root, resume, load=not dry_run)

    run = start_run(ctx, config, package=PACKAGE, command="train",
                    name=f"train-{config.arch}-{_dataset_name(config.dataset)}", validate=validate)
    if run is None:
        return
    results = run_train(config, run, loaded["splits"])
    run.write_results(results)
    if not run.is_main:
        return
    if config.seeds > 1:
        from dianet.protocol import METRICS, display_rows

        per_seed = [{k: r[k] for k in ("seed", "epochs", *METRICS, "best_epoch", "selected_epoch") if k in r}
                    for r in results["per_seed"]]
        click.echo(format_table(per_seed, floatfmt=".2f"))
        click.echo(format_table(display_rows([results])))
    else:
        _print(results, ["arch", "dataset", "epochs", "params", "test_acc_final", "test_acc_best", "best_epoch",
                         *(["test_acc_selected", "selected_epoch"] if config.val_split else []), "seconds"])
    click.echo(f"run directory: {run.path}")


@main.command("eval")
@click.option("--checkpoint", type=click.Path(file_okay=False), required=True,
              help="Exported model folder (a run's model/ or model_best/, or `dianet convert` output).")
@click.option("--dataset", default=None, metavar="cifar10|cifar100|cifar10-subset|DIR",
              help="Dataset whose test split is evaluated [default: the one it was trained on].")
@click.option("--batch-size", "eval_batch_size", type=int, default=None, help="Global eval batch [default: 100].")
@click.option("--mixed-precision", type=PRECISIONS, default=None, help="Autocast dtype [default: no].")
@click.option("--channels-last", is_flag=True, help="Channels-last memory format.")
@run_options()
@click.pass_context
def evaluate(ctx: click.Context, checkpoint: str, overrides: tuple[str, ...], data_root: str | None,
             dry_run: bool, **_: object) -> None:
    """Test accuracy of an exported model. Accelerate-aware (the test set is split over the processes).

    results.json: `test_acc` (%), `test_loss`, `test_images`, `params`, `arch`, `dataset`, `checkpoint`, `seconds`.
    """
    from diffcore.checkpoint import read_checkpoint_config

    from dianet.config import EvalConfig

    header = read_checkpoint_config(checkpoint)
    base = EvalConfig(checkpoint=checkpoint, dataset=header.get("dataset") or "cifar100",
                      norm_stats=header.get("norm_stats", "cifar10"))
    fields = ["dataset", "eval_batch_size", "mixed_precision", "channels_last", "seed"]
    config = resolve_config(base, ctx, fields, overrides)
    from dianet.train import prepare_eval, run_eval

    loaded = {}

    def validate(config: EvalConfig) -> None:
        loaded["model"] = prepare_eval(config, data_root, load=not dry_run)

    run = start_run(ctx, config, package=PACKAGE, command="eval",
                    name=f"eval-{header.get('arch', 'model')}-{_dataset_name(config.dataset)}", validate=validate)
    if run is None:
        return
    results = run_eval(config, run, *loaded["model"])
    run.write_results(results)
    if run.is_main:
        _print(results, ["arch", "dataset", "test_images", "test_acc", "test_loss"])
        click.echo(f"run directory: {run.path}")


@main.command()
@click.option("--num-classes", type=int, default=None,
              help="Classifier size [default: 100 for the CIFAR models, 1000 for dia_resnet50*].")
def models(num_classes: int | None) -> None:
    """List the registered models (timm names) with their parameter counts."""
    import timm

    from dianet.models import model_names

    rows = []
    for name in model_names():
        model = timm.create_model(name, **({} if num_classes is None else {"num_classes": num_classes}))
        cfg = model.config
        rows.append({"model": name, "attn": cfg["attn"] or "-", "block": cfg["block"],
                     "layers": "/".join(map(str, cfg["layers"])), "widths": "/".join(map(str, cfg["widths"])),
                     "input": "x".join(map(str, model.pretrained_cfg["input_size"][1:])),
                     "classes": cfg["num_classes"], "params": f"{sum(p.numel() for p in model.parameters()):,}"})
    click.echo(format_table(rows))


@main.command()
@click.argument("source", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace the exported model already in OUTPUT.")
def convert(source: str, output: str, overwrite: bool) -> None:
    """Convert an official gbup-group/DIANet checkpoint (.pth / .pth.tar) into an exported model folder.

    SOURCE is read with torch.load(weights_only=True); OUTPUT (new or empty; an exported model only with
    --overwrite) gets model.safetensors + config.json in our layout (the architecture is read off the
    tensors). Evaluate it with `dianet eval --checkpoint OUTPUT`.
    """
    from dianet.convert import check_output, convert_checkpoint

    check_output(output, overwrite)
    info = convert_checkpoint(source, output)
    _print(info, ["arch", "layers", "widths", "num_classes", "params", "tensors", "output"])


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Also write the summary as JSON.")
def summarize(run_dirs: tuple[str, ...], output: str | None) -> None:
    """Mean ± std (population) of the test accuracies over seeds: final epoch, best epoch, and the epoch selected
    on a validation split where there is one (the paper's protocol: 5 seeds per model).

    RUN_DIRS are `dianet train` run directories (a `--seeds N` run stands for its N runs). Runs are grouped by
    their whole configuration minus the seed, so ablations are never pooled; the columns between dataset and
    runs name the settings that tell the groups apart. The same configuration twice with one seed is an error.
    """
    from dianet.protocol import display_rows, group_runs, load_runs, summary_rows

    rows = summary_rows(group_runs(load_runs(run_dirs)))
    click.echo(format_table(display_rows(rows)))
    if output:
        from diffcore.io import atomic_write_text

        atomic_write_text(output, json.dumps(rows, indent=2) + "\n")


def _print(results: dict, keys: list[str]) -> None:
    click.echo(format_table([{k: results[k] for k in keys if k in results}]))
