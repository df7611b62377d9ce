import json
from dataclasses import dataclass

import click
from click.testing import CliRunner
from diffcore.cli import Group, resolve_config, run_options, start_run
from diffcore.config import Presets, require
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


@dataclass(frozen=True)
class Checked:
    lr: float = 0.1
    epochs: int = 3
    seed: int = 0

    def check(self):
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")


@cli.command()
@click.option("--lr", type=float, default=None)
@run_options(seed=0, data=False, resume=True)
@click.pass_context
def run(ctx, overrides, **_):
    config = resolve_config(Checked(), ctx, ["lr", "seed"], overrides)

    def validate(c):
        require(c.epochs < 100, "epochs must be < 100 here")

    started = start_run(ctx, config, package="diffcore", command="run", name="demo", validate=validate)
    if started is not None:
        started.write_results({"lr": config.lr, "epochs": config.epochs, "resumed": started.resumed})


def test_start_run_validates_before_it_writes(tmp_path):
    runner = CliRunner()
    out = tmp_path / "out"
    for args, message in [(["--lr", "-1"], "lr must be > 0"), (["--set", "epochs=500"], "epochs must be < 100"),
                          (["--lr", "-1", "--dry-run"], "lr must be > 0")]:
        result = runner.invoke(cli, ["run", "--output-dir", str(out), *args])
        assert result.exit_code == 1 and message in result.output and not out.exists()
    dry = runner.invoke(cli, ["run", "--output-dir", str(out), "--set", "epochs=7", "--dry-run"])
    assert dry.exit_code == 0 and json.loads(dry.output)["epochs"] == 7 and not out.exists()


def test_start_run_refuses_a_used_folder_unless_resume_or_overwrite(tmp_path):
    runner = CliRunner()
    out = tmp_path / "out"
    assert runner.invoke(cli, ["run", "--output-dir", str(out), "--set", "epochs=5"]).exit_code == 0
    again = runner.invoke(cli, ["run", "--output-dir", str(out)])
    assert again.exit_code == 1 and "is not empty" in again.output
    resumed = runner.invoke(cli, ["run", "--resume", str(out)])  # the saved config is the base: nothing retyped
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "results.json").read_text()) == {"lr": 0.1, "epochs": 5, "resumed": True}
    changed = runner.invoke(cli, ["run", "--resume", str(out), "--lr", "0.3"])
    assert changed.exit_code == 1 and "lr: 0.1 → 0.3" in changed.output
    both = runner.invoke(cli, ["run", "--resume", str(out), "--overwrite"])
    assert both.exit_code == 1 and "pass only one" in both.output
    replaced = runner.invoke(cli, ["run", "--output-dir", str(out), "--overwrite", "--lr", "0.3"])
    assert replaced.exit_code == 0 and json.loads((out / "results.json").read_text())["lr"] == 0.3


@cli.command()
@run_options(seed=0, resume=True)
@click.pass_context
def with_data(ctx, overrides, data_root, **_):
    config = resolve_config(Checked(), ctx, ["seed"], overrides)
    started = start_run(ctx, config, package="diffcore", command="with-data", name="demo")
    if started is not None:
        started.write_results({"data_root": data_root, "resumed": started.resumed})


def test_resume_reads_the_data_root_the_run_was_started_with(tmp_path, monkeypatch):
    monkeypatch.delenv("DIFFNETS_DATA", raising=False)
    runner = CliRunner()
    out, root, other = tmp_path / "out", tmp_path / "my-data", tmp_path / "moved-data"
    root.mkdir()
    assert runner.invoke(cli, ["with-data", "--output-dir", str(out), "--data-root", str(root)]).exit_code == 0
    assert json.loads((out / "meta.json").read_text())["data_root"] == str(root.resolve())
    resumed = runner.invoke(cli, ["with-data", "--resume", str(out)])  # no --data-root retyped
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "results.json").read_text()) == {"data_root": str(root.resolve()), "resumed": True}
    moved = runner.invoke(cli, ["with-data", "--resume", str(out), "--data-root", str(other)])  # typed one wins
    assert moved.exit_code == 0 and json.loads((out / "results.json").read_text())["data_root"] == str(other)
    fresh = runner.invoke(cli, ["with-data", "--output-dir", str(tmp_path / "new")])  # no resume: the usual default
    assert fresh.exit_code == 0 and json.loads((tmp_path / "new" / "results.json").read_text())["data_root"] is None


def test_other_ranks_share_the_folder_but_write_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "1")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", "--output-dir", str(out)])
    assert result.exit_code == 0 and not out.exists()
