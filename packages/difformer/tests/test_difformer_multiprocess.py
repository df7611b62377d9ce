"""`difformer node` as a real 2-process CPU (gloo) launch equals the 1-process run: every process computes the
same full-batch step, DDP averages identical gradients, rank 0 alone writes. Slow: three interpreter starts
(about 2 minutes on a busy 2-core machine)."""

import json
import os
import subprocess
import sys

import pytest
from diffcore.testing import assert_close_state_dicts
from safetensors.torch import load_file

ARGS = ["-m", "difformer", "node", "--runs", "2", "--epochs", "3", "--set", "model.num_layers=2",
        "--set", "label_per_class=5", "--set", "valid_num=20", "--set", "test_num=20", "--set", "train.save_every=1"]


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path, make_graph_file):
    make_graph_file(tmp_path / "g.npz", n=80)
    env = {**os.environ, "ACCELERATE_USE_CPU": "yes", "OMP_NUM_THREADS": "1"}
    common = [*ARGS, "--dataset", str(tmp_path / "g.npz")]
    one = subprocess.run([sys.executable, *common, "--output-dir", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          *common, "--output-dir", str(tmp_path / "two")], env=env, capture_output=True, text=True,
                         timeout=600)
    if two.returncode != 0 and "gloo" in two.stderr.lower() and "not available" in two.stderr.lower():
        pytest.skip("torch.distributed gloo backend unavailable on this machine")
    assert two.returncode == 0, two.stderr[-3000:]
    single, double = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert json.loads((tmp_path / "two" / "meta.json").read_text())["world_size"] == 2
    assert double["test_acc"] == single["test_acc"] and double["best_epoch"] == single["best_epoch"]
    for run in ("run-0", "run-1"):
        assert_close_state_dicts(load_file(tmp_path / "one" / run / "model" / "model.safetensors"),
                                 load_file(tmp_path / "two" / run / "model" / "model.safetensors"), atol=1e-6)
