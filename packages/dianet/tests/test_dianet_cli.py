"""``dianet`` end to end with click's CliRunner: train (folder, cifar10-subset), the protocol (validation split,
selection, exports, seeds), resume, eval, summarize, models."""

import json
import os
import statistics
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

# one block per stage at a quarter of the widths: the whole pipeline at a small fraction of the compute
TINY = ["--set", "model.layers=1,1,1", "--set", "model.widths=16,32,64", "--set", "train.num_workers=0",
        "--set", "train.progress=false", "--lr", "0.05"]
RESULT_KEYS = {"test_acc_final", "test_acc_best", "best_epoch", "selected_on", "selected_epoch", "test_acc_selected",
               "train_acc_final", "test_loss_final", "train_loss_first", "train_loss_final", "params", "epochs",
               "steps", "seed", "num_classes", "train_images", "val_images", "test_images", "world_size", "exports",
               "seconds"}


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
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def train(tmp: Path, name: str, dataset: str, *extra: str):
    out = tmp / name
    result = invoke("train", "--arch", "dia_resnet164", "--dataset", dataset, "--batch-size", "8",
                    "--output-dir", str(out), *TINY, *extra)
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "results.json").read_text())


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_train_with_a_validation_split_then_eval_the_selected_model(tmp_path, image_folder):
    out, results = train(tmp_path, "run", str(image_folder), "--epochs", "2", "--schedule", "1", "--gamma", "0.5",
                         "--val-split", "4", "--select-on", "val", "--set", "snapshot_epochs=0")
    assert RESULT_KEYS <= results.keys()
    assert (results["epochs"], results["steps"], results["num_classes"]) == (2, 4, 2)  # 12 images, batches of 8
    assert (results["train_images"], results["val_images"], results["test_images"]) == (12, 4, 8)
    assert results["selected_on"] == "val_acc" and results["exports"] == ["model", "model_best", "model_epoch0"]
    records = lines(out / "metrics.jsonl")
    assert [r["lr"] for r in records] == [0.05, 0.025]  # the step schedule, per epoch
    for record in records:  # the original's log columns, plus the validation split
        assert {"lr", "train_loss", "train_acc", "test_loss", "test_acc", "val_loss", "val_acc"} <= record.keys()
        assert any(record["train_acc"] == pytest.approx(100 * k / 12) for k in range(13))  # k of the 12 images
    assert results["train_acc_final"] == records[-1]["train_acc"]
    config = json.loads((out / "config.json").read_text())
    assert (config["schedule"], config["gamma"], config["weight_decay"]) == ([1], 0.5, 1e-4)  # wd from the recipe
    assert (config["train"]["epochs"], config["train"]["monitor"], config["val_split"]) == (2, "val_acc", 4)
    best = json.loads((out / "model_best" / "config.json").read_text())
    assert (best["epoch"], best["selected_on"]) == (results["selected_epoch"], "val_acc")
    model = load_pretrained(out / "model_best")
    assert model.config["layers"] == [1, 1, 1] and model.num_classes == 2
    evaluated = invoke("eval", "--checkpoint", str(out / "model"), "--output-dir", str(tmp_path / "eval"),
                       "--set", "num_workers=0")
    assert evaluated.exit_code == 0, evaluated.output
    ev = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert ev["dataset"] == str(image_folder) and ev["test_images"] == 8
    assert ev["test_acc"] == pytest.approx(results["test_acc_final"])


def test_selection_and_exports_follow_the_metrics(tmp_path, image_folder, monkeypatch):
    """Scripted evaluations: the selected epoch (first maximum of val_acc), the best test epoch and the final
    one all differ, and model_best/ holds exactly the weights after the selected epoch."""
    from diffcore.train import Trainer

    val, test = iter([50.0, 75.0, 75.0, 60.0]), iter([40.0, 55.0, 70.0, 65.0])
    monkeypatch.setattr(Trainer, "evaluate", lambda self: {"val_loss": 1.0, "val_acc": next(val), "test_loss": 1.0,
                                                           "test_acc": next(test)})
    out, results = train(tmp_path, "scripted", str(image_folder), "--epochs", "4", "--val-split", "4",
                         "--select-on", "val", "--set", "snapshot_epochs=0,1,2,3")
    assert (results["test_acc_final"], results["test_acc_best"], results["best_epoch"]) == (65.0, 70.0, 3)
    assert (results["selected_epoch"], results["test_acc_selected"], results["val_acc_best"]) == (2, 55.0, 75.0)
    assert_close_state_dicts(weights(out / "model_best"), weights(out / "model_epoch1"))  # after epoch 2 (1-based)
    assert_close_state_dicts(weights(out / "model"), weights(out / "model_epoch3"))
    assert not torch.equal(weights(out / "model_epoch1")["fc.weight"], weights(out / "model_epoch3")["fc.weight"])


def test_by_default_the_best_epoch_is_selected_on_the_test_set_as_the_original(tmp_path, image_folder, monkeypatch):
    """No --select-on: model_best/ holds the weights of the first epoch with the highest test accuracy (cifar.py's
    best_acc with its strict >), not the last epoch's."""
    from diffcore.train import Trainer

    test = iter([40.0, 70.0, 70.0, 55.0])
    monkeypatch.setattr(Trainer, "evaluate", lambda self: {"test_loss": 1.0, "test_acc": next(test)})
    out, results = train(tmp_path, "scripted", str(image_folder), "--epochs", "4", "--set", "snapshot_epochs=1,3")
    assert (results["selected_on"], results["selected_epoch"], results["test_acc_selected"]) == ("test_acc", 2, 70.0)
    assert (results["test_acc_best"], results["best_epoch"], results["test_acc_final"]) == (70.0, 2, 55.0)
    assert_close_state_dicts(weights(out / "model_best"), weights(out / "model_epoch1"))
    assert not torch.equal(weights(out / "model_best")["fc.weight"], weights(out / "model")["fc.weight"])


class Killed(Exception):
    pass


def kill_at(monkeypatch, epoch: int, run_name: str | None = None):
    """Make training raise ``Killed`` at the start of (0-based) ``epoch`` of the run folder named ``run_name``."""
    from diffcore.train import Trainer

    train_epoch = Trainer._train_epoch

    def killed(self):
        if self.epoch == epoch and (run_name is None or self.run.path.name == run_name):
            raise Killed
        return train_epoch(self)

    monkeypatch.setattr(Trainer, "_train_epoch", killed)
    return lambda: monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)


def test_resume_continues_to_the_same_result_and_refuses_what_it_cannot_continue(tmp_path, image_folder,
                                                                                monkeypatch):
    full, full_results = train(tmp_path, "full", str(image_folder), "--epochs", "2")
    reset_accelerate_state()
    args = ["train", "--arch", "dia_resnet164", "--dataset", str(image_folder), "--batch-size", "8", *TINY,
            "--epochs", "2"]
    restore = kill_at(monkeypatch, 1)
    with pytest.raises(Killed):
        invoke(*args, "--output-dir", str(tmp_path / "part"))
    restore()
    reset_accelerate_state()
    restore = kill_at(monkeypatch, 0)
    with pytest.raises(Killed):  # before its first epoch ended: nothing saved
        invoke(*args, "--output-dir", str(tmp_path / "early"))
    restore()
    reset_accelerate_state()
    refused = CliRunner().invoke(main, ["train", "--resume", str(tmp_path / "part"), "--epochs", "3"])
    assert refused.exit_code == 1 and "train.epochs: 2 → 3" in refused.output
    assert not (tmp_path / "early" / "state").exists()
    for path in (tmp_path / "early", tmp_path / "nowhere"):
        refused = CliRunner().invoke(main, ["train", "--resume", str(path)])
        assert refused.exit_code == 1 and "Traceback" not in refused.output, refused.output
    assert "no saved training state" in CliRunner().invoke(main, ["train", "--resume", str(tmp_path / "early")]).output
    result = invoke("train", "--resume", str(tmp_path / "part"))
    assert result.exit_code == 0, result.output
    resumed = json.loads((tmp_path / "part" / "results.json").read_text())
    assert resumed["epochs"] == 2 and resumed["test_acc_final"] == pytest.approx(full_results["test_acc_final"])
    assert_close_state_dicts(weights(full / "model"), weights(tmp_path / "part" / "model"), atol=1e-6, rtol=1e-5)
    assert len(lines(tmp_path / "part" / "metrics.jsonl")) == 2


def test_seeds_protocol_resumes_the_interrupted_seed_and_summarizes(tmp_path, image_folder, monkeypatch):
    args = ["train", "--arch", "dia_resnet164", "--dataset", str(image_folder), "--batch-size", "8", *TINY,
            "--epochs", "2", "--seeds", "2", "--seed", "3", "--output-dir", str(tmp_path / "protocol")]
    restore = kill_at(monkeypatch, 1, run_name="seed4")
    with pytest.raises(Killed):
        invoke(*args)
    restore()
    reset_accelerate_state()
    first = (tmp_path / "protocol" / "seed3" / "results.json").read_bytes()
    result = invoke("train", "--resume", str(tmp_path / "protocol"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "protocol" / "seed3" / "results.json").read_bytes() == first  # finished seed kept as it was
    seed4 = tmp_path / "protocol" / "seed4"
    assert len(json.loads((seed4 / "meta.json").read_text())["resumed"]) == 1  # continued from its saved state
    assert len(lines(seed4 / "metrics.jsonl")) == 2
    summary = json.loads((tmp_path / "protocol" / "results.json").read_text())
    per_seed = [json.loads((tmp_path / "protocol" / f"seed{s}" / "results.json").read_text()) for s in (3, 4)]
    assert summary["seeds"] == [3, 4] and [json.loads((tmp_path / "protocol" / f"seed{s}" / "config.json")
                                                      .read_text())["train"]["seed"] for s in (3, 4)] == [3, 4]
    for key in ("test_acc_final", "test_acc_best"):
        values = [r[key] for r in per_seed]
        assert summary[f"{key}_mean"] == pytest.approx(statistics.fmean(values))
        assert summary[f"{key}_std"] == pytest.approx(statistics.pstdev(values))
    assert "±" in result.output
    summarized = invoke("summarize", str(tmp_path / "protocol"), "--output", str(tmp_path / "summary.json"))
    assert summarized.exit_code == 0, summarized.output
    (row,) = json.loads((tmp_path / "summary.json").read_text())
    assert row["runs"] == 2 and row["test_acc_final_mean"] == pytest.approx(summary["test_acc_final_mean"])


def fake_run(folder: Path, seed: int, final: float, best: float, command: str = "train", **config_changes):
    """A finished run directory as `dianet train` leaves it (config from --dry-run), without training."""
    dry = CliRunner().invoke(main, ["train", "--arch", "dia_resnet164", "--dataset", "cifar100", "--dry-run",
                                    "--seed", str(seed), *[f"--set={k}={v}" for k, v in config_changes.items()]])
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(dry.output)
    (folder / "meta.json").write_text(json.dumps({"package": "dianet", "command": command}))
    (folder / "results.json").write_text(json.dumps({"seed": seed, "test_acc_final": final, "test_acc_best": best,
                                                     "selected_on": "test_acc", "test_acc_selected": best}))
    return str(folder)


def test_summarize_groups_by_the_whole_configuration_and_refuses_repeated_seeds(tmp_path):
    paper = [fake_run(tmp_path / f"s{seed}", seed, final, best)
             for seed, (final, best) in enumerate([(76.0, 76.5), (77.0, 77.5)])]
    ablation = fake_run(tmp_path / "lstm", 0, 70.0, 71.0, **{"model.cell": "lstm"})
    quiet = fake_run(tmp_path / "quiet", 2, 78.0, 78.5, **{"train.progress": "false", "train.num_workers": "0"})
    result = invoke("summarize", *paper, quiet, ablation, "--output", str(tmp_path / "summary.json"))
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "summary.json").read_text())
    assert [(r["runs"], r["model.cell"], r["seeds"]) for r in rows] == [(3, None, [0, 1, 2]), (1, "lstm", [0])]
    assert rows[0]["test_acc_final_mean"] == pytest.approx(77.0)
    assert rows[0]["test_acc_final_std"] == pytest.approx(statistics.pstdev([76.0, 77.0, 78.0]))
    assert (rows[1]["test_acc_final_mean"], rows[1]["test_acc_final_std"]) == (70.0, 0.0)
    assert "model.cell" in result.output and "77.00 ± 0.82" in result.output
    rerun = fake_run(tmp_path / "rerun", 1, 75.0, 75.5)
    refused = CliRunner().invoke(main, ["summarize", *paper, rerun])
    assert refused.exit_code == 1 and "same seed (1)" in refused.output
    other_epochs = fake_run(tmp_path / "e10", 1, 50.0, 51.0, **{"train.epochs": "10"})
    assert CliRunner().invoke(main, ["summarize", *paper, other_epochs]).exit_code == 0  # another experiment


def spy_models(monkeypatch, stop: bool = False, prepare=None) -> list:
    """Record the models `dianet train` builds to train (not its meta-device check) with their parameters as built,
    before any step; ``prepare(model)`` runs on each. ``stop`` ends the command there by raising :class:`Built`."""
    import dianet.train

    create, built = dianet.train.create_model, []

    def spy(*args, **kwargs):
        model = create(*args, **kwargs)
        if next(model.parameters()).device.type != "meta":
            built.append((model, {k: v.detach().clone() for k, v in model.named_parameters()}))
            if prepare is not None:
                prepare(model)
            if stop:
                raise Built(model)
        return model

    monkeypatch.setattr(dianet.train, "create_model", spy)
    return built


class Built(Exception):
    pass


def built_model(monkeypatch, out: Path, dataset: str, arch: str, *options: str):
    """The model `dianet train --arch ARCH OPTIONS` would train, one block per stage."""
    spy_models(monkeypatch, stop=True)
    with pytest.raises(Built) as built:
        invoke("train", "--arch", arch, "--dataset", dataset, "--output-dir", str(out), "--set", "model.layers=1,1,1",
               "--set", "train.num_workers=0", *options)
    return built.value.args[0]


def attention_biases(model) -> list[torch.Tensor]:
    return [p for k, p in model.named_parameters() if ".attn." in k and k.endswith("bias")]


MODEL_SWITCHES = {  # --set model.X=V (spec §8 compatibility switches, §3.6 ablations) → what the trained model is
    "dia_bias_init": ("dia_wrn52_4", ["model.dia_bias_init=official"],
                      lambda m: len(attention_biases(m)) == 12 and all(torch.all(b == 0) for b in attention_biases(m)),
                      lambda m: all(torch.all(b != 0) for b in attention_biases(m))),
    "extra_bn": ("dia_preresnet164", ["model.extra_bn=false"],
                 lambda m: all(b.bn_out is None for s in m.stages for b in s.blocks),
                 lambda m: all(b.bn_out is not None for s in m.stages for b in s.blocks)),
    "widths": ("dia_resnext101_8x32d_base", ["model.widths=bearpaw"],
               lambda m: (m.conv1.out_channels, [s.channels for s in m.stages]) == (64, [256, 512, 1024]),
               lambda m: (m.conv1.out_channels, [s.channels for s in m.stages]) == (32, [128, 256, 512])),
    "cell": ("dia_resnet164", ["model.cell=lstm"],
             lambda m: all(isinstance(s.attn[0].lstm, torch.nn.LSTMCell) for s in m.stages),
             lambda m: all(s.attn[0].cell == "dia_lstm" and len(s.attn) == 1 for s in m.stages)),
    "share_reduction_layers_zero_init": (
        "dia_resnet164", ["model.share=none", "model.reduction=8", "model.num_layers=2", "model.zero_init_last=true",
                          "model.layers=2,2,2"],
        lambda m: [(len(s.attn), s.attn[0].ih.fc1.out_features, len(s.attn[1].ih_upper)) for s in m.stages] ==
        [(2, 8, 1), (2, 16, 1), (2, 32, 1)] and all(torch.all(b.bn3.weight == 0) for s in m.stages for b in s.blocks),
        lambda m: [(len(s.attn), s.attn[0].ih.fc1.out_features, len(s.attn[0].ih_upper)) for s in m.stages] ==
        [(1, 16, 0), (1, 32, 0), (1, 64, 0)] and all(torch.all(b.bn3.weight == 1) for s in m.stages for b in s.blocks)),
}


@pytest.mark.parametrize("switch", list(MODEL_SWITCHES))
def test_model_switches_reach_the_model_that_trains(switch, tmp_path, image_folder, monkeypatch):
    arch, settings, switched, default = MODEL_SWITCHES[switch]
    assert default(built_model(monkeypatch, tmp_path / "default", str(image_folder), arch))
    options = [arg for setting in settings for arg in ("--set", setting)]
    assert switched(built_model(monkeypatch, tmp_path / "switched", str(image_folder), arch, *options))


def test_weight_decay_and_momentum_act_on_every_parameter_as_sgd_defines_them(tmp_path, image_folder, monkeypatch):
    """One step per epoch (8 images, batch 8) from the same initial weights p₀ (same seed): weight decay adds
    lr · wd · p₀ to every parameter's first step (BN and attention included, as cifar.py; spec §6); momentum 0.9
    without Nesterov leaves the first step alone and adds 0.9 × the first step to the second."""
    built = spy_models(monkeypatch)
    one_step = ["--set", "train_limit=8", "--set", "snapshot_epochs=0", "--epochs", "2", "--lr", "1"]
    settings = {"sgd": ["--wd", "0", "--set", "momentum=0"], "momentum": ["--wd", "0"],
                "decay": ["--wd", "0.01", "--epochs", "1"]}
    runs = {name: train(tmp_path, name, str(image_folder), *one_step, *extra)[0] for name, extra in settings.items()}
    p0 = built[0][1]
    for _, state in built[1:]:
        assert_close_state_dicts(p0, state)
    first = {name: weights(out / "model_epoch0") for name, out in runs.items()}
    second = {name: weights(runs[name] / "model") for name in ("sgd", "momentum")}
    lr = 1.0  # before the recipe's first milestone (large, so that every step stands out of float32 rounding)
    step = {k: first["momentum"][k] - p0[k] for k in p0}
    # every parameter moved (nothing passes vacuously) but W₁ʰ: with one block per stage h_{t−1} is h_0 = 0
    assert {k for k, v in step.items() if v.abs().max() < 1e-5} == {f"layer{s}.attn.0.hh.fc1.weight" for s in (1, 2, 3)}
    assert_close_state_dicts({k: first["sgd"][k] for k in p0}, {k: first["momentum"][k] for k in p0})
    assert_close_state_dicts({k: second["momentum"][k] - second["sgd"][k] for k in p0},
                             {k: 0.9 * step[k] for k in p0}, atol=1e-6, rtol=1e-4)
    assert_close_state_dicts({k: first["momentum"][k] - first["decay"][k] for k in p0},
                             {k: lr * 0.01 * p0[k] for k in p0}, atol=1e-6, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")
def test_norm_stats_reach_the_images_trained_on_and_the_evaluation(tmp_path, image_folder, monkeypatch):
    """--norm-stats cifar100 normalises with the CIFAR-100 statistics; `dianet eval` of the exported model uses the
    statistics it was trained with, so it reproduces the run's final test loss."""
    import dianet.train
    from torchvision.io import read_image

    load, splits = dianet.train.load_splits, []
    monkeypatch.setattr(dianet.train, "load_splits", lambda *a, **k: splits.append(load(*a, **k)) or splits[-1])
    out, results = train(tmp_path, "run", str(image_folder), "--epochs", "1", "--norm-stats", "cifar100")
    mean, std = torch.tensor([0.5071, 0.4865, 0.4409]), torch.tensor([0.2673, 0.2564, 0.2762])
    first = read_image(str(image_folder / "val" / "blue" / "0.png")) / 255  # ImageFolder's first test image
    torch.testing.assert_close(splits[0].test[0][0], (first - mean[:, None, None]) / std[:, None, None])
    evaluated = invoke("eval", "--checkpoint", str(out / "model"), "--output-dir", str(tmp_path / "eval"),
                       "--set", "num_workers=0")
    assert evaluated.exit_code == 0, evaluated.output
    ev = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert ev["test_loss"] == pytest.approx(results["test_loss_final"], rel=1e-5)


def test_bf16_and_channels_last_reach_the_training_forward(tmp_path, image_folder, monkeypatch):
    """--mixed-precision bf16 runs the training forward under bf16 autocast, --channels-last feeds channels-last
    images to channels-last weights (seen by the stem conv); the ablation settings reach the exported model."""
    seen = []

    def record(conv, args, out):
        if conv.training:
            seen.append((args[0].is_contiguous(memory_format=torch.channels_last),
                         conv.weight.is_contiguous(memory_format=torch.channels_last), out.dtype))

    spy_models(monkeypatch, prepare=lambda model: model.conv1.register_forward_hook(record))
    train(tmp_path, "bf16", str(image_folder), "--epochs", "1", "--mixed-precision", "bf16", "--channels-last",
          "--set", "model.num_layers=2", "--set", "model.share=none")
    assert len(seen) == 2 and set(seen) == {(True, True, torch.bfloat16)}  # 16 images, batches of 8
    model = load_pretrained(tmp_path / "bf16" / "model")
    assert model.config["num_layers"] == 2 and len(model.layer1.attn[0].ih_upper) == 1


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


def test_models_lists_names_with_parameter_counts():
    result = invoke("models")
    assert result.exit_code == 0
    assert "dia_resnet164 " in result.output and "1,946,132" in result.output and "28,358,052" in result.output
    assert len(result.output.strip().splitlines()) == 2 + 15


@pytest.mark.slow
def test_compile_run(tmp_path, image_folder):
    _, results = train(tmp_path, "compiled", str(image_folder), "--epochs", "1", "--compile")
    assert results["epochs"] == 1


@pytest.mark.slow
def test_two_process_cpu_run_shares_rank_zeros_default_folder(tmp_path, image_folder):
    """No --output-dir: both processes write to the one folder rank 0 draws under runs/dianet/."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "yes", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dianet", "train",
         "--arch", "dia_resnet164", "--dataset", str(image_folder), "--epochs", "1", "--batch-size", "8", *TINY],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = (tmp_path / "runs" / "dianet").iterdir()
    results = json.loads((run / "results.json").read_text())
    assert results["world_size"] == 2 and results["train_images"] == 16
    (record,) = lines(run / "metrics.jsonl")
    assert record["train_acc"] * 16 / 100 == pytest.approx(round(record["train_acc"] * 16 / 100))  # all 16 counted
