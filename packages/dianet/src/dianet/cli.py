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
from diffcore.errors import ConfigError

from dianet.config import MODEL_NAMES, RECIPES, EvalConfig, family

PACKAGE = "dianet"
PRECISIONS = click.Choice(["no", "fp16", "bf16"])


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name=PACKAGE)
def main() -> None:
    """DIANet (Huang et al., AAAI 2020): one LSTM-style attention unit shared by all blocks of a stage."""


def _dataset_name(dataset: str) -> str:
    return Path(dataset).name or "data"


@main.command()
@click.option("--arch", type=click.Choice(MODEL_NAMES), required=True, metavar="NAME",
              help="Registered model (`dianet models` lists them); its paper recipe (spec §6) is the starting config.")
@click.option("--dataset", default=None, metavar="cifar10|cifar100|cifar10-subset|DIR",
              help="Dataset name or an image folder (DIR/train, DIR/val) [default: from the recipe].")
@click.option("--epochs", type=int, default=None, help="Epochs [default: from the recipe].")
@click.option("--schedule", default=None, metavar="E1,E2,...",
              help="0-based epochs at whose start the LR is multiplied by --gamma [default: from the recipe].")
@click.option("--gamma", type=float, default=None, help="LR decay factor [default: from the recipe].")
@click.option("--lr", type=float, default=None, help="Initial learning rate [default: 0.1].")
@click.option("--wd", type=float, default=None, help="Weight decay, on all parameters [default: from the recipe].")
@click.option("--batch-size", type=int, default=None,
              help="Global batch of one step, over all processes [default: 128].")
@click.option("--mixed-precision", type=PRECISIONS, default=None,
              help="Autocast dtype (fp16 needs a GPU) [default: no].")
@click.option("--channels-last", is_flag=True, help="Channels-last memory format for the model and its inputs.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model (in place).")
@run_options(presets=list(RECIPES), default_preset=None, resume=True)
@click.pass_context
def train(ctx: click.Context, arch: str, overrides: tuple[str, ...], data_root: str | None, preset: str | None,
          **_: object) -> None:
    """Train a DIANet (or its plain / SE twin) with the paper's recipe for that architecture.

    The recipe (--preset, default: the one filed under the architecture; dia_resnet50 also has
    dia_resnet50-ean) sets every field; each option given overrides its field only; --set KEY=VALUE
    reaches the rest (e.g. --set model.cell=lstm, --set model.share=none, --set model.layers=2,2,2,
    --set train_limit=2000, --set num_workers=0). Runs unchanged under `accelerate launch -m dianet train ...`.

    Writes config.json, meta.json, metrics.jsonl (per epoch: lr, train_loss, test_loss, test_acc), the final
    weights in model/ (safetensors, load with diffcore.checkpoint.load_pretrained), state/ for --resume, and
    results.json: `test_acc_final` (test accuracy % after the last epoch), `test_acc_best` (best per-epoch
    test accuracy %, the selection the original README most likely reports) and `best_epoch` (1-based), plus
    `test_loss_final`, `train_loss_first`, `train_loss_final`, `params`, `epochs`, `steps`, `num_classes`,
    `train_images`, `test_images`, `world_size`, `mixed_precision`, `seconds`.
    """
    fields = {"arch": "arch", "dataset": "dataset", "epochs": "epochs", "schedule": "schedule", "gamma": "gamma",
              "lr": "lr", "wd": "weight_decay", "batch_size": "batch_size", "mixed_precision": "mixed_precision",
              "channels_last": "channels_last", "compile_": "compile", "seed": "seed"}
    base = dataclasses.replace(RECIPES[preset or family(arch)], arch=arch)
    config = resolve_config(base, ctx, fields, overrides)
    from dianet.train import run_train, validate

    run = start_run(ctx, config, package=PACKAGE, command="train",
                    name=f"train-{arch}-{_dataset_name(config.dataset)}", validate=validate)
    if run is None:
        return
    results = run_train(config, run, data_root=data_root)
    run.write_results(results)
    if run.is_main:
        _print(results, ["arch", "dataset", "epochs", "params", "test_acc_final", "test_acc_best", "best_epoch",
                         "seconds"])
        click.echo(f"run directory: {run.path}")


@main.command("eval")
@click.option("--checkpoint", type=click.Path(file_okay=False), required=True,
              help="Exported model folder (a run's model/, or `dianet convert` output).")
@click.option("--dataset", default=None, metavar="cifar10|cifar100|cifar10-subset|DIR",
              help="Dataset whose test split is evaluated [default: the one it was trained on].")
@click.option("--batch-size", "eval_batch_size", type=int, default=None, help="Global eval batch [default: 100].")
@click.option("--mixed-precision", type=PRECISIONS, default=None, help="Autocast dtype [default: no].")
@click.option("--channels-last", is_flag=True, help="Channels-last memory format.")
@run_options()
@click.pass_context
def evaluate(ctx: click.Context, checkpoint: str, overrides: tuple[str, ...], data_root: str | None,
             **_: object) -> None:
    """Test accuracy of an exported model.

    results.json: `test_acc` (%), `test_loss`, `test_images`, `params`, `arch`, `dataset`, `checkpoint`, `seconds`.
    """
    from diffcore.checkpoint import read_checkpoint_config

    header = read_checkpoint_config(checkpoint)
    base = EvalConfig(checkpoint=checkpoint, dataset=header.get("dataset") or "cifar100",
                      norm_stats=header.get("norm_stats", "cifar10"))
    fields = ["dataset", "eval_batch_size", "mixed_precision", "channels_last", "seed"]
    config = resolve_config(base, ctx, fields, overrides)
    from dianet.train import run_eval

    run = start_run(ctx, config, package=PACKAGE, command="eval",
                    name=f"eval-{header.get('arch', 'model')}-{_dataset_name(config.dataset)}")
    if run is None:
        return
    results = run_eval(config, run, data_root=data_root)
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
    from diffcore.runs import format_table

    click.echo(format_table(rows))


@main.command()
@click.argument("source", type=click.Path(dir_okay=False, exists=True))
@click.argument("output", type=click.Path(file_okay=False))
def convert(source: str, output: str) -> None:
    """Convert an official gbup-group/DIANet checkpoint (.pth / .pth.tar) into an exported model folder.

    SOURCE is read with torch.load(weights_only=True); OUTPUT gets model.safetensors + config.json in our
    layout (the architecture is read off the tensors). Evaluate it with `dianet eval --checkpoint OUTPUT`.
    """
    from dianet.convert import convert_checkpoint

    info = convert_checkpoint(source, output)
    _print(info, ["arch", "layers", "widths", "num_classes", "params", "tensors", "output"])


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Also write the summary as JSON.")
def summarize(run_dirs: tuple[str, ...], output: str | None) -> None:
    """Mean ± std (population) of `test_acc_final` and `test_acc_best` over runs, per arch and dataset
    (the paper's protocol: 5 seeds per model)."""
    import statistics

    groups: dict[tuple[str, str], list[dict]] = {}
    for run_dir in run_dirs:
        path = Path(run_dir) / "results.json"
        if not path.exists():
            raise ConfigError(f"{run_dir} has no results.json (an unfinished run?)")
        results = json.loads(path.read_text())
        groups.setdefault((results["arch"], results["dataset"]), []).append(results)
    rows = []
    for (arch, dataset), runs in groups.items():
        row = {"arch": arch, "dataset": dataset, "runs": len(runs)}
        for key in ("test_acc_final", "test_acc_best"):
            values = [r[key] for r in runs]
            row[f"{key}_mean"], row[f"{key}_std"] = statistics.fmean(values), statistics.pstdev(values)
        rows.append(row)
    from diffcore.runs import format_table

    click.echo(format_table(rows, floatfmt=".2f"))
    if output:
        Path(output).write_text(json.dumps(rows, indent=2) + "\n")


def _print(results: dict, keys: list[str]) -> None:
    from diffcore.runs import format_table

    click.echo(format_table([{k: results[k] for k in keys if k in results}]))
