"""Protocol runs spread over processes (torchrun, 2 CPU processes, gloo) equal the one-process run; the
one-process commands refuse a launch."""

import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from diff_resnet.cli import main
from diff_resnet.fewshot.data import save_features
from diffcore.testing import require_shared_data


def _two_processes(argv: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # no GPU needed: results travel over a gloo group
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "diff_resnet", *argv], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0 and "gloo" in proc.stderr.lower() and "not available" in proc.stderr.lower():
        pytest.skip("torch.distributed gloo backend unavailable on this machine")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _one_process(argv: list[str]) -> None:
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output


@pytest.mark.slow  # two Python processes start and import torch (~30–60 s on 2 shared cores)
def test_graph_protocol_on_two_processes_equals_one(tmp_path):
    root = require_shared_data("gnn_benchmark_npz/cora.npz")
    # 2 splits × 2 inits with dropout: process 0 trains split 0, process 1 split 1.
    argv = ["graph", "--dataset", "cora", "--splits", "2", "--inits", "2", "--layers", "3", "--max-epochs", "6",
            "--data-root", str(root), "--set", "patience=2"]
    _one_process([*argv, "--output-dir", str(tmp_path / "one")])
    _two_processes([*argv, "--output-dir", str(tmp_path / "two")], tmp_path)
    one, two = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("one", "two"))
    assert (one["world_size"], two["world_size"]) == (1, 2)
    for key in ("epochs", "split_seeds", "init_seeds", "dataset"):
        assert one[key] == two[key], key
    assert two["test_accs"] == pytest.approx(one["test_accs"], abs=1e-9)
    assert two["val_accs"] == pytest.approx(one["val_accs"], abs=1e-9)
    assert two["test_acc_mean"] == pytest.approx(one["test_acc_mean"], abs=1e-9)
    lines = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert sorted((m["split"], m["init"]) for m in lines) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["config.json", "meta.json", "metrics.jsonl",
                                                                     "results.json"]


@pytest.mark.slow
def test_fewshot_episodes_on_two_processes_equal_one(tmp_path):
    labels = torch.arange(6).repeat_interleave(20)
    features = torch.randn(120, 8, generator=torch.Generator().manual_seed(0)) + 2 * labels[:, None]
    path = save_features(tmp_path / "f.safetensors", features, labels, torch.zeros(8), {"dataset": "gaussian"})
    argv = ["fewshot", "eval", "--features", str(path), "--episodes", "7", "--query", "5", "--batch-episodes", "3",
            "--set", "epochs=20"]
    _one_process([*argv, "--output-dir", str(tmp_path / "one")])
    _two_processes([*argv, "--output-dir", str(tmp_path / "two")], tmp_path)
    one, two = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("one", "two"))
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert two["episode_accs"] == one["episode_accs"] and len(one["episode_accs"]) == 7
    assert (two["acc_mean"], two["acc_ci95"]) == (one["acc_mean"], one["acc_ci95"])


@pytest.mark.parametrize(("command", "argv"), [("toy", ["toy", "--example", "xor"]),
                                               ("fewshot extract", ["fewshot", "extract", "--checkpoint", "model"])])
def test_single_process_commands_refuse_a_launch_before_writing(command, argv, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun / accelerate launch set in every process
    result = CliRunner().invoke(main, [*argv, "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: {command} is not Accelerate-aware (every process would do the same "
                                     "work): run it without accelerate launch / torchrun")
    assert not (tmp_path / "run").exists()
