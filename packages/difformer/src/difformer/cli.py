"""``difformer`` command line: ``node``, ``instances``, ``temporal``, ``convert``, ``presets``.

Each run command resolves a config (the released setting for the dataset and kernel ← options typed ←
``--set``), validates it with the data it needs, then opens the run directory (diffcore's ``start_run``) and
runs. torch is imported inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click
from diffcore.cli import Group, resolve_config, run_options, start_run
from diffcore.errors import ConfigError

PACKAGE = "difformer"
KERNELS = click.Choice(["simple", "sigmoid"])
# The configs embed diffcore.train.TrainConfig, whose module imports torch: they load inside the commands.
PRESET = click.option("--preset", default=None, metavar="NAME",
                      help="Start from this released setting instead of the one for --dataset/--kernel "
                           "(`difformer presets` lists them).")


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name=PACKAGE)
def main() -> None:
    """DIFFormer (Wu et al., ICLR 2023): Transformers from energy-constrained diffusion.

    One layer = one explicit Euler step of dz_i/dt = sum_j s_ij (z_j - z_i) with an all-pair attention S:
    DIFFormer-s (--kernel simple, O(N)) or DIFFormer-a (--kernel sigmoid, O(N^2) time, blockwise memory).
    """


# Every model switch as an explicit --x/--no-x pair (spec §8, issue #14); typed ones override the preset.
MODEL_FIELDS = {"hidden_channels": "model.hidden_channels", "num_layers": "model.num_layers",
                "layer_norm": "model.use_bn", "residual": "model.use_residual", "value_weight": "model.use_weight",
                "source": "model.use_source", "qk_norm": "model.qk_norm", "degree_norm": "model.degree_norm"}


def optim_options(f):
    """Adam's learning rate and weight decay, options of every run command (defaults: from the preset)."""
    f = click.option("--weight-decay", type=float, default=None,
                     help="Adam weight decay [default: from the preset].")(f)
    return click.option("--lr", type=float, default=None, help="Adam learning rate [default: from the preset].")(f)


def model_options(f):
    """The DIFFormer switches of every run command (defaults: from the preset)."""
    options = [
        click.option("--hidden-channels", type=int, default=None, help="Width d [default: from the preset]."),
        click.option("--num-layers", type=int, default=None, help="Diffusion layers L [default: from the preset]."),
        click.option("--layer-norm/--no-layer-norm", default=None,
                     help="LayerNorm after the input layer and every step (the original's use_bn)."),
        click.option("--residual/--no-residual", default=None, help="h <- alpha*conv(h) + (1-alpha)*h (use_residual)."),
        click.option("--value-weight/--no-value-weight", default=None, help="Learn W_V; else V = h (use_weight)."),
        click.option("--source/--no-source", default=None, help="Add the input state h0 in every layer (use_source)."),
        click.option("--qk-norm", type=click.Choice(["global", "row"]), default=None,
                     help="Simple kernel: one Frobenius norm (released) or per-row l2 (paper notation; quirk 4)."),
        click.option("--degree-norm", type=click.Choice(["weighted", "count"]), default=None,
                     help="GCN degrees: weighted (PyG gcn_norm) or edge counts (the original; quirk 6)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _preset(table, name: str, preset: str | None, what: str):
    names = list(table)  # Presets raises ConfigError, not KeyError, for an unknown name: test membership on keys
    if preset is not None:
        if preset not in names:
            raise ConfigError(f"unknown preset {preset!r}; presets of this command: {', '.join(table)}")
        return table[preset]
    if name not in names:
        raise ConfigError(f"no released setting for {what} (no preset {name!r}); start from one of "
                          f"{', '.join(table)} with --preset and change fields with options or --set")
    return table[name]


def _name(dataset: str) -> str:
    return Path(dataset).stem if Path(dataset).suffix else dataset


def _print(rows: list[dict], run) -> None:
    from diffcore.runs import format_table

    if run.is_main:
        click.echo(format_table(rows, floatfmt=".4g"))
        click.echo(f"run directory: {run.path}")


def _legacy_node(config):
    return dataclasses.replace(config, reuse_first_split=True,
                               model=dataclasses.replace(config.model, degree_norm="count"))


# ------------------------------------------------------------------------------------------------ node


@main.command()
@click.option("--dataset", default="cora", metavar="NAME|FILE",
              help="cora, citeseer, pubmed, ogbn-proteins, pokec, film, chameleon, squirrel, or a graph file "
                   "(.npz/.pt: x [N,d], edge_index [2,E], y [N], optional edge_weight and train/val/test_mask "
                   "[N] or [N,R]).")
@click.option("--kernel", type=KERNELS, default="simple",
              help="simple = DIFFormer-s, sigmoid = DIFFormer-a; picks the released preset with the dataset.")
@click.option("--runs", type=int, default=None, help="Training runs (a fresh split each) [default: from the preset].")
@click.option("--epochs", type=int, default=None, help="Epochs per run [default: from the preset].")
@click.option("--reuse-first-split", is_flag=True,
              help="Every run on the first split (the original's Cora/CiteSeer/PubMed protocol, quirk 2).")
@click.option("--reproduce-original", is_flag=True,
              help="All legacy behaviours at once: --reuse-first-split and edge-count GCN degrees (quirk 6).")
@click.option("--batch-size", type=int, default=None,
              help="Train on random chunks of N nodes (induced subgraphs); evaluation stays full-graph.")
@click.option("--block-size", type=int, default=None,
              help="Query rows per block of the sigmoid kernel (memory ~ 12 x rows x N bytes) [default: auto].")
@click.option("--eval-device", type=click.Choice(["cpu", "auto"]), default=None,
              help="Where mini-batch runs evaluate the full graph [default: cpu].")
@optim_options
@click.option("--dropout", type=float, default=None, help="Dropout [default: from the preset].")
@click.option("--graph/--no-graph", default=None, help="DIFFormer's GCN branch on the input graph (use_graph).")
@model_options
@PRESET
@run_options(seed=None, resume=True)
@click.pass_context
def node(ctx: click.Context, dataset: str, kernel: str, reproduce_original: bool, batch_size: int | None,
         overrides: tuple[str, ...], data_root: str | None, preset: str | None, **_: object) -> None:
    """Node classification with the released setting for DATASET and KERNEL (spec §3.1-3.4, §4.3).

    Runs --runs trainings (seed + run) of a fixed number of epochs; after every evaluated epoch the full graph
    gives train/val/test accuracy; a run's result is the test value at its first best-validation epoch.
    Defaults: a fresh 20-per-class/500/1000 split per run (Planetoid), the dataset's splits (film, chameleon,
    squirrel, ogbn-proteins), a random 50/25/25 split (pokec). Large graphs train on node chunks (--batch-size).
    --set reaches every field (e.g. --set model.num_layers=4, --set model.qk_norm=row, --set split=random).

    Writes config.json, meta.json, run-<r>/ (metrics.jsonl, state/ for --resume, model/ = the selected model,
    result.json) and results.json: `test_acc_mean`, `test_acc_std` (percent, unbiased std over runs; ROC-AUC
    for ogbn-proteins, see `metric`), `test_acc` and `val_acc` (per run), `best_epoch`, `seconds_per_epoch`
    (training plus full evaluation), `split`, `split_sizes`, `params`, `num_nodes`, `num_edges`, `per_run`.
    """
    from difformer.config import NODE_PRESETS, node_preset_name

    base = _preset(NODE_PRESETS, node_preset_name(dataset, kernel), preset, f"--dataset {dataset} --kernel {kernel}")
    if reproduce_original:
        base = _legacy_node(base)
    if batch_size is not None:
        base = dataclasses.replace(base, minibatch=True)
    fields = {"dataset": "dataset", "kernel": "model.kernel", "runs": "runs", "epochs": "train.epochs",
              "reuse_first_split": "reuse_first_split", "batch_size": "train.batch_size",
              "block_size": "model.block_size", "eval_device": "eval_device", "lr": "lr",
              "weight_decay": "weight_decay", "dropout": "model.dropout", "graph": "model.use_graph",
              "seed": "train.seed", **MODEL_FIELDS}
    config = resolve_config(base, ctx, fields, overrides)
    loaded = {}

    def validate(config) -> None:
        from difformer.data import load_node_dataset
        from difformer.node import validate_node

        loaded["dataset"] = load_node_dataset(config.dataset, data_root, config.directed)
        validate_node(config, loaded["dataset"])

    run = start_run(ctx, config, package=PACKAGE, command="node", name=f"node-{_name(config.dataset)}-{kernel}",
                    validate=validate)
    if run is None:
        return
    from difformer.node import run_node

    results = run_node(config, run, loaded["dataset"], resume=run.resumed)
    run.write_results(results)
    _print([{"dataset": _name(config.dataset), "kernel": config.model.kernel, "runs": config.runs,
             "split": results["split"] + (" (first, reused)" if config.reuse_first_split else ""),
             "metric": config.metric, "test": f"{results['test_acc_mean']:.2f} ± {results['test_acc_std']:.2f}",
             "s/epoch": results["seconds_per_epoch"], "params": results["params"]}], run)


# ------------------------------------------------------------------------------------------- instances


@main.command()
@click.option("--dataset", default="digits", metavar="NAME|FILE",
              help="digits (scikit-learn, embedded), 20news (10 categories, TF-IDF), or a features file "
                   "(.npz/.pt: x [N,d], y [N]; e.g. your CIFAR/STL embeddings).")
@click.option("--kernel", type=KERNELS, default="simple", help="simple = DIFFormer-s, sigmoid = DIFFormer-a.")
@click.option("--labels-per-class", type=int, default=None,
              help="Training instances per class (paper: 20News 100/200/400; STL, CIFAR 10/50/100).")
@click.option("--knn", type=int, default=None,
              help="Add the kNN graph with K neighbours (implies --graph) [default: 5 when --graph].")
@click.option("--graph/--no-graph", default=None,
              help="Use a kNN graph as DIFFormer's local branch [default: no graph, the released setting].")
@click.option("--runs", type=int, default=None, help="Runs, a new split each [default: 5].")
@click.option("--epochs", type=int, default=None, help="Epochs per run [default: 600].")
@optim_options
@model_options
@PRESET
@run_options(seed=None, resume=True)
@click.pass_context
def instances(ctx: click.Context, dataset: str, kernel: str, knn: int | None, graph: bool | None,
              overrides: tuple[str, ...], data_root: str | None, preset: str | None, **_: object) -> None:
    """Classify independent instances by all-pair attention, with or without a kNN graph (spec §3.5).

    Each run draws a new split: --labels-per-class per class for training, 1,000 for validation (--set
    valid_num=...) and the rest for test (--set test_num=...). Selection and aggregation as `difformer node`.

    Writes config.json, meta.json, run-<r>/ and results.json: `test_acc_mean`, `test_acc_std` (percent,
    unbiased), `test_acc`, `val_acc`, `best_epoch`, `graph` ("none" or "knn-K"), `label_per_class`,
    `split_sizes`, `num_instances`, `params`, `seconds_per_epoch`, `per_run`.
    """
    from difformer.config import INSTANCE_PRESETS, instances_preset_name

    base = _preset(INSTANCE_PRESETS, instances_preset_name(dataset, kernel), preset,
                   f"--dataset {dataset} --kernel {kernel}")
    if knn is not None and graph is None:
        graph = True
    if graph is not None:
        base = dataclasses.replace(base, model=dataclasses.replace(base.model, use_graph=graph))
    fields = {"dataset": "dataset", "kernel": "model.kernel", "labels_per_class": "label_per_class", "knn": "knn",
              "runs": "runs", "epochs": "train.epochs", "lr": "lr", "weight_decay": "weight_decay",
              "seed": "train.seed", **MODEL_FIELDS}
    config = resolve_config(base, ctx, fields, overrides)
    loaded = {}

    def validate(config) -> None:
        from difformer.data import load_instances
        from difformer.instances import validate_instances

        loaded["dataset"] = load_instances(config.dataset, data_root)
        validate_instances(config, loaded["dataset"])

    run = start_run(ctx, config, package=PACKAGE, command="instances",
                    name=f"instances-{_name(config.dataset)}-{kernel}", validate=validate)
    if run is None:
        return
    from difformer.instances import run_instances

    results = run_instances(config, run, loaded["dataset"], resume=run.resumed)
    run.write_results(results)
    _print([{"dataset": _name(config.dataset), "kernel": config.model.kernel, "graph": results["graph"],
             "per class": config.label_per_class, "runs": config.runs,
             "test acc": f"{results['test_acc_mean']:.2f} ± {results['test_acc_std']:.2f}",
             "s/epoch": results["seconds_per_epoch"]}], run)


# -------------------------------------------------------------------------------------------- temporal


@main.command()
@click.option("--dataset", default="chickenpox", metavar="NAME|FILE",
              help="chickenpox, covid, wikimath (PyG-Temporal JSON under DATA_ROOT/temporal), or a PyG-Temporal "
                   ".json file (chickenpox / pedalme / england_covid / wikivital_mathematics layout).")
@click.option("--kernel", type=KERNELS, default="simple", help="simple = DIFFormer-s, sigmoid = DIFFormer-a.")
@click.option("--graph/--no-graph", default=True, help="Use the dataset's graph as DIFFormer's local branch.")
@click.option("--lags", type=int, default=None, help="Past values per node feature [default: 4 / 8 / 14].")
@click.option("--update", type=click.Choice(["cumulative", "incremental"]), default=None,
              help="One step per epoch on all training snapshots, or one per snapshot [default: per dataset].")
@click.option("--legacy-broadcast-mse", is_flag=True,
              help="Train and select on the original's N x N broadcast MSE (quirk 1; the paper's numbers).")
@click.option("--legacy-cumulative-patience", is_flag=True,
              help="Never reset the early-stopping counter, as the original (quirk 3).")
@click.option("--reproduce-original", is_flag=True,
              help="Both legacy switches and edge-count GCN degrees (quirk 6).")
@click.option("--runs", type=int, default=None, help="Runs [default: 5].")
@click.option("--epochs", type=int, default=None, help="Maximum epochs [default: 200].")
@optim_options
@model_options
@PRESET
@run_options(seed=None, resume=True)
@click.pass_context
def temporal(ctx: click.Context, dataset: str, kernel: str, graph: bool, reproduce_original: bool,
             overrides: tuple[str, ...], data_root: str | None, preset: str | None, **_: object) -> None:
    """Spatial-temporal regression: each snapshot is a graph signal, features = the last --lags values (§3.6).

    Chronological 20/20/60 % split, early stopping on the validation loss (patience 20), best model tested.
    The default loss and metric are the per-node MSE; results.json reports the test per-node MSE *and* the
    original's broadcast MSE of the same models: `test_mse_mean`, `test_mse_std`, `test_broadcast_mse_mean`,
    `test_broadcast_mse_std` (population std over runs, as the original), per-run lists `test_mse`,
    `test_broadcast_mse`, `best_epoch`, `epochs`, plus `loss` (what was trained), `snapshots`, `params`.
    """
    from difformer.config import TEMPORAL_PRESETS, temporal_preset_name

    base = _preset(TEMPORAL_PRESETS, temporal_preset_name(dataset, kernel, graph), preset,
                   f"--dataset {dataset} --kernel {kernel} --{'' if graph else 'no-'}graph")
    if reproduce_original:
        base = dataclasses.replace(base, legacy_broadcast_mse=True, legacy_cumulative_patience=True,
                                   model=dataclasses.replace(base.model, degree_norm="count"))
    fields = {"dataset": "dataset", "kernel": "model.kernel", "graph": "model.use_graph", "lags": "lags",
              "update": "update", "legacy_broadcast_mse": "legacy_broadcast_mse",
              "legacy_cumulative_patience": "legacy_cumulative_patience", "runs": "runs", "epochs": "train.epochs",
              "lr": "lr", "weight_decay": "weight_decay", "seed": "train.seed", **MODEL_FIELDS}
    config = resolve_config(base, ctx, fields, overrides)
    loaded = {}

    def validate(config) -> None:
        from difformer.temporal import load_signal, validate_temporal

        loaded["signal"] = load_signal(config, data_root)
        validate_temporal(config, loaded["signal"])

    run = start_run(ctx, config, package=PACKAGE, command="temporal",
                    name=f"temporal-{_name(config.dataset)}-{kernel}", validate=validate)
    if run is None:
        return
    from difformer.temporal import run_temporal

    results = run_temporal(config, run, loaded["signal"], resume=run.resumed)
    run.write_results(results)
    mse, broadcast = (f"{results[f'{k}_mean']:.4f} ± {results[f'{k}_std']:.4f}" for k in ("test_mse",
                                                                                            "test_broadcast_mse"))
    _print([{"dataset": _name(config.dataset), "kernel": config.model.kernel, "graph": results["graph"],
             "trained on": results["loss"], "runs": config.runs, "test MSE": mse, "test broadcast MSE": broadcast}],
           run)


# ------------------------------------------------------------------------------------- convert, presets


@main.command()
@click.argument("source", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path(file_okay=False))
@click.option("--preset", default="proteins-s", metavar="NAME",
              help="The node preset the checkpoint was trained with (its switches are not in the weights).")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUTPUT folder.")
def convert(source: str, output: str, preset: str, overwrite: bool) -> None:
    """Convert an official checkpoint (e.g. ogbn-proteins-difformer.pkl, a plain state dict) into OUTPUT
    (model.safetensors + config.json; load with diffcore.checkpoint.load_pretrained). Keys map 1:1; the
    widths, depth, heads and W_V are read off the tensors, the other switches come from --preset."""
    out = Path(output)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} is not empty; pass --overwrite to replace it or choose another OUTPUT")
    from difformer.config import NODE_PRESETS
    from difformer.convert import convert_checkpoint

    info = convert_checkpoint(source, output, _preset(NODE_PRESETS, preset, preset, "convert").model, preset)
    from diffcore.runs import format_table

    click.echo(format_table([info]))


@main.command()
def presets() -> None:
    """List the released settings (spec §4.3) with their source script."""
    from diffcore.runs import format_table

    from difformer.config import INSTANCE_PRESETS, NODE_PRESETS, TEMPORAL_PRESETS

    rows = []
    for command, table in (("node", NODE_PRESETS), ("instances", INSTANCE_PRESETS), ("temporal", TEMPORAL_PRESETS)):
        for name in table:
            c = table[name]
            rows.append({"command": command, "preset": name, "kernel": c.model.kernel, "lr": c.lr,
                         "wd": c.weight_decay, "dropout": c.model.dropout, "layers": c.model.num_layers,
                         "hidden": c.model.hidden_channels, "graph": c.model.use_graph, "epochs": c.train.epochs,
                         "runs": c.runs, "seed": c.train.seed, "source": table.source(name)})
    click.echo(format_table(rows, floatfmt="g"))
