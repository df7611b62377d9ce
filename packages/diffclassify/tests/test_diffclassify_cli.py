"""``diffclassify`` end to end on the embedded 8×8 digits, in seconds (issue 9 points 1 and 3)."""

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from diffclassify.cli import main
from diffclassify.config import HeadConfig
from diffclassify.diffusion import linear_schedule_kwargs
from diffclassify.features import FeatureSet
from diffclassify.fewshot import fit_heads
from diffclassify.models import MnistConvVAE, MyUNet, original_time_table, sinusoid_table
from diffcore.ddpm import DDPM
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


def first_training_step(monkeypatch, out: Path, *flags: str) -> dict[str, Any]:
    """x_0, x_t and t of the first step of a one-step train-ddpm run on digits with ``flags``, the exported
    model's header and its trained (online) weights."""
    import diffclassify.train as train_module

    seen: dict[str, Any] = {}
    signed, forward = train_module._signed, MyUNet.forward

    def spy_signed(images):
        x0 = signed(images)
        seen.setdefault("x0", x0)
        return x0

    def spy_forward(self, x, t, y=None):
        seen.setdefault("x_t", x.detach().clone())
        seen.setdefault("t", t.clone())
        return forward(self, x, t, y)

    with monkeypatch.context() as patch:
        patch.setattr(train_module, "_signed", spy_signed)
        patch.setattr(MyUNet, "forward", spy_forward)
        reset_accelerate_state()
        invoke("train-ddpm", *DDPM_TINY, "--samples", "0", "--batch-size", "64", "--set", "train_limit=64", *flags,
               "--output-dir", out)
    seen["header"] = json.loads((out / "model" / "config.json").read_text())
    seen["weights"] = load_file(out / "model-online" / "model.safetensors")
    return seen


def test_legacy_noise_trains_on_the_originals_noise_std(tmp_path, monkeypatch):
    """--legacy-noise (= --forward-variance original) reaches the training loss: with the same images, t and ε,
    the model sees √ᾱ_t x_0 + √(1 − √ᾱ_t) ε instead of the default √ᾱ_t x_0 + √(1 − ᾱ_t) ε (spec §3.2), and
    the exported model tells extract to noise with the same variance. Nothing else changes."""
    default = first_training_step(monkeypatch, tmp_path / "standard")
    legacy = first_training_step(monkeypatch, tmp_path / "legacy", "--legacy-noise")
    named = first_training_step(monkeypatch, tmp_path / "named", "--forward-variance", "original")
    x0, t = default["x0"], default["t"]
    assert torch.equal(legacy["x0"], x0) and torch.equal(legacy["t"], t) and len(t.unique()) > 10
    abar = DDPM(**linear_schedule_kwargs(1000)).alphas_cumprod.double()[t].view(-1, 1, 1, 1)
    signal = abar.sqrt() * x0.double()
    eps = (default["x_t"].double() - signal) / (1 - abar).sqrt()
    eps_legacy = (legacy["x_t"].double() - signal) / (1 - abar.sqrt()).sqrt()
    torch.testing.assert_close(eps_legacy, eps, atol=1e-4, rtol=0)  # the same ε under each formula
    assert abs(eps.std().item() - 1) < 0.05  # ... and it is N(0, 1): the default is the textbook process
    assert torch.equal(named["x_t"], legacy["x_t"])
    for run, variance in ((default, "standard"), (legacy, "original"), (named, "original")):
        assert run["header"]["diffclassify"]["process"]["forward_variance"] == variance
    # The same model, trained on other inputs:
    assert default["header"]["config"] == legacy["header"]["config"]
    assert any(not torch.equal(default["weights"][k], legacy["weights"][k]) for k in default["weights"])


def test_time_table_original_changes_only_the_frozen_table(tmp_path, monkeypatch):
    """--time-table original gives the model the original's table (spec §3.1); the inputs it trains on are the
    same, and the default is the textbook sinusoid."""
    default = first_training_step(monkeypatch, tmp_path / "sinusoid")
    original = first_training_step(monkeypatch, tmp_path / "original", "--time-table", "original")
    assert torch.equal(original["x_t"], default["x_t"]) and torch.equal(original["t"], default["t"])
    torch.testing.assert_close(original["weights"]["time_embed.weight"], original_time_table(1000, 128),
                               rtol=0, atol=0)
    torch.testing.assert_close(default["weights"]["time_embed.weight"], sinusoid_table(1000, 128), rtol=0, atol=0)
    changed = {k for k, v in default["header"]["config"].items() if original["header"]["config"][k] != v}
    assert changed == {"time_table"}


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
    # The command trains the heads the library does on that file: seeds 0 and 1, 3 epochs, the default protocol.
    expected = fit_heads(FeatureSet.load(tmp_path / "e1" / "features.safetensors"), "mlp", (1, 3), [0, 1],
                         HeadConfig(epochs=3))
    assert rows == expected


def toy_features_file(path: Path) -> Path:
    """Three overlapping classes far from the origin (raw and z-scored features train different heads)."""
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        labels = torch.arange(3).repeat(n)
        x = 40.0 + 1.5 * torch.eye(3, 5)[labels] + torch.randn(len(labels), 5, generator=g)
        return x, labels, torch.arange(len(labels))

    FeatureSet(*split(20), *split(10), {"source": "pixels", "dataset": "toy", "num_classes": 3}).save(path)
    return path


@pytest.mark.parametrize(("flags", "head", "protocol"), [
    ((), "linear", HeadConfig()),
    (("--no-standardize",), "linear", HeadConfig(standardize=False)),
    (("--split", "random"), "linear", HeadConfig(split="random")),
    (("--test-source", "train-next"), "linear", HeadConfig(test_source="train-next")),
    (("--test-source", "train-next", "--test-per-class", "5"), "linear",
     HeadConfig(test_source="train-next", test_per_class=5)),
    (("--test-per-class", "4"), "linear", HeadConfig(test_per_class=4)),
    (("--head", "mlp"), "mlp", HeadConfig()),
    (("--lr", "0.01"), "linear", HeadConfig(lr=0.01)),
    (("--batch-size", "3"), "linear", HeadConfig(batch_size=3)),
])
def test_fit_options_reach_the_protocol(tmp_path, flags, head, protocol):
    """Each `fit` option gives the rows the library gives with that protocol, and other rows than the default:
    the original's raw features (--no-standardize), its tiny test set from the train split (--test-source
    train-next: the next s images per class), a labelled set drawn per seed (--split random), ..."""
    path = toy_features_file(tmp_path / "toy.safetensors")
    invoke("fit", "--features", path, "--per-class", "2,6", "--seeds", "2", "--epochs", "4", *flags,
           "--output-dir", tmp_path / "fit")
    rows = results(tmp_path / "fit")["rows"]
    features = FeatureSet.load(path)
    expected = fit_heads(features, head, (2, 6), [0, 1], dataclasses.replace(protocol, epochs=4))
    assert rows == expected
    if flags:
        default = fit_heads(features, "linear", (2, 6), [0, 1], HeadConfig(epochs=4))
        assert [(r["accs"], r["test_images"]) for r in rows] != [(r["accs"], r["test_images"]) for r in default]
    if protocol.test_source == "train-next":  # the original's n_test = s unless --test-per-class
        assert [r["test_images"] for r in rows] == [3 * (protocol.test_per_class or s) for s in (2, 6)]


def test_sweep_protocol_options_take_effect(tmp_path):
    """`sweep` hands --no-standardize, --split and --test-source to every head it trains."""
    invoke("sweep", "--preset", "digits", "--sources", "pixels", "--t-list", "", "--sizes", "1,3", "--seeds", "2",
           "--epochs", "2", "--heads", "linear", "--no-standardize", "--split", "random", "--output-dir",
           tmp_path / "random")
    invoke("sweep", "--preset", "digits", "--sources", "pixels", "--t-list", "", "--sizes", "1,3", "--seeds", "2",
           "--epochs", "2", "--heads", "linear", "--test-source", "train-next", "--output-dir", tmp_path / "next")
    for run, protocol in (("random", HeadConfig(epochs=2, standardize=False, split="random")),
                          ("next", HeadConfig(epochs=2, test_source="train-next"))):
        r = results(tmp_path / run)
        (used,) = r["features"]
        features = FeatureSet.load(used["path"])
        expected = fit_heads(features, "linear", (1, 3), [0, 1], protocol)
        assert [{k: v for k, v in row.items() if k != "sweep"} for row in r["rows"]] == expected
        default = fit_heads(features, "linear", (1, 3), [0, 1], HeadConfig(epochs=2))
        assert [(row["accs"], row["test_images"]) for row in expected] != \
            [(row["accs"], row["test_images"]) for row in default]


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
    assert (trained / "vae" / "samples.png").exists()
    metrics = [json.loads(line) for line in (trained / "vae" / "metrics.jsonl").read_text().splitlines()]
    assert r["test_loss_final"] == [m["test_loss"] for m in metrics if "test_loss" in m][-1]
    # One epoch lowers the test negative ELBO of the same model as initialised (seed 0): it trained.
    from diffclassify.data import to_unit
    from diffcore.data import load_image_splits

    torch.manual_seed(0)
    untrained = MnistConvVAE(image_size=8, latent_dim=4)
    _, test = load_image_splits("digits", None)
    with torch.no_grad():
        recon, kl = untrained.elbo_terms(to_unit(test.images))
    assert r["test_loss_final"] < 0.9 * (recon + kl).mean().item()


def extracted(*args) -> FeatureSet:
    out = Path(args[args.index("--output-dir") + 1])
    invoke("extract", *args)
    return FeatureSet.load(out / "features.safetensors")


def test_vae_sample_z_changes_only_the_decoder_features(trained, tmp_path):
    """--vae-sample-z decodes a sampled z = μ + σ ε (the original) instead of z = μ; encoder features stay."""
    common = ("--model", trained / "vae", "--source", "vae-mix", "--train-per-class", "3", "--test-per-class", "2")
    mean = extracted(*common, "--output-dir", tmp_path / "mean")
    sampled = extracted(*common, "--vae-sample-z", "--output-dir", tmp_path / "sampled")
    dims = mean.meta["block_dims"]  # conv1, conv2, conv3, stats (μ ‖ log σ²), z, deconv1, deconv2, deconv3
    encoder, latent = sum(dims[:4]), dims[4]
    for split in ("train_features", "test_features"):
        a, b = getattr(mean, split), getattr(sampled, split)
        torch.testing.assert_close(b[:, :encoder], a[:, :encoder], rtol=0, atol=0)
        mu, log_var = a[:, encoder - 2 * latent:encoder - latent], a[:, encoder - latent:encoder]
        torch.testing.assert_close(a[:, encoder:encoder + latent], mu, rtol=0, atol=0)  # default: z = μ
        assert not torch.allclose(b[:, encoder:], a[:, encoder:])
        eps = (b[:, encoder:encoder + latent] - mu) / (0.5 * log_var).exp()  # sampled: (z − μ) / σ ~ N(0, 1)
        assert abs(eps.mean().item()) < 0.35 and abs(eps.std().item() - 1) < 0.35


def test_extract_options_reach_the_extraction(trained, tmp_path):
    """--timestep (several), --blocks, --noise-draws, --seed, --batch-size and the per-class subsets give the
    features the library computes with that plan."""
    from diffclassify.diffusion import make_process
    from diffclassify.extract import load_generative
    from diffclassify.features import ExtractionPlan, extract_features, select_rows
    from diffcore.data import load_image_splits

    got = extracted("--model", trained / "ddpm", "--timestep", "10,500", "--blocks", "b3,b_out", "--noise-draws", "3",
                    "--seed", "4", "--train-per-class", "2", "--test-per-class", "1", "--batch-size", "7",
                    "--output-dir", tmp_path / "e")
    gen = load_generative(trained / "ddpm")
    plan = ExtractionPlan("ddpm", ("b3", "b_out"), (10, 500), noise_draws=3, seed=4, batch_size=7)
    train, test = load_image_splits("digits", None)
    for split, arrays, per_class in (("train", train, 2), ("test", test, 1)):
        rows = select_rows(arrays.labels, per_class)
        expected = extract_features(gen.model, make_process(gen.info["process"]), arrays.images[rows], plan, split)
        torch.testing.assert_close(getattr(got, f"{split}_features"), expected, rtol=0, atol=0)
        assert getattr(got, f"{split}_index").tolist() == rows.tolist()
    other = extract_features(gen.model, make_process(gen.info["process"]), train.images[select_rows(train.labels, 2)],
                             dataclasses.replace(plan, noise_draws=1, seed=0), "train")
    assert not torch.allclose(other, got.train_features)


def test_weights_online_extracts_from_the_online_model(trained, tmp_path):
    """--weights online reads model-online/ (the EMA copy is the default)."""
    common = ("--train-per-class", "2", "--test-per-class", "1", "--timestep", "50")
    ema = extracted("--model", trained / "ddpm", *common, "--output-dir", tmp_path / "ema")
    online = extracted("--model", trained / "ddpm", "--weights", "online", *common, "--output-dir", tmp_path / "on")
    direct = extracted("--model", trained / "ddpm" / "model-online", *common, "--output-dir", tmp_path / "direct")
    torch.testing.assert_close(online.train_features, direct.train_features, rtol=0, atol=0)
    assert not torch.allclose(online.train_features, ema.train_features)


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
