"""Shared click pieces: a group that turns user errors into one line, the common run options, and the
one path every run command takes.

Every paper CLI is a :class:`Group`. A command that writes results stacks :func:`run_options`
(``--output-dir --overwrite [--resume RUN_DIR] --seed --data-root --set --dry-run [--preset]``) and then::

    config = resolve_config(PRESETS[preset], ctx, fields, overrides)   # preset ← options typed ← --set
    run = start_run(ctx, config, package=..., command=..., name=..., validate=...)
    if run is None:  # --dry-run
        return
    results = work(config, run); run.write_results(results)

:func:`start_run` validates the whole config before anything is written, then opens the run directory:
a non-empty one only with ``--resume`` (same config) or ``--overwrite``. This module imports neither torch
nor numpy, so ``--help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from diffcore.config import apply_overrides, check_config, from_dict, to_dict
from diffcore.errors import ConfigError, DiffnetsError

if TYPE_CHECKING:
    from diffcore.runs import RunDir


class Group(click.Group):
    """click group whose commands report :class:`DiffnetsError` as ``Error: <message>`` (exit 1), and whose
    processes leave a launch (``torchrun``, ``accelerate launch``) together when a command ends well."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
        except DiffnetsError as err:
            raise click.ClickException(str(err)) from None
        leave_process_group()
        return result


def leave_process_group() -> None:
    """Wait for every process (rank 0 may still be writing results), then destroy the process groups.

    Without it each process tears its gloo threads down at interpreter exit, whenever it gets there; torch
    then occasionally aborts a process that finished early ("terminate called without an active exception",
    SIGABRT) and the launch fails although every result was written. A no-op without torch.distributed.
    """
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    dist.barrier()
    dist.destroy_process_group()


def run_options(
    *, presets: Sequence[str] | None = None, default_preset: str | None = None, seed: int | None = 0,
    data: bool = True, resume: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding the shared options of a command that writes a run directory.

    ``resume=True`` adds ``--resume RUN_DIR`` for commands that save training state.
    """

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        opts = [
            click.option("--output-dir", type=click.Path(file_okay=False), default=None,
                         help="Run directory [default: runs/<package>/<timestamp>_<name>]; must be new or empty."),
            click.option("--overwrite", is_flag=True,
                         help="Replace the earlier run in --output-dir (refused without this flag)."),
            click.option("--seed", type=int, default=seed, show_default=True, help="Random seed."),
            click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                         help="Override any config field (repeatable), e.g. --set lr=0.05."),
            click.option("--dry-run", is_flag=True, help="Print the resolved config as JSON and exit."),
        ]
        if data:
            opts.append(click.option(
                "--data-root", type=click.Path(file_okay=False), default=_resumed_data_root, envvar="DIFFNETS_DATA",
                help="Dataset root (read-only) [default: $DIFFNETS_DATA, else ~/.cache/diffnets; with --resume, the "
                     "resumed run's].",
            ))
        if resume:
            opts.append(click.option(
                "--resume", type=click.Path(file_okay=False), default=None, metavar="RUN_DIR",
                help="Continue the interrupted run in RUN_DIR from its last saved state (same config).",
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


def _resumed_data_root() -> str | None:
    """``--data-root``'s default: with ``--resume RUN_DIR``, the root that run was started with (its meta.json).

    click computes a default after every option typed on the command line, so ``--resume`` is known here.
    """
    ctx = click.get_current_context(silent=True)
    resume = ctx.params.get("resume") if ctx is not None else None
    if not resume:
        return None
    try:
        root = json.loads((Path(resume) / "meta.json").read_text()).get("data_root")
    except (OSError, ValueError, AttributeError):
        return None  # start_run reports an unreadable run directory in full
    return root if isinstance(root, str) else None


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
    """``base`` (a preset) ← options the user typed ← ``--set key=value``; every value type-checked.

    With ``--resume RUN_DIR`` the saved ``RUN_DIR/config.json`` replaces ``base``, so the resumed run needs
    no options retyped; options that are typed must agree with it (:func:`start_run` checks).
    """
    resume = ctx.params.get("resume")
    if resume and ctx.params.get("overwrite"):
        raise ConfigError("--resume continues a run and --overwrite replaces it: pass only one")
    if resume:
        from diffcore.runs import read_json_file

        if not Path(resume).is_dir():
            raise ConfigError(f"--resume {resume}: no such run directory")
        try:
            base = from_dict(type(base), read_json_file(Path(resume) / "config.json", "run"))
        except ConfigError as err:
            raise ConfigError(f"cannot resume {resume}: its config.json does not belong to this command ({err})") \
                from None
    config = apply_overrides(base, given_options(ctx, fields))
    return apply_overrides(config, overrides)


def processes() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment (``torchrun`` / ``accelerate launch``), else (0, 1)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def start_run(
    ctx: click.Context, config: Any, *, package: str, command: str, name: str,
    validate: Callable[[Any], None] | None = None, extra_meta: Mapping[str, Any] | None = None,
) -> RunDir | None:
    """The one path of every run command: validate → (``--dry-run``: print, return None) → open the run.

    1. :func:`~diffcore.config.check_config` (every config dataclass's ``check()``), then ``validate(config)``
       for checks that need files or devices; 2. the run directory (``--resume RUN_DIR``, ``--output-dir`` or
       ``runs/<package>/<timestamp>_<name>``) is checked without writing: non-empty only with ``--resume`` (the
       config must equal the saved one) or ``--overwrite``; 3. ``--dry-run`` prints the config and stops;
       4. :meth:`RunDir.create` writes ``config.json`` and ``meta.json`` (rank 0 only; every process of a
       multi-process launch gets the same folder).
    """
    from diffcore.runs import RunDir, check_run_dir, default_run_dir

    params = ctx.params
    resume, overwrite, output_dir = params.get("resume"), params.get("overwrite", False), params.get("output_dir")
    if resume and overwrite:
        raise ConfigError("--resume continues a run and --overwrite replaces it: pass only one")
    if resume and output_dir and Path(output_dir).resolve() != Path(resume).resolve():
        raise ConfigError("--resume RUN_DIR continues RUN_DIR in place; drop --output-dir or give the same folder")
    check_config(config)
    if validate is not None:
        validate(config)
    mode = "resume" if resume else "overwrite" if overwrite else "new"
    config_dict = _as_dict(config)
    rank, world = processes()
    path = Path(resume or output_dir or _default_dir(package, name, world, default_run_dir))
    if rank == 0:
        check_run_dir(path, mode, package=package, command=command, config=config_dict)
    if params.get("dry_run"):
        print_config(config)
        return None
    seed = params.get("seed")
    if "data_root" in params:  # so that --resume finds the data without --data-root retyped
        from diffcore.data import data_root

        extra_meta = {"data_root": str(data_root(params["data_root"]).resolve()), **(extra_meta or {})}
    return RunDir.create(path, config_dict, package=package, command=command, seed=seed, world_size=world,
                         is_main=rank == 0, extra_meta=extra_meta, mode=mode)


def _default_dir(package: str, name: str, world: int, default_run_dir: Callable[[str, str], Path]) -> Path:
    """``runs/<package>/<timestamp>_<name>``, drawn once by rank 0 and shared with the other processes."""
    if world == 1:
        return default_run_dir(package, name)
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list, parse_flag_from_env

    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))  # as the Accelerator will see it
    if state.num_processes != world:
        raise ConfigError(f"{world} processes were launched but Accelerate sees {state.num_processes}; "
                          "on CPUs set ACCELERATE_USE_CPU=yes, or pass --output-dir")
    chosen = [str(default_run_dir(package, name)) if state.is_main_process else None]
    return Path(broadcast_object_list(chosen, from_process=0)[0])


def _as_dict(config: Any) -> dict[str, Any]:
    """A config dataclass, or a mapping of them (one command, several configs) → a JSON-able dict."""
    if dataclasses.is_dataclass(config):
        return to_dict(config)
    return {k: to_dict(v) if dataclasses.is_dataclass(v) else v for k, v in config.items()}


def print_config(config: Any, file: Any = None) -> None:
    print(json.dumps(_as_dict(config), indent=2), file=file or sys.stdout)
