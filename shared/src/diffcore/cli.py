"""Shared click pieces: a group that turns user errors into one line, and the common run options.

Every paper CLI is a :class:`Group`. A training/evaluation command stacks :func:`run_options`
(``--output-dir --seed --data-root --set --dry-run``, plus ``--preset`` when the paper has presets) and
builds its config with :func:`resolve_config`: preset → options the user actually typed → ``--set``.
This module imports neither torch nor numpy, so ``--help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click
from click.core import ParameterSource

from diffcore.config import apply_overrides, to_dict
from diffcore.errors import DiffnetsError


class Group(click.Group):
    """click group whose commands report :class:`DiffnetsError` as ``Error: <message>`` (exit 1)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DiffnetsError as err:
            raise click.ClickException(str(err)) from None


def run_options(
    *, presets: Sequence[str] | None = None, default_preset: str | None = None, seed: int | None = 0,
    data: bool = True,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding the shared options of a command that writes a run directory."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        opts = [
            click.option("--output-dir", type=click.Path(file_okay=False), default=None,
                         help="Run directory [default: runs/<package>/<timestamp>_<name>]."),
            click.option("--seed", type=int, default=seed, show_default=True, help="Random seed."),
            click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                         help="Override any config field (repeatable), e.g. --set lr=0.05."),
            click.option("--dry-run", is_flag=True, help="Print the resolved config as JSON and exit."),
        ]
        if data:
            opts.append(click.option(
                "--data-root", type=click.Path(file_okay=False), default=None, envvar="DIFFNETS_DATA",
                help="Dataset root (read-only) [default: $DIFFNETS_DATA, else ~/.cache/diffnets].",
            ))
        if presets:
            opts.append(click.option(
                "--preset", type=click.Choice(list(presets)), default=default_preset, show_default=True,
                help="The paper's setting to start from; options given override its fields.",
            ))
        for opt in reversed(opts):
            f = opt(f)
        return f

    return decorate


def given_options(ctx: click.Context, fields: Mapping[str, str] | Sequence[str]) -> dict[str, Any]:
    """Options the user typed (not defaults) → ``{config field: value}``.

    ``fields`` maps click parameter names to config fields (a sequence means the names are equal).
    """
    mapping = dict(fields) if isinstance(fields, Mapping) else {name: name for name in fields}
    given = {}
    for param, field in mapping.items():
        source = ctx.get_parameter_source(param)
        if source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            given[field] = ctx.params[param]
    return given


def resolve_config(base: Any, ctx: click.Context, fields: Mapping[str, str] | Sequence[str],
                   overrides: Sequence[str] = ()) -> Any:
    """``base`` (a preset) ← options the user typed ← ``--set key=value``; every value type-checked."""
    config = apply_overrides(base, given_options(ctx, fields))
    return apply_overrides(config, overrides)


def print_config(config: Any, file: Any = None) -> None:
    print(json.dumps(to_dict(config), indent=2), file=file or sys.stdout)
