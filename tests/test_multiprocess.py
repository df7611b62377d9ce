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
