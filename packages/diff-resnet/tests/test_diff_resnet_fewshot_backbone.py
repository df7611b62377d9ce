"""Few-shot backbones and data (spec §3.5, §4.3a–b, §8, quirks 12–15): models, image folders, training, extraction."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from diff_resnet.backbones import Conv4, ResNet18, WideResNet, build_backbone, convert_legacy_state_dict
from diff_resnet.cli import main
from diff_resnet.fewshot.backbone import nearest_prototype_accuracy
from diff_resnet.fewshot.config import FEWSHOT_DATASETS, fewshot_dataset
from diff_resnet.fewshot.data import SplitFolder, extract_features, load_features, load_split, read_split_csv
from diffcore.checkpoint import export_model, load_pretrained
from diffcore.errors import CheckpointError, ConfigError, DataError
from diffcore.testing import assert_close_state_dicts, require_shared_data
from safetensors.torch import load_file

# ---------------------------------------------------------------------------------------- backbones


def test_resnet18_for_84x84_shapes_keys_and_gradients():
    torch.manual_seed(0)
    model = ResNet18(num_classes=7)
    feature, logits = model(torch.randn(2, 3, 84, 84), return_feature=True)
    assert feature.shape == (2, 512) and logits.shape == (2, 7)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    keys = model.state_dict()
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
            "layer4.1.bn2.bias", "fc.weight"} <= set(keys)
    assert "layer1.0.downsample.0.weight" not in keys  # stage 1: stride 1, 64 → 64, identity shortcut
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())  # no max-pool at 84×84
    assert model.conv1.stride == (1, 1) and model.conv1.kernel_size == (3, 3)
    assert sum(p.numel() for p in model.parameters()) == 11_168_832 + 512 * 7 + 7


def test_wide_resnet_28_10_structure_and_small_forward():
    full = WideResNet(num_classes=64)
    assert full.feature_dim == 640 and full.bn1.momentum == 0.9  # quirk 15
    assert len(full.layer1) == len(full.layer3) == 4 and full.layer3[0].conv2.stride == (2, 2)
    assert {"conv1.bias", "layer1.0.shortcut.0.weight", "layer3.3.conv2.bias", "bn1.running_var",
            "linear.weight"} <= set(full.state_dict())
    small = WideResNet(num_classes=3, depth=10, widen=1)
    feature, logits = small(torch.randn(2, 3, 20, 20), return_feature=True)
    assert feature.shape == (2, 64) and logits.shape == (2, 3)
    with pytest.raises(ValueError, match="6n"):
        WideResNet(depth=27)


def test_conv4_native_resolution_and_checkpoint_round_trip(tmp_path):
    model = build_backbone("conv4", num_classes=5, in_channels=1, width=16)
    assert model(torch.randn(3, 1, 28, 28), return_feature=True)[0].shape == (3, 16)
    assert model(torch.randn(3, 1, 32, 32)).shape == (3, 5)
    export_model(model, tmp_path / "m", name="diff_resnet.Conv4", config=model.config, package="diff_resnet")
    loaded = load_pretrained(tmp_path / "m")
    assert isinstance(loaded, Conv4) and loaded.config == {"num_classes": 5, "in_channels": 1, "width": 16}
    assert_close_state_dicts(loaded.state_dict(), model.state_dict())
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg", 5)


def test_reset_parameters_is_kaiming_fan_out_and_unit_batch_norm():
    model = Conv4(num_classes=5, width=64)
    conv = model.encoder[4]  # the second conv, 64 → 64 channels: fan_out = 64·9
    assert conv.weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)
    torch.nn.init.constant_(model.encoder[1].weight, 3.0)
    model.reset_parameters()
    assert torch.equal(model.encoder[1].weight, torch.ones(64)) and torch.equal(model.encoder[1].bias, torch.zeros(64))


#: The keys of the official saved_models/*.pt files, written out from the original's network definitions
#: (fewshot/backbone/network/resnet.py and wideres.py, saved from nn.DataParallel): not from our modules.
OFFICIAL_KEYS = {name: (Path(__file__).parent / "data" / f"official_{name}_keys.txt").read_text().split()
                 for name in ("resnet18", "wideres")}
#: The originals' channel plans: stem width, stage widths, feature width. resnet.py: a 64-channel 3×3 stem conv
#: without bias, 2 BasicBlocks per stage (3×3 convs without bias, post-activation BN, 1×1 conv + BN projection);
#: wideres.py (depth 28, widen 10): a 16-channel biased stem conv, 4 pre-activation blocks per stage (BN on the
#: block's input, biased 3×3 convs, biased 1×1 projection), a final BN on the 640 features.
OFFICIAL_PLAN = {"resnet18": (64, (64, 128, 256, 512), 512), "wideres": (16, (160, 320, 640), 640)}


def official_shape(official: str, key: str, classes: int) -> tuple[int, ...]:
    """The shape of an entry of an official checkpoint, from :data:`OFFICIAL_PLAN` (never from our modules)."""
    stem, stages, feature = OFFICIAL_PLAN[official]
    parts = key.removeprefix("module.").split(".")
    is_weight = parts[-1] == "weight"
    if parts[-1] == "num_batches_tracked":
        return ()
    if parts[0] in ("fc", "linear"):
        return (classes, feature) if is_weight else (classes,)
    if parts[0] == "conv1":
        return (stem, 3, 3, 3) if is_weight else (stem,)
    if parts[0] == "bn1":
        return (stem,) if official == "resnet18" else (feature,)
    stage, block, layer = int(parts[0].removeprefix("layer")) - 1, int(parts[1]), parts[2]
    out = stages[stage]
    inp = out if block else (stages[stage - 1] if stage else stem)
    if layer in ("downsample", "shortcut"):
        projection_conv = parts[3] == "0"
        return (out, inp, 1, 1) if projection_conv and is_weight else (out,)
    if layer in ("conv1", "conv2"):
        return (out, inp if layer == "conv1" else out, 3, 3) if is_weight else (out,)
    return (inp,) if (official, layer) == ("wideres", "bn1") else (out,)


@pytest.mark.parametrize(("official", "backbone", "dataset", "classes"),
                         [("resnet18", "resnet18", "mini", 64), ("wideres", "wrn28_10", "cub", 100)])
def test_official_checkpoint_keys_convert_one_to_one(tmp_path, official, backbone, dataset, classes):
    """A file with exactly the official keys converts, every tensor lands under the same name without
    `module.`, and the exported folder loads back to the same weights."""
    keys = OFFICIAL_KEYS[official]
    assert len(keys) == {"resnet18": 122, "wideres": 183}[official] and all(k.startswith("module.") for k in keys)
    generator = torch.Generator().manual_seed(0)
    official_state = {k: torch.randn(official_shape(official, k, classes), generator=generator) for k in keys}
    official_state = {k: v.long() if k.endswith("num_batches_tracked") else v for k, v in official_state.items()}
    torch.save(official_state, tmp_path / "official.pt")
    converted = convert_legacy_state_dict(tmp_path / "official.pt", build_backbone(backbone, classes)).state_dict()
    assert sorted(f"module.{k}" for k in converted) == sorted(keys)
    for key in keys:
        assert torch.equal(converted[key.removeprefix("module.")], official_state[key]), key
    out = tmp_path / "exported"
    result = CliRunner().invoke(main, ["fewshot", "convert", "--checkpoint", str(tmp_path / "official.pt"),
                                       "--backbone", backbone, "--dataset", dataset, "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["dataset"] == dataset
    assert_close_state_dicts(load_pretrained(out).state_dict(), converted)


def test_converter_refuses_wrong_architecture_and_class_count(tmp_path):
    """A miniImageNet ResNet-18 file (64 classes) is not a WRN-28-10, nor a 100-class (CUB) ResNet-18."""
    torch.save({k: torch.zeros(official_shape("resnet18", k, 64)) for k in OFFICIAL_KEYS["resnet18"]},
               tmp_path / "mini.pt")
    with pytest.raises(CheckpointError, match=r"does not match WideResNet.*missing \['conv1.bias'.*--backbone"):
        convert_legacy_state_dict(tmp_path / "mini.pt", WideResNet(num_classes=64))
    with pytest.raises(CheckpointError, match=r"shape mismatches \['fc.weight', 'fc.bias'\]; check --backbone"):
        convert_legacy_state_dict(tmp_path / "mini.pt", ResNet18(num_classes=100))


# ------------------------------------------------------------------------------------ image folders


def write_folder(root, splits: dict[str, int], per_class: int, size: int = 24, header: bool = True) -> None:
    """An image folder laid out like the original's fewshot/data/<name>: images/ + split/*.csv."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "split").mkdir()
    for split, classes in splits.items():
        rows = ["filename,label"] if header else []
        for c in range(classes):
            colour = rng.integers(0, 256, 3)
            for i in range(per_class):
                pixels = np.clip(colour + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
                name = f"{split}{c:02d}_{i:03d}.png"
                Image.fromarray(pixels).save(root / "images" / name)
                rows.append(f"{name},n{split}{c:02d}")
        (root / "split" / f"{split}.csv").write_text("\n".join(rows) + "\n")


def test_split_csv_header_and_sorted_labels(tmp_path):
    (tmp_path / "with.csv").write_text("filename,label\na.jpg,n02\nb.jpg,n01\n")
    (tmp_path / "without.csv").write_text("004.Ani/x.jpg,3\n011.Bird/y.jpg,11\n")  # CUB: no header line
    assert read_split_csv(tmp_path / "with.csv") == [("a.jpg", "n02"), ("b.jpg", "n01")]
    assert read_split_csv(tmp_path / "without.csv")[0] == ("004.Ani/x.jpg", "3")  # the original drops this row
    (tmp_path / "bad.csv").write_text("filename,label\na.jpg\n")
    with pytest.raises(DataError, match="row 1 has 1 fields"):
        read_split_csv(tmp_path / "bad.csv")
    write_folder(tmp_path / "d", {"train": 2, "val": 1, "test": 1}, per_class=2)
    folder = SplitFolder(tmp_path / "d", "train.csv")
    assert folder.classes == ["ntrain00", "ntrain01"] and folder.labels.tolist() == [0, 0, 1, 1]
    assert folder[0][0].size == (24, 24)


def test_missing_folder_is_one_line_naming_files_data_root_and_links(tmp_path):
    with pytest.raises(DataError) as err:
        load_split(FEWSHOT_DATASETS["mini"], "base", tmp_path)
    message = str(err.value)
    assert "\n" not in message and f"{tmp_path}/mini/split/{{train,val,test}}.csv" in message
    assert "--data-root" in message and "Diff-ResNet README" in message
    with pytest.raises(ConfigError, match="neither one of mini, tiered, cub"):
        fewshot_dataset(str(tmp_path / "absent"))
    result = CliRunner().invoke(main, ["fewshot", "backbone", "--dataset", "cub", "--data-root", str(tmp_path),
                                       "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 1 and "CUB-200-2011 not found" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_transforms_follow_the_recipe(tmp_path):
    write_folder(tmp_path / "d", {"train": 1, "val": 1, "test": 1}, per_class=1, size=50)
    spec = fewshot_dataset(str(tmp_path / "d"))
    train, evaluation = (load_split(spec, "base", train=t).dataset[0][0] for t in (True, False))
    assert train.shape == evaluation.shape == (3, 84, 84) and train.dtype == torch.float32
    assert FEWSHOT_DATASETS["cub"].eval_resize == 120 and FEWSHOT_DATASETS["mini"].eval_resize == 96


def test_stand_in_class_splits_on_real_mnist():
    root = require_shared_data("images/mnist")
    spec = FEWSHOT_DATASETS["mnist"]
    base, novel = load_split(spec, "base", root), load_split(spec, "novel", root)
    assert base.classes == ["0", "1", "2", "3", "4"] and novel.classes == ["5", "6", "7", "8", "9"]
    assert len(base.labels) == 5923 + 6742 + 5958 + 6131 + 5842 and set(novel.labels.tolist()) == {0, 1, 2, 3, 4}
    image, _ = novel.dataset[0]
    assert image.shape == (1, 28, 28) and abs(float(image.mean())) < 2
    with pytest.raises(DataError, match="no validation classes"):
        load_split(spec, "val", root)


# ---------------------------------------------------------------------------------- training chain


def test_nearest_prototype_rule_on_separable_features():
    labels = torch.arange(6).repeat_interleave(20)
    features = torch.nn.functional.one_hot(labels, 6).float() * 10 + 0.1 * torch.randn(120, 6)
    assert nearest_prototype_accuracy(features, labels, 50, 5, 1, 15, seed=0) == 100.0
    noise = torch.randn(120, 6, generator=torch.Generator().manual_seed(0))
    assert nearest_prototype_accuracy(noise, labels, 300, 5, 1, 15, seed=0) == pytest.approx(20, abs=5)


def test_backbone_extract_eval_chain_on_an_image_folder(tmp_path, monkeypatch):
    """backbone (validation from epoch ⌊0.5E⌋, best kept) → extract (cached on the 2nd run) → eval."""
    monkeypatch.setenv("DIFFNETS_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "folder"
    write_folder(data, {"train": 3, "val": 5, "test": 5}, per_class=6, size=20)
    runner = CliRunner()
    out = tmp_path / "bb"
    result = runner.invoke(main, [
        "fewshot", "backbone", "--dataset", str(data), "--backbone", "conv4", "--epochs", "4", "--batch-size", "6",
        "--output-dir", str(out), "--set", "width=8", "--set", "select_from=0.5", "--set", "val_episodes=20",
        "--set", "val_query=3", "--set", "train.progress=false"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [("val_proto_acc" in m) for m in lines] == [False, False, True, True]
    results = json.loads((out / "results.json").read_text())
    best = max(lines[2:], key=lambda m: m["val_proto_acc"])  # first maximum: strict improvement
    assert results["selected_epoch"] == best["epoch"] and results["best_val_proto_acc"] == best["val_proto_acc"]
    assert (results["base_classes"], results["train_images"], results["feature_dim"]) == (3, 18, 8)
    header = json.loads((out / "model" / "config.json").read_text())
    assert header["model"] == "diff_resnet.Conv4" and header["dataset"] == str(data.resolve())
    # The exported weights are the selected epoch's: they reproduce its validation accuracy, and they are not the
    # last epoch's weights (the training state saved after epoch 4).
    assert results["selected_epoch"] == 3
    exported = load_pretrained(out / "model")
    val = load_split(fewshot_dataset(str(data)), "val")
    features = extract_features(exported, val, batch_size=6)
    accuracy = nearest_prototype_accuracy(features, val.labels, 20, 5, 1, 3, seed=1)
    assert accuracy == pytest.approx(results["best_val_proto_acc"], abs=1e-9)
    last = load_file(str(out / "state" / "model.safetensors"))
    assert any(not torch.equal(value, last[key]) for key, value in exported.state_dict().items() if key in last)

    extracted = [runner.invoke(main, ["fewshot", "extract", "--checkpoint", str(out / "model"),
                                      "--output-dir", str(tmp_path / f"ex{i}")]) for i in (1, 2)]
    assert all(r.exit_code == 0 for r in extracted), extracted[0].output
    first, second = (json.loads((tmp_path / f"ex{i}" / "results.json").read_text()) for i in (1, 2))
    assert (first["cached"], second["cached"]) == (False, True)
    assert first["features_file"] == second["features_file"]
    assert first["checkpoint_sha256"] == second["checkpoint_sha256"]
    features = load_features(first["features_file"])
    assert features.features.shape == (30, 8) and features.base_mean.shape == (8,)
    assert json.loads(features.metadata["classes"]) == [f"ntest{c:02d}" for c in range(5)]
    assert features.metadata["base_images"] == "18"

    evaluated = runner.invoke(main, ["fewshot", "eval", "--features", first["features_file"], "--query", "5",
                                     "--episodes", "3", "--set", "epochs=5", "--output-dir", str(tmp_path / "ev")])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["features"]["backbone"] == "conv4"


@pytest.mark.slow
def test_stand_in_backbone_on_real_cifar10_subset(tmp_path, monkeypatch):
    """One epoch of conv4 on the CIFAR-10 subset's base classes beats chance on their test images."""
    root = require_shared_data("images/cifar10/cifar10_subset.npz")
    monkeypatch.setenv("DIFFNETS_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(main, ["fewshot", "backbone", "--dataset", "cifar10-subset", "--backbone", "conv4",
                                       "--epochs", "1", "--data-root", str(root), "--output-dir", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert results["selection"] == "last epoch" and results["final_metrics"]["base_test_acc"] > 25
