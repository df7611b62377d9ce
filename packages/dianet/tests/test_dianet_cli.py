"""``dianet`` end to end with click's CliRunner: train (folder, cifar10-subset), resume, eval, models, errors."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from dianet.cli import main
from diffcore.checkpoint import load_pretrained
from diffcore.testing import assert_close_state_dicts, require_shared_data, reset_accelerate_state
from safetensors.torch import load_file
from torchvision.io import write_png

TINY = ["--set", "model.layers=1,1,1", "--set", "num_workers=0", "--set", "progress=false", "--lr", "0.05"]
RESULT_KEYS = {"test_acc_final", "test_acc_best", "best_epoch", "test_loss_final", "train_loss_first",
               "train_loss_final", "params", "epochs", "steps", "num_classes", "world_size", "seconds"}


@pytest.fixture(autouse=True)
def _fresh_accelerate():
    reset_accelerate_state()
    yield
    reset_accelerate_state()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """DIR/{train,val}/{class}/*.png: two classes told apart by colour, 16 + 8 images of 32×32."""
    root = tmp_path_factory.mktemp("images")
    g = torch.Generator().manual_seed(0)
    warnings.filterwarnings("ignore", "The image decoding and encoding", DeprecationWarning)
    for split, n in (("train", 16), ("val", 8)):
        for label, name in enumerate(("red", "blue")):
            (root / split / name).mkdir(parents=True)
            for i in range(n // 2):
                image = torch.randint(0, 80, (3, 32, 32), generator=g, dtype=torch.uint8)
                image[2 * label] += 150
                write_png(image, str(root / split / name / f"{i}.png"))
    return root


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def train(tmp: Path, name: str, dataset: str, *extra: str):
    out = tmp / name
    result = invoke("train", "--arch", "dia_resnet164", "--dataset", dataset, "--batch-size", "8",
                    "--output-dir", str(out), *TINY, *extra)
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "results.json").read_text())


def test_train_on_an_image_folder_then_eval_the_exported_model(tmp_path, image_folder):
    out, results = train(tmp_path, "run", str(image_folder), "--epochs", "2", "--schedule", "1", "--gamma", "0.5")
    assert RESULT_KEYS <= results.keys()
    assert results["epochs"] == 2 and results["steps"] == 4 and results["num_classes"] == 2
    assert results["test_acc_best"] >= results["test_acc_final"] and results["best_epoch"] in (1, 2)
    for name in ("config.json", "meta.json", "metrics.jsonl", "results.json", "model/model.safetensors",
                 "model/config.json", "state/trainer_state.json"):
        assert (out / name).exists(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records] == [0.05, 0.025]  # the step schedule, per epoch
    config = json.loads((out / "config.json").read_text())
    assert (config["schedule"], config["gamma"], config["weight_decay"]) == ([1], 0.5, 1e-4)  # wd from the recipe
    model = load_pretrained(out / "model")
    assert model.config["layers"] == [1, 1, 1] and model.num_classes == 2
    evaluated = invoke("eval", "--checkpoint", str(out / "model"), "--output-dir", str(tmp_path / "eval"),
                       "--set", "num_workers=0")
    assert evaluated.exit_code == 0, evaluated.output
    ev = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert ev["dataset"] == str(image_folder) and ev["test_images"] == 8
    assert ev["test_acc"] == pytest.approx(results["test_acc_final"])
    assert "test_acc" in evaluated.output


class Killed(Exception):
    pass


def test_resume_continues_to_the_same_result(tmp_path, image_folder, monkeypatch):
    from diffcore.train import Trainer

    full, full_results = train(tmp_path, "full", str(image_folder), "--epochs", "2")
    reset_accelerate_state()
    train_epoch = Trainer._train_epoch

    def killed_in_epoch_2(self):
        if self.epoch == 1:
            raise Killed
        return train_epoch(self)

    monkeypatch.setattr(Trainer, "_train_epoch", killed_in_epoch_2)
    part = tmp_path / "part"
    with pytest.raises(Killed):
        invoke("train", "--arch", "dia_resnet164", "--dataset", str(image_folder), "--batch-size", "8",
               "--output-dir", str(part), *TINY, "--epochs", "2")
    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)
    reset_accelerate_state()
    refused = invoke("train", "--arch", "dia_resnet164", "--resume", str(part), "--epochs", "3")
    assert refused.exit_code == 1 and "epochs: 2 → 3" in refused.output
    reset_accelerate_state()
    result = invoke("train", "--arch", "dia_resnet164", "--resume", str(part))
    assert result.exit_code == 0, result.output
    resumed = json.loads((part / "results.json").read_text())
    assert resumed["epochs"] == 2 and resumed["test_acc_final"] == pytest.approx(full_results["test_acc_final"])
    assert_close_state_dicts(load_file(str(full / "model" / "model.safetensors")),
                             load_file(str(part / "model" / "model.safetensors")), atol=1e-6, rtol=1e-5)
    assert len((part / "metrics.jsonl").read_text().splitlines()) == 2


def test_bf16_channels_last_ablation_run(tmp_path, image_folder):
    _, results = train(tmp_path, "bf16", str(image_folder), "--epochs", "1", "--mixed-precision", "bf16",
                       "--channels-last", "--set", "model.cell=lstm", "--set", "model.share=none")
    assert results["mixed_precision"] == "bf16" and 0 <= results["test_acc_final"] <= 100


def test_short_real_run_on_cifar10_subset_lowers_the_loss(tmp_path):
    root = require_shared_data("images/cifar10/cifar10_subset.npz")
    out = tmp_path / "subset"
    result = invoke("train", "--arch", "dia_resnet164", "--dataset", "cifar10-subset", "--data-root", str(root),
                    "--epochs", "2", "--batch-size", "32", "--output-dir", str(out), *TINY,
                    "--set", "train_limit=128", "--set", "test_limit=64")
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["train_images"] == 128 and results["test_images"] == 64 and results["num_classes"] == 10
    assert results["train_loss_final"] < results["train_loss_first"]
    assert "test_acc_final" in result.output and "run directory" in result.output


def test_dry_run_shows_the_recipe_with_only_given_options_overridden():
    result = invoke("train", "--arch", "dia_wrn52_4_se", "--epochs", "3", "--dry-run")
    config = json.loads(result.output)
    assert (config["epochs"], config["schedule"], config["gamma"], config["weight_decay"]) == (3, [80, 120, 160], 0.2,
                                                                                                5e-4)
    resnext = json.loads(invoke("train", "--arch", "dia_resnext101_8x32d", "--wd", "1e-3", "--dry-run").output)
    assert (resnext["epochs"], resnext["schedule"], resnext["weight_decay"]) == (300, [150, 225], 1e-3)
    ean = json.loads(invoke("train", "--arch", "dia_resnet50", "--preset", "dia_resnet50-ean", "--dataset",
                            str(Path.cwd()), "--dry-run").output)
    assert (ean["epochs"], ean["schedule"], ean["batch_size"]) == (120, [30, 60, 90], 256)


def test_bad_input_is_one_line_not_a_traceback(tmp_path, image_folder):
    cases = [
        (["train", "--arch", "dia_resnet164", "--dataset", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path)],
         "neither one of"),
        (["train", "--arch", "dia_resnet164", "--mixed-precision", "fp16", "--dataset", str(image_folder)]
         if not torch.cuda.is_available() else ["train", "--arch", "dia_resnet164", "--epochs", "0"],
         "fp16 needs a CUDA GPU" if not torch.cuda.is_available() else "epochs must be"),
        (["train", "--arch", "dia_resnet164", "--set", "model.cell=gru"], "model.cell='gru' is not one of"),
        (["train", "--arch", "dia_resnet164", "--schedule", "120,60"], "increasing"),
        (["train", "--arch", "dia_resnet50"], "pass --dataset DIR"),
        (["train", "--arch", "dia_resnet164", "--resume", str(image_folder)], "config.json does not exist"),
        (["eval", "--checkpoint", str(tmp_path / "missing")], "does not exist"),
        (["train", "--arch", "dia_resnet164", "--dataset", str(image_folder), "--set", "model.widths=64,130,256",
          "--output-dir", str(tmp_path / "w")], "multiples of expansion"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
    unknown = CliRunner().invoke(main, ["train", "--arch", "resnet20"])
    assert unknown.exit_code == 2 and "resnet20" in unknown.output


def test_models_lists_names_with_parameter_counts():
    result = invoke("models")
    assert result.exit_code == 0
    assert "dia_resnet164 " in result.output and "1,946,132" in result.output and "28,358,052" in result.output
    assert len(result.output.strip().splitlines()) == 2 + 15


def test_summarize_gives_mean_and_std_over_seeds(tmp_path):
    runs = []
    for seed, (final, best) in enumerate([(76.0, 76.5), (77.0, 77.5)]):
        run = tmp_path / f"s{seed}"
        run.mkdir()
        (run / "results.json").write_text(json.dumps({"arch": "dia_resnet164", "dataset": "cifar100",
                                                      "test_acc_final": final, "test_acc_best": best}))
        runs.append(str(run))
    result = invoke("summarize", *runs, "--output", str(tmp_path / "summary.json"))
    assert result.exit_code == 0, result.output
    (row,) = json.loads((tmp_path / "summary.json").read_text())
    assert (row["runs"], row["test_acc_final_mean"], row["test_acc_final_std"], row["test_acc_best_mean"]) == \
        (2, 76.5, 0.5, 77.0)


@pytest.mark.slow
def test_compile_run(tmp_path, image_folder):
    _, results = train(tmp_path, "compiled", str(image_folder), "--epochs", "1", "--compile")
    assert results["epochs"] == 1


@pytest.mark.slow
def test_two_process_cpu_run(tmp_path, image_folder):
    env = {**os.environ, "ACCELERATE_USE_CPU": "yes", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dianet", "train",
         "--arch", "dia_resnet164", "--dataset", str(image_folder), "--epochs", "1", "--batch-size", "8",
         "--output-dir", str(out), *TINY], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "results.json").read_text())["world_size"] == 2
