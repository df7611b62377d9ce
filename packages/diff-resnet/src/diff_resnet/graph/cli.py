"""``diff-resnet graph``: semi-supervised node classification with the gnn-benchmark protocol (§4.2).

The command parses options into a :class:`~diff_resnet.graph.config.GraphConfig` (preset ← options ← ``--set``),
loads and checks the graph before the run directory exists, then runs :func:`~diff_resnet.graph.run.run_graph`.
torch is imported inside the command so ``--help`` stays fast.
"""

from __future__ import annotations

import click
from diffcore.cli import resolve_config, run_options, start_run

from diff_resnet.config import PACKAGE
from diff_resnet.graph.config import GRAPH_PRESETS, GraphConfig


@click.command()
@click.option("--dataset", type=click.Choice(list(GRAPH_PRESETS)), default="cora",
              help="Dataset; its README setting is the starting config.")
@click.option("--format", "format_", type=click.Choice(["npz", "planetoid"]), default="npz",
              help="gnn-benchmark npz (the original's data) or the PyG Planetoid files, same protocol.")
@click.option("--step-size", type=float, default=None, help="Diffusion step size γ > 0 [default: from preset].")
@click.option("--layers", type=int, default=None,
              help="Diffusion steps T (0 = plain residual MLP) [default: from preset].")
@click.option("--dropout", type=float, default=None, help="Dropout before every diffusion step [default: from preset].")
@click.option("--splits", type=int, default=100, help="Random splits of the seed chain.")
@click.option("--inits", type=int, default=20, help="Model initialisations per split.")
@click.option("--max-epochs", type=int, default=10_000, help="Epoch cap per run.")
@click.option("--laplacian", type=click.Choice(["renormalized", "identity"]), default="renormalized",
              help="Laplacian diag(rowsum Â) − Â (the released method) or I − Â.")
@click.option("--legacy-test-last-at-max-epochs", is_flag=True,
              help="Like the original, test a run that hits --max-epochs with its last weights, not its best.")
@run_options(seed=42)
@click.pass_context
def graph(ctx: click.Context, dataset: str, overrides: tuple[str, ...], data_root: str | None,
          **_: object) -> None:
    """Semi-supervised node classification with the gnn-benchmark protocol (§4.2): largest connected
    component, 20 train / 30 val nodes per class, `splits` × `inits` runs from the seed chain.

    Accelerate-aware: under `accelerate launch -m diff_resnet graph ...` (or torchrun) each process trains a
    contiguous share of the runs and rank 0 writes one run directory with the same results as one process;
    with `--set device=cuda` each process uses its own GPU.

    results.json: `test_acc_mean`, `test_acc_std` (population std, in %), `test_accs` and `val_accs` (% per run,
    split-major), `epochs` (per run), `split_seeds`, `init_seeds` (per split), `dataset` (nodes, edges,
    features, classes, split sizes), `lambda_max` and `step_size_times_lambda_max` (explicit Euler is stable
    up to 2), `world_size`, `seconds`, `seconds_per_run_epoch` (training process-seconds per run-epoch).
    `--set batch_runs=false` trains one run at a time (same results).
    """
    from diff_resnet.graph.data import load_graph
    from diff_resnet.graph.run import print_graph_results, run_graph, validate_graph_data

    fields = {"format_": "format", "step_size": "step_size", "layers": "layers", "dropout": "dropout",
              "splits": "splits", "inits": "inits", "max_epochs": "max_epochs", "laplacian": "laplacian",
              "legacy_test_last_at_max_epochs": "legacy_test_last_at_max_epochs", "seed": "seed"}
    config = resolve_config(GRAPH_PRESETS[dataset], ctx, fields, overrides)
    loaded = {}

    def load_and_check(config: GraphConfig) -> None:  # the data is part of validation: nothing is written yet
        loaded["graph"] = load_graph(config.dataset, config.format, data_root)
        validate_graph_data(loaded["graph"], config)

    run = start_run(ctx, config, package=PACKAGE, command="graph", name=f"graph-{dataset}", validate=load_and_check)
    if run is None:
        return
    results = run_graph(config, run, graph=loaded["graph"])
    run.write_results(results)
    if run.is_main:
        print_graph_results(results)
        click.echo(f"run directory: {run.path}")
