"""Short runs on the real data in ../shared/data (skipped when it is absent)."""

import json

import pytest
from click.testing import CliRunner
from diffclassify.cli import main
from diffcore.testing import require_shared_data, reset_accelerate_state


@pytest.fixture(autouse=True)
def _fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFNETS_CACHE", str(tmp_path / "cache"))
    reset_accelerate_state()
    yield
    reset_accelerate_state()


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_mnist_pixels_beat_chance_with_ten_labels_per_class(tmp_path):
    root = require_shared_data("images/mnist")
    invoke("extract", "--source", "pixels", "--dataset", "mnist", "--data-root", root, "--train-per-class", "10",
           "--test-per-class", "50", "--output-dir", tmp_path / "px")
    r = json.loads((tmp_path / "px" / "results.json").read_text())
    assert (r["dim"], r["train_images"], r["test_images"]) == (784, 100, 500)
    invoke("fit", "--features", tmp_path / "px" / "features.safetensors", "--dataset", "mnist", "--per-class", "10",
           "--head", "mlp", "--output-dir", tmp_path / "fit")
    row = json.loads((tmp_path / "fit" / "results.json").read_text())["rows"][0]
    assert row["acc_mean"] > 50  # chance is 10 %; a 10-shot MLP on MNIST pixels reaches about 65–70 %


@pytest.mark.slow
def test_cifar10_subset_end_to_end(tmp_path):
    """train-ddpm (v-diffusion layout) → train-vae (CIFAR VAE) → sweep, all on the 15k/1k CIFAR-10 subset."""
    root = require_shared_data("images/cifar10/cifar10_subset.npz")
    common = ("--dataset", "cifar10-subset", "--data-root", root, "--set", "train_limit=300", "--set", "progress=false")
    invoke("train-ddpm", "--preset", "cifar10-subset-cpu", *common, "--set", "model.base_width=4", "--samples", "4",
           "--set", "sample_steps=2", "--output-dir", tmp_path / "ddpm")
    reset_accelerate_state()
    invoke("train-vae", "--preset", "cifar10-subset-cpu", *common, "--set", "width=4", "--latent-dim", "8",
           "--set", "samples=4", "--output-dir", tmp_path / "vae")
    reset_accelerate_state()
    invoke("sweep", "--preset", "cifar10-subset", "--data-root", root, "--ddpm", tmp_path / "ddpm", "--vae",
           tmp_path / "vae", "--sizes", "1,2", "--seeds", "2", "--epochs", "3", "--t-list", "50,500",
           "--t-sizes", "2", "--set", "t_test_per_class=10", "--set", "extract_test_per_class=20",
           "--output-dir", tmp_path / "sweep")
    r = json.loads((tmp_path / "sweep" / "results.json").read_text())
    assert {row["source"] for row in r["rows"]} == {"ddpm", "vae-encoder", "vae-decoder", "vae-mix", "pixels"}
    assert {row["dim"] for row in r["rows"] if row["source"] == "vae-mix"} == {4 + 8 + 16 + 32 + 16 + 8 + 32 + 16
                                                                              + 8 + 4}
    assert r["plots"] == ["accuracy_vs_labels.png", "accuracy_vs_timestep.png"]
