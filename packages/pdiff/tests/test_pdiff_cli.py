"""``pdiff`` end to end with click's CliRunner on the embedded digits data and the MNIST MLP, in seconds:
``run``; the four stage commands one after another; ``--resume`` of AE/DDPM training; artefacts reload."""

import json

import pytest
import torch
from click.testing import CliRunner
from diffcore.checkpoint import load_pretrained
from diffcore.testing import reset_accelerate_state
from pdiff.cli import main
from pdiff.collect import load_collection
from pdiff.generator import Generator
from pdiff.pipeline import load_generated

TINY = ["--preset", "cpu-mnist", "--dataset", "digits", "--set", "host.val_size=200", "--k", "12", "--epochs", "1",
        "--set", "ae.optim.batch_size=6", "--set", "ddpm.optim.batch_size=6", "--ae-steps", "8", "--ddpm-steps", "8",
        "--num-models", "5", "--noise-models", "3", "--baseline-models", "3", "--set", "generate.steps=5"]
# tiny generators are far from their reconstructions: the collapse warning is expected here
pytestmark = pytest.mark.filterwarnings("ignore:generated models")
GROUPS = ("original", "generated", "weight_average", "average_of_16", "gaussian", "noise")
STATS = {"best", "mean", "median", "min", "std"}


@pytest.fixture(autouse=True)
def _fresh_accelerate():
    reset_accelerate_state()
    yield
    reset_accelerate_state()


class SimulatedCrash(RuntimeError):
    """A crash in the middle of training (click would turn KeyboardInterrupt into a clean abort)."""


def invoke(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_run_writes_every_artefact_and_results(tmp_path):
    out = tmp_path / "run"
    result = invoke("run", *TINY, "--output-dir", out)
    results = json.loads((out / "results.json").read_text())
    for group in GROUPS:
        assert STATS <= results[group].keys(), group
        assert 0 <= results[group]["mean"] <= 100
    assert results["original"]["count"] == 12 and results["generated"]["count"] == 5
    assert {"oo", "gg", "og_mean", "og_max"} <= results["similarity"].keys()
    assert results["similarity"]["og_max"] >= results["similarity"]["og_mean"]
    assert {"collect", "train", "generate"} <= results.keys()
    assert "generated" in result.output and "similarity" in result.output
    for name in ("checkpoints.safetensors", "manifest.json", "host/model.safetensors", "generator/generator.json",
                 "generator/generator.safetensors", "generated.safetensors", "generated.json", "accuracy_hist.png",
                 "similarity_scatter.png", "per_model.json", "ae/metrics.jsonl", "ddpm/metrics.jsonl"):
        assert (out / name).exists(), name
    # every artefact reloads from safetensors + JSON
    host, spec, checkpoints, manifest = load_collection(out)
    assert checkpoints.shape == (12, 330) and spec.names == ("fc2.weight", "fc2.bias")
    assert len(manifest["accuracy"]["test"]) == 12 and manifest["collection"]["save_every"] == "iteration"
    assert type(load_pretrained(out / "host")) is type(host)
    gen = Generator.load(out)
    assert set(gen.info["phases"]) == {"ae", "ddpm"} and gen.latent_dim == 32
    assert {"raw", "scaled", "scale"} <= gen.info["latents"].keys()
    spec_g, generated, _ = load_generated(out)
    assert generated.shape == (5, 330) and torch.isfinite(generated).all() and spec_g == spec


def test_bf16_autocast_runs_every_stage_and_keeps_float32_artefacts(tmp_path, monkeypatch):
    """``--mixed-precision bf16`` (the `new` preset's setting) on the CPU: every training stage computes under
    bf16 autocast, and what is saved stays float32 and finite."""
    seen = []
    original = torch.nn.Linear.forward

    def spy(self, x):
        seen.append(torch.is_autocast_enabled(x.device.type) and torch.get_autocast_dtype(x.device.type))
        return original(self, x)

    monkeypatch.setattr(torch.nn.Linear, "forward", spy)
    out = tmp_path / "run"
    invoke("run", *TINY, "--mixed-precision", "bf16", "--output-dir", out)
    assert torch.bfloat16 in seen, "no layer ran under bf16 autocast"
    assert json.loads((out / "config.json").read_text())["mixed_precision"] == "bf16"
    gen = Generator.load(out)
    for name in ("ae", "denoiser", "ema"):
        for key, value in getattr(gen, name).state_dict().items():
            if value.is_floating_point():
                assert value.dtype == torch.float32 and torch.isfinite(value).all(), f"{name}.{key}"
    _, generated, _ = load_generated(out)
    assert generated.dtype == torch.float32 and torch.isfinite(generated).all()


def test_stage_commands_chain_and_refuse_foreign_artefacts(tmp_path):
    collect_dir, train_dir, gen_dir, eval_dir = (tmp_path / n for n in ("c", "t", "g", "e"))
    invoke("collect", *TINY[:14], "--output-dir", collect_dir)
    invoke("train", "--checkpoints", collect_dir, "--ae-steps", "8", "--ddpm-steps", "8", "--set",
           "ae.optim.batch_size=6", "--set", "ddpm.optim.batch_size=6", "--output-dir", train_dir)
    invoke("generate", "--generator", train_dir, "--num-models", "4", "--sampler", "ddim", "--steps", "5",
           "--output-dir", gen_dir)
    invoke("evaluate", "--generated", gen_dir, "--noise-models", "2", "--baseline-models", "2", "--noise-levels",
           "0.01", "--select-on", "test", "--output-dir", eval_dir)
    results = json.loads((eval_dir / "results.json").read_text())
    assert results["generated"]["count"] == 4 and results["select_on"] == "test"
    assert list(results["noise_levels"]) == ["0.01"]
    # a second collection (another seed → another frozen host) must be refused by the generated models
    other = tmp_path / "other"
    invoke("collect", *TINY[:14], "--seed", "5", "--output-dir", other)
    refused = CliRunner().invoke(main, ["evaluate", "--generated", str(gen_dir), "--checkpoints", str(other),
                                        "--output-dir", str(tmp_path / "e2")])
    assert refused.exit_code == 1 and "frozen weights differ" in refused.output
    assert not (tmp_path / "e2").exists()


def test_resume_continues_autoencoder_and_ddpm_training(tmp_path, monkeypatch):
    collect_dir = tmp_path / "c"
    invoke("collect", *TINY[:14], "--output-dir", collect_dir)
    args = ["train", "--checkpoints", collect_dir, "--ae-steps", "10", "--ddpm-steps", "10", "--set",
            "ae.optim.batch_size=6", "--set", "ddpm.optim.batch_size=6"]
    invoke(*args, "--output-dir", tmp_path / "full")
    reset_accelerate_state()
    # interrupt the DDPM phase after 3 of its 5 epochs (the AE phase has finished and saved its state)
    from diffcore import train as core_train

    original = core_train.Trainer._train_epoch

    def crash_in_ddpm(self):
        if self.run is not None and self.run.path.name == "ddpm" and self.epoch == 3:
            raise SimulatedCrash
        return original(self)

    monkeypatch.setattr(core_train.Trainer, "_train_epoch", crash_in_ddpm)
    with pytest.raises(SimulatedCrash):
        CliRunner().invoke(main, [str(a) for a in [*args, "--output-dir", tmp_path / "cut"]], catch_exceptions=False)
    monkeypatch.setattr(core_train.Trainer, "_train_epoch", original)
    reset_accelerate_state()
    assert not (tmp_path / "cut" / "generator").exists()
    invoke("train", "--resume", tmp_path / "cut")
    full, resumed = Generator.load(tmp_path / "full"), Generator.load(tmp_path / "cut")
    for name in ("ae", "denoiser", "ema"):
        a, b = getattr(full, name).state_dict(), getattr(resumed, name).state_dict()
        for key in a:
            torch.testing.assert_close(a[key], b[key], msg=lambda m, k=f"{name}.{key}": f"{k}: {m}")
    lines = (tmp_path / "cut" / "ddpm" / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(line)["epoch"] for line in lines]
    assert epochs == [1, 2, 3, 4, 5]


def test_dry_run_and_help_write_nothing(tmp_path):
    result = invoke("run", *TINY, "--output-dir", tmp_path / "dry", "--dry-run", "--denoiser", "old-cnn")
    config = json.loads(result.output)  # the design's architecture fields come along, steps stay
    assert config["ddpm"]["arch"] == "old-cnn" and config["ddpm"]["channels"] == [1, 64, 128, 256, 512, 1]
    assert config["ddpm"]["steps"] == 8
    assert not (tmp_path / "dry").exists()


def test_collect_help_documents_what_is_saved():
    text = " ".join(invoke("collect", "--help").output.split())
    assert "after every optimiser step" in text and "frozen" in text


@pytest.mark.slow
def test_two_process_torchrun_runs_the_whole_pipeline(tmp_path):
    """The same command under `torchrun --nproc_per_node=2` (gloo on CPU): rank 0 writes, every stage completes."""
    import os
    import subprocess
    import sys

    out = tmp_path / "mp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "yes", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pdiff", "run",
           *TINY, "--output-dir", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["generated"]["count"] == 5 and results["original"]["count"] == 12
    assert json.loads((out / "meta.json").read_text())["world_size"] == 2
    assert Generator.load(out).info["phases"] == ["ae", "ddpm"]


def test_train_in_two_phases_reuses_the_autoencoder(tmp_path):
    collect_dir = tmp_path / "c"
    invoke("collect", *TINY[:14], "--output-dir", collect_dir)
    invoke("train", "--checkpoints", collect_dir, "--phase", "ae", "--ae-steps", "6", "--output-dir", tmp_path / "a")
    refused = CliRunner().invoke(main, ["generate", "--generator", str(tmp_path / "a"), "--output-dir",
                                        str(tmp_path / "g")])
    assert refused.exit_code == 1 and "not trained" in refused.output and not (tmp_path / "g").exists()
    reset_accelerate_state()
    invoke("train", "--checkpoints", collect_dir, "--phase", "ddpm", "--generator", tmp_path / "a", "--ddpm-steps", "6",
           "--output-dir", tmp_path / "d")
    ae_only, both = Generator.load(tmp_path / "a"), Generator.load(tmp_path / "d")
    assert both.info["phases"] == ["ae", "ddpm"]
    assert all(torch.equal(v, both.ae.state_dict()[k]) for k, v in ae_only.ae.state_dict().items())
