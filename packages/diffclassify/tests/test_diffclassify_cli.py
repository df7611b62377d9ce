"""``diffclassify`` end to end on the embedded 8×8 digits, in seconds (issue 9 points 1 and 3)."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from diffclassify.cli import main
from diffcore.testing import assert_close_state_dicts, reset_accelerate_state
from safetensors.torch import load_file

DDPM_TINY = ("--dataset", "digits", "--widths", "4,8,16", "--epochs", "1", "--samples", "4",
             "--set", "sample_steps=2", "--set", "progress=false", "--set", "ema_start=5")
VAE_TINY = ("--dataset", "digits", "--epochs", "1", "--latent-dim", "4", "--set", "progress=false",
            "--set", "samples=4")


@pytest.fixture(autouse=True)
def _fresh_accelerate(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFNETS_CACHE", str(tmp_path / "cache"))
    reset_accelerate_state()
    yield
    reset_accelerate_state()


def invoke(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny DDPM and one tiny VAE on digits, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("runs")
    reset_accelerate_state()
    invoke("train-ddpm", *DDPM_TINY, "--output-dir", root / "ddpm")
    reset_accelerate_state()
    invoke("train-vae", *VAE_TINY, "--output-dir", root / "vae")
    reset_accelerate_state()
    return root


def test_train_ddpm_writes_models_samples_and_results(trained):
    run = trained / "ddpm"
    r = results(run)
    assert r["arch"] == "myunet" and r["dataset"] == "digits" and r["steps"] == 22 and r["ema_active"]
    for folder in ("model", "model-online"):
        header = json.loads((run / folder / "config.json").read_text())
        assert header["model"] == "diffclassify.myunet"
        assert header["diffclassify"]["process"] == {"type": "discrete", "num_steps": 1000, "beta_start": 1e-4,
                                                      "beta_end": 0.02, "forward_variance": "standard"}
    assert (run / "samples.png").stat().st_size > 0
    ema, online = load_file(run / "model" / "model.safetensors"), load_file(run / "model-online" / "model.safetensors")
    assert ema.keys() == online.keys() and any((ema[k] != online[k]).any() for k in ema)


def test_legacy_noise_flag_takes_effect(tmp_path):
    invoke("train-ddpm", *DDPM_TINY, "--legacy-noise", "--dry-run", "--output-dir", tmp_path / "x")
    out = invoke("train-ddpm", *DDPM_TINY, "--legacy-noise", "--dry-run").output
    assert json.loads(out)["forward_variance"] == "original"
    assert json.loads(invoke("train-ddpm", *DDPM_TINY, "--dry-run").output)["forward_variance"] == "standard"


def test_extract_caches_then_fit(trained, tmp_path):
    args = ("extract", "--model", trained / "ddpm", "--train-per-class", "10", "--timestep", "50")
    first = invoke(*args, "--output-dir", tmp_path / "e1")
    r1 = results(tmp_path / "e1")
    assert not r1["cached"] and r1["dim"] == 32 and r1["train_images"] == 100 and r1["test_images"] == 449
    assert "ddpm" in first.output
    invoke(*args, "--output-dir", tmp_path / "e2")
    r2 = results(tmp_path / "e2")
    assert r2["cached"] and r2["cache"] == r1["cache"]
    assert load_file(tmp_path / "e2" / "features.safetensors").keys() == load_file(r1["cache"]).keys()
    invoke("fit", "--features", tmp_path / "e1" / "features.safetensors", "--head", "mlp", "--per-class", "1,3",
           "--seeds", "2", "--epochs", "3", "--output-dir", tmp_path / "fit")
    rows = results(tmp_path / "fit")["rows"]
    assert [(r["per_class"], r["seeds"], r["head"], r["timestep"], r["source"]) for r in rows] == \
        [(1, 2, "mlp", 50, "ddpm"), (3, 2, "mlp", 50, "ddpm")]
    assert all(0 <= r["acc_mean"] <= 100 and len(r["accs"]) == 2 for r in rows)


def test_sweep_writes_rows_table_and_plots(trained, tmp_path):
    out = tmp_path / "sweep"
    result = invoke("sweep", "--preset", "digits", "--ddpm", trained / "ddpm", "--vae", trained / "vae",
                    "--sources", "ddpm,vae-encoder,pixels", "--sizes", "1,2", "--seeds", "2", "--epochs", "2",
                    "--t-list", "10,900", "--t-sizes", "2", "--output-dir", out)
    r = results(out)
    labels = [row for row in r["rows"] if row["sweep"] == "labels"]
    steps = [row for row in r["rows"] if row["sweep"] == "timestep"]
    assert len(labels) == 3 * 2 * 2 and len(steps) == 2
    for row in r["rows"]:
        assert {"source", "head", "per_class", "timestep", "acc_mean", "acc_std", "seeds"} <= row.keys()
    assert {row["timestep"] for row in steps} == {10, 900}
    assert all(row["timestep"] is None for row in labels if row["source"] != "ddpm")
    assert r["plots"] == ["accuracy_vs_labels.png", "accuracy_vs_timestep.png"]
    assert all((out / p).stat().st_size > 0 for p in r["plots"])
    assert "vae-encoder" in result.output and "t=900" in result.output
    # a second sweep reuses every feature file
    invoke("sweep", "--preset", "digits", "--ddpm", trained / "ddpm", "--vae", trained / "vae",
           "--sources", "ddpm,vae-encoder,pixels", "--sizes", "1,2", "--seeds", "2", "--epochs", "2",
           "--t-list", "10,900", "--t-sizes", "2", "--output-dir", tmp_path / "again")
    assert all(f["cached"] for f in results(tmp_path / "again")["features"])


def test_sample_command(trained, tmp_path):
    invoke("sample", "--model", trained / "ddpm", "--count", "4", "--steps", "2", "--output-dir", tmp_path / "s")
    assert results(tmp_path / "s")["steps"] == 2 and (tmp_path / "s" / "samples.png").exists()
    invoke("sample", "--model", trained / "vae", "--count", "4", "--output-dir", tmp_path / "v")
    assert results(tmp_path / "v")["sampler"] == "prior"


class Killed(Exception):
    pass


def test_resume_continues_to_the_same_weights(tmp_path, monkeypatch):
    from diffcore.train import Trainer

    args = (*DDPM_TINY[:-1], "ema_start=5", "--epochs", "2", "--samples", "0")
    invoke("train-ddpm", *args, "--output-dir", tmp_path / "full")
    reset_accelerate_state()
    train_epoch = Trainer._train_epoch

    def killed_in_epoch_2(self):
        if self.epoch == 1:
            raise Killed
        return train_epoch(self)

    monkeypatch.setattr(Trainer, "_train_epoch", killed_in_epoch_2)
    with pytest.raises(Killed):
        CliRunner().invoke(main, ["train-ddpm", *args, "--output-dir", str(tmp_path / "part")],
                           catch_exceptions=False)
    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)
    reset_accelerate_state()
    invoke("train-ddpm", "--resume", tmp_path / "part")
    for folder in ("model", "model-online"):
        assert_close_state_dicts(load_file(tmp_path / "full" / folder / "model.safetensors"),
                                 load_file(tmp_path / "part" / folder / "model.safetensors"), atol=1e-6, rtol=1e-5)
    assert results(tmp_path / "part")["steps"] == 44


def test_train_vae_results(trained):
    r = results(trained / "vae")
    assert r["arch"] == "mnist" and r["latent_dim"] == 4 and r["test_images"] == 449
    assert r["test_loss_final"] > 0 and (trained / "vae" / "samples.png").exists()


def test_label_conditioned_run_is_refused_then_marked_leaky(tmp_path):
    invoke("train-ddpm", *DDPM_TINY, "--label-conditioning", "--samples", "10", "--output-dir", tmp_path / "cond")
    header = json.loads((tmp_path / "cond" / "model" / "config.json").read_text())
    assert header["config"]["num_classes"] == 10 and header["diffclassify"]["leaky"]
    refused = CliRunner().invoke(main, ["extract", "--model", str(tmp_path / "cond"), "--output-dir",
                                        str(tmp_path / "e0")])
    assert refused.exit_code == 1 and "label-conditioned" in refused.output and not (tmp_path / "e0").exists()
    invoke("extract", "--model", tmp_path / "cond", "--label-conditioning", "--train-per-class", "5",
           "--output-dir", tmp_path / "e")
    assert results(tmp_path / "e")["leaky"]
    fitted = invoke("fit", "--features", tmp_path / "e" / "features.safetensors", "--per-class", "2", "--seeds", "1",
                    "--epochs", "1", "--output-dir", tmp_path / "f")
    assert "leaky" in fitted.output and results(tmp_path / "f")["rows"][0]["leaky"]


@pytest.mark.slow
def test_train_ddpm_under_two_processes(tmp_path):
    """The same command under torchrun (2 CPU processes, gloo): one run directory, written by rank 0."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ACCELERATE_USE_CPU": "yes", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "diffclassify", "train-ddpm", *DDPM_TINY, "--output-dir", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["world_size"] == 2
    r = results(out)
    assert r["steps"] == 22 and (out / "model" / "model.safetensors").exists() and (out / "samples.png").exists()
