"""``diff-resnet`` command line: the ``toy`` examples here, ``graph`` (:mod:`diff_resnet.graph.cli`) and the
``fewshot`` group (:mod:`diff_resnet.fewshot.cli`) assembled into one click group.

Commands parse options into a config (preset ← options typed ← ``--set``), open a run directory and
call the task module. torch is imported inside the commands so ``--help`` stays fast. The subpackages' CLIs
never import this module: it imports them.
"""

from __future__ import annotations

import click
from diffcore.cli import Group, resolve_config, run_options, start_run

from diff_resnet.config import PACKAGE, TOY_EXAMPLES, TOY_PRESETS
from diff_resnet.distributed import single_process
from diff_resnet.fewshot.cli import fewshot
from diff_resnet.graph.cli import graph


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name=PACKAGE)
def main() -> None:
    """Diff-ResNet (Wang et al., TPAMI 2024): parameter-free diffusion steps between residual blocks."""


@main.command()
@click.option("--example", type=click.Choice([*TOY_EXAMPLES, "all"]), default="all",
              help="Synthetic example to run.")
@click.option("--momentum", type=float, default=None,
              help="SGD momentum [default: 0, what the original scripts effectively train with: they rebuild "
                   "SGD(momentum=0.9) every step, so momentum never acts; 0.9 trains with real momentum].")
@run_options(seed=None, data=False)
@click.pass_context
def toy(ctx: click.Context, example: str, overrides: tuple[str, ...], **_: object) -> None:
    """Toy examples of §4.1: two moons, two circles, two spirals (trained without and with diffusion)
    and XOR (pure diffusion). The defaults reproduce the paper's figures (with diffusion: 100 % on all three).

    Writes figures/<example>/*.png, an animated GIF per example and results.json with, per example,
    `acc_without_diffusion` / `acc_with_diffusion` (accuracy in % at each of the 21 iterations, iteration 0 =
    untrained) and their final values, or for xor `ratio_before` / `ratio_after` (distance–diameter ratio
    of the two classes) and `disc_ratio_before` / `disc_ratio_after` (grouped by the four discs).
    One process only (not Accelerate-aware).
    """
    from diff_resnet.toy import print_toy_results, run_toy

    single_process("toy")
    names = list(TOY_EXAMPLES.values()) if example == "all" else [TOY_EXAMPLES[example]]
    configs = [resolve_config(TOY_PRESETS[n], ctx, {"seed": "seed", "momentum": "momentum"}, overrides)
               for n in names]
    run = start_run(ctx, {c.example: c for c in configs}, package=PACKAGE, command="toy", name=f"toy-{example}")
    if run is None:
        return
    results = run_toy(configs, run)
    run.write_results(results)
    print_toy_results(results)
    click.echo(f"run directory: {run.path}")


main.add_command(graph)
main.add_command(fewshot)
