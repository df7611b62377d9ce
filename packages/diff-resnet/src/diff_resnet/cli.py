"""``diff-resnet`` command line: ``toy`` (synthetic examples) and ``graph`` (node classification).

Commands parse options into a config (preset ← options typed ← ``--set``), open a run directory and
call the task module. torch is imported inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import click
from diffcore.cli import Group, resolve_config, run_options, start_run

from diff_resnet.config import GRAPH_PRESETS, TOY_EXAMPLES, TOY_PRESETS
from diff_resnet.fewshot_cli import fewshot

PACKAGE = "diff-resnet"


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name=PACKAGE)
def main() -> None:
    """Diff-ResNet (Wang et al., TPAMI 2024): parameter-free diffusion steps between residual blocks."""


@main.command()
@click.option("--example", type=click.Choice([*TOY_EXAMPLES, "all"]), default="all",
              help="Synthetic example to run.")
@click.option("--legacy-fresh-optimizer", is_flag=True,
              help="Rebuild SGD every step like the original scripts (no momentum); reproduces the published figures.")
@run_options(seed=None, data=False)
@click.pass_context
def toy(ctx: click.Context, example: str, overrides: tuple[str, ...], **_: object) -> None:
    """Toy examples of §4.1: two moons, two circles, two spirals (trained without and with diffusion)
    and XOR (pure diffusion).

    Writes figures/<example>/*.png, an animated GIF per example and results.json with, per example,
    `acc_without_diffusion` / `acc_with_diffusion` (accuracy in % at each of the 21 iterations, iteration 0 =
    untrained) and their final values, or for xor `ratio_before` / `ratio_after` (distance–diameter ratio
    of the two classes) and `disc_ratio_before` / `disc_ratio_after` (grouped by the four discs).
    """
    from diff_resnet.toy import print_toy_results, run_toy

    names = list(TOY_EXAMPLES.values()) if example == "all" else [TOY_EXAMPLES[example]]
    configs = [resolve_config(TOY_PRESETS[n], ctx, {"seed": "seed", "legacy_fresh_optimizer":
                                                    "legacy_fresh_optimizer"}, overrides) for n in names]
    run = start_run(ctx, {c.example: c for c in configs}, package=PACKAGE, command="toy", name=f"toy-{example}")
    if run is None:
        return
    results = run_toy(configs, run)
    run.write_results(results)
    print_toy_results(results)
    click.echo(f"run directory: {run.path}")


@main.command()
@click.option("--dataset", type=click.Choice(list(GRAPH_PRESETS)), default="cora",
              help="Dataset; its README setting is the starting config.")
@click.option("--format", "format_", type=click.Choice(["npz", "planetoid"]), default="npz",
              help="gnn-benchmark npz (the original's data) or the PyG Planetoid files, same protocol.")
@click.option("--step-size", type=float, default=None, help="Diffusion step size γ [default: from preset].")
@click.option("--layers", type=int, default=None,
              help="Diffusion steps T (0 = plain residual MLP) [default: from preset].")
@click.option("--dropout", type=float, default=None, help="Dropout before every diffusion step [default: from preset].")
@click.option("--splits", type=int, default=100, help="Random splits of the seed chain.")
@click.option("--inits", type=int, default=20, help="Model initialisations per split.")
@click.option("--max-epochs", type=int, default=10_000, help="Epoch cap per run.")
@click.option("--laplacian", type=click.Choice(["renormalized", "identity"]), default="renormalized",
              help="Operator diag(rowsum Â) − Â (the released method) or I − Â.")
@click.option("--legacy-test-last-at-max-epochs", is_flag=True,
              help="Like the original, test a run that hits --max-epochs with its last weights, not its best.")
@run_options(seed=42)
@click.pass_context
def graph(ctx: click.Context, dataset: str, overrides: tuple[str, ...], data_root: str | None,
          **_: object) -> None:
    """Semi-supervised node classification with the gnn-benchmark protocol (§4.2): largest connected
    component, 20 train / 30 val nodes per class, `splits` × `inits` runs from the seed chain.

    results.json: `test_acc_mean`, `test_acc_std` (population std, in %), `test_accs` and `val_accs` (% per run,
    split-major), `epochs` (per run), `split_seeds`, `init_seeds` (per split), `dataset` (nodes, edges,
    features, classes, split sizes), `lambda_max` and `step_size_times_lambda_max` (explicit Euler is stable
    up to 2), `seconds`, `seconds_per_run_epoch`. `--set batch_runs=false` trains one run at a time (same
    results); `--set device=cuda` trains on a GPU.
    """
    from diffcore.errors import ConfigError

    from diff_resnet.graph import print_graph_results, run_graph, validate_graph_config

    fields = {"format_": "format", "step_size": "step_size", "layers": "layers", "dropout": "dropout",
              "splits": "splits", "inits": "inits", "max_epochs": "max_epochs", "laplacian": "laplacian",
              "legacy_test_last_at_max_epochs": "legacy_test_last_at_max_epochs", "seed": "seed"}
    config = resolve_config(GRAPH_PRESETS[dataset], ctx, fields, overrides)
    if config.step_size is None or config.layers is None:
        raise ConfigError(
            f"{dataset} has no published step size / layer count here ({GRAPH_PRESETS.source(dataset)}); "
            "pass --step-size F and --layers N"
        )
    run = start_run(ctx, config, package=PACKAGE, command="graph", name=f"graph-{dataset}",
                    validate=validate_graph_config)
    if run is None:
        return
    results = run_graph(config, run, data_root=data_root)
    run.write_results(results)
    print_graph_results(results)
    click.echo(f"run directory: {run.path}")


main.add_command(fewshot)
