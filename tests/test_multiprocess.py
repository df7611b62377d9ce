"""A real 2-process CPU (gloo) run of the core Trainer equals the 1-process run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from diffcore.testing import assert_close_state_dicts
from safetensors import safe_open

SCRIPT = Path(__file__).with_name("ddp_train_script.py")


def _load(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def test_two_processes_equal_one(tmp_path):
    env = {**os.environ, "ACCELERATE_USE_CPU": "yes", "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "one.safetensors")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT),
         str(tmp_path / "two.safetensors")], env=env, capture_output=True, text=True, timeout=300)
    if two.returncode != 0 and "gloo" in two.stderr.lower() and "not available" in two.stderr.lower():
        pytest.skip("torch.distributed gloo backend unavailable on this machine")
    assert two.returncode == 0, two.stderr[-2000:]
    single, meta1 = _load(tmp_path / "one.safetensors")
    double, meta2 = _load(tmp_path / "two.safetensors")
    assert meta1["world_size"] == "1" and meta2["world_size"] == "2"
    assert_close_state_dicts(single, double, atol=1e-6, rtol=0)


RUN_SCRIPT = '''
import click
from diffcore.cli import Group, run_options, start_run


@click.group(cls=Group)
def cli():
    pass


@cli.command()
@run_options(data=False)
@click.pass_context
def demo(ctx, **_):
    run = start_run(ctx, {"answer": 42}, package="demo", command="demo", name="demo")
    run.write_results({"world": run.is_main})


cli()
'''


@pytest.mark.slow
def test_two_processes_share_one_default_run_directory(tmp_path):
    """Without --output-dir, every process of a launch gets rank 0's timestamped folder; only rank 0 writes."""
    script = tmp_path / "demo.py"
    script.write_text(RUN_SCRIPT)
    env = {**os.environ, "ACCELERATE_USE_CPU": "yes", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    folders = list((tmp_path / "runs" / "demo").iterdir())
    assert len(folders) == 1 and (folders[0] / "results.json").exists()
    assert '"world_size": 2' in (folders[0] / "meta.json").read_text()
