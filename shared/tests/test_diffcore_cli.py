from dataclasses import dataclass

import click
from click.testing import CliRunner
from diffcore.cli import Group, resolve_config, run_options
from diffcore.config import Presets
from diffcore.errors import DataError


@dataclass(frozen=True)
class Cfg:
    lr: float = 0.1
    layers: int = 2
    seed: int = 0


PRESETS = Presets({"paper": (Cfg(lr=0.5, layers=8), "table 1"), "small": (Cfg(layers=1), "tests")})


@click.group(cls=Group)
def cli():
    pass


@cli.command()
@click.option("--lr", type=float, default=0.1, show_default=True)
@click.option("--layers", type=int, default=2, show_default=True)
@run_options(presets=list(PRESETS), default_preset="paper")
@click.pass_context
def train(ctx, preset, overrides, dry_run, seed, output_dir, data_root, **_):
    config = resolve_config(PRESETS[preset], ctx, ["lr", "layers", "seed"], overrides)
    click.echo(f"{config.lr} {config.layers} {config.seed} {data_root}")


@cli.command()
def fail():
    raise DataError("cora.npz not found; pass --data-root")


def test_preset_then_typed_options_then_set(monkeypatch):
    monkeypatch.delenv("DIFFNETS_DATA", raising=False)
    runner = CliRunner()
    assert runner.invoke(cli, ["train"]).output.strip() == "0.5 8 0 None"  # defaults don't override the preset
    assert runner.invoke(cli, ["train", "--layers", "3"]).output.strip() == "0.5 3 0 None"
    result = runner.invoke(cli, ["train", "--preset", "small", "--lr", "0.2", "--set", "layers=4", "--seed", "7"])
    assert result.output.strip() == "0.2 4 7 None"
    assert runner.invoke(cli, ["train"], env={"DIFFNETS_DATA": "/data"}).output.strip().endswith("/data")


def test_errors_are_one_line():
    runner = CliRunner()
    result = runner.invoke(cli, ["train", "--set", "layers=x"])
    assert result.exit_code == 1 and result.output == "Error: layers='x' is not a valid int\n"
    result = runner.invoke(cli, ["fail"])
    assert result.exit_code == 1 and result.output == "Error: cora.npz not found; pass --data-root\n"
    result = runner.invoke(cli, ["train", "--preset", "huge"])
    assert result.exit_code == 2 and "'huge' is not one of" in result.output
