"""Presets pinned against the spec (``../shared/specs/dianet.md``) with every value typed from its tables, never
read from our config: the training recipes (§6) as ``dianet train --arch NAME`` resolves them, the registered
architectures (§4, §3.6) and the normalisation statistics (§6); and the model-level compatibility switches of
§8 (``dia_bias_init``, ``extra_bn``) by what they change — that, and nothing else."""

import json

import pytest
import timm
import torch
from click.testing import CliRunner
from dianet.cli import main
from dianet.data import NORM_STATS, transforms
from dianet.models import DIAResNet

# §6, common to the four CIFAR recipes (bearpaw cifar.py as run_code.py runs it): SGD lr 0.1, momentum 0.9, no
# Nesterov, train batch 128, test batch 100, 4 loader workers, fp32, CIFAR-10 statistics also for CIFAR-100, the
# README's dataset CIFAR-100, the test set evaluated after every epoch with the best kept (best_acc), an extra
# copy after 0-based epoch 50; cifar.py clips no gradient and never stops early.
CIFAR_COMMON = {"dataset": "cifar100", "lr": 0.1, "momentum": 0.9, "nesterov": False, "norm_stats": "cifar10",
                "snapshot_epochs": [50], "val_split": 0, "train.batch_size": 128, "train.eval_batch_size": 100,
                "train.num_workers": 4, "train.mixed_precision": "no", "train.monitor": "test_acc",
                "train.monitor_mode": "max", "train.eval_every": 1, "train.max_grad_norm": None,
                "train.grad_accum_steps": 1, "train.early_stopping_patience": None}
# §6 table: epochs, milestones, γ, weight decay
CIFAR_TABLE = {
    "dia_resnet164": (180, [60, 120], 0.1, 1e-4),
    "dia_preresnet164": (164, [81, 122], 0.1, 1e-4),
    "dia_wrn52_4": (200, [80, 120, 160], 0.2, 5e-4),
    "dia_resnext101_8x32d": (300, [150, 225], 0.1, 5e-4),
}
# §6 ImageNet (no official recipe): SGD 0.1, momentum 0.9, wd 1e-4, batch 256, 90 epochs, × 0.1 at 30 and 60,
# ImageNet mean/std; --recipe ean: 120 epochs, × 0.1 every 30
IMAGENET_COMMON = {"lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4, "gamma": 0.1,
                   "norm_stats": "imagenet", "train.batch_size": 256, "train.mixed_precision": "no",
                   "train.max_grad_norm": None}
IMAGENET_TABLE = {"dia_resnet50": (90, [30, 60]), "dia_resnet50-ean": (120, [30, 60, 90])}


def expected_recipe(preset: str) -> dict:
    if preset in IMAGENET_TABLE:
        epochs, schedule = IMAGENET_TABLE[preset]
        return {**IMAGENET_COMMON, "train.epochs": epochs, "schedule": schedule}
    epochs, schedule, gamma, wd = CIFAR_TABLE[preset]
    return {**CIFAR_COMMON, "train.epochs": epochs, "schedule": schedule, "gamma": gamma, "weight_decay": wd}


def dry_run(*args: str) -> dict:
    result = CliRunner().invoke(main, ["train", *args, "--dry-run"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def field(config: dict, key: str):
    for part in key.split("."):
        config = config[part]
    return config


RECIPE_CASES = [(f + suffix, f) for f in CIFAR_TABLE for suffix in ("", "_base", "_se")] + [
    ("dia_resnet50", "dia_resnet50"), ("dia_resnet50_se", "dia_resnet50"), ("dia_resnet50", "dia_resnet50-ean")]


@pytest.mark.parametrize(("arch", "preset"), RECIPE_CASES)
def test_each_architecture_trains_with_its_spec_recipe(arch, preset, tmp_path):
    """The recipe `dianet train --arch NAME` starts from (plain and SE twins: their DIA model's), field by field;
    the model options stay unset, so the registered architecture (pinned below) is what trains."""
    args = ["--arch", arch] + (["--preset", preset] if preset.endswith("-ean") else [])
    config = dry_run(*args, *(["--dataset", str(tmp_path)] if preset in IMAGENET_TABLE else []))
    expected = expected_recipe(preset)
    assert {key: field(config, key) for key in expected} == expected
    assert config["arch"] == arch and config["model"] == {**dict.fromkeys(config["model"]), "share": "auto"}


def test_an_option_typed_overrides_its_field_of_the_recipe_only():
    recipe, changed = dry_run("--arch", "dia_wrn52_4_se"), dry_run("--arch", "dia_wrn52_4_se", "--epochs", "3")
    assert (recipe["train"].pop("epochs"), changed["train"].pop("epochs")) == (200, 3)
    assert changed == recipe


# §4 (backbones) and §3.6 (unit defaults): block type, blocks per stage, stage widths, stem, the DIA-only extras
ARCHITECTURES = {
    "dia_resnet164": dict(block="bottleneck", layers=[18, 18, 18], widths=[64, 128, 256], stem_width=16,
                          stem="cifar", extra_bn=False, cardinality=1, block_dropout=0.0, fc_init="default"),
    "dia_preresnet164": dict(block="preact_bottleneck", layers=[18, 18, 18], widths=[64, 128, 256], stem_width=16,
                             stem="cifar", extra_bn=True, cardinality=1, block_dropout=0.0, fc_init="default"),
    # the official WRN init loop zeroes every Linear bias (§3.4: the attention biases too, with dia_bias_init)
    "dia_wrn52_4": dict(block="wide_basic", layers=[8, 8, 8], widths=[64, 128, 256], stem_width=16, stem="cifar",
                        extra_bn=True, cardinality=1, block_dropout=0.3, fc_init="zero_bias"),
    # DIANet's ResNeXt widths 32 | 128, 256, 512; inner width D = cardinality · out / widen (widen 4); Kaiming
    # classifier with zero bias
    "dia_resnext101_8x32d": dict(block="bottleneck", layers=[11, 11, 11], widths=[128, 256, 512], stem_width=32,
                                 stem="cifar", extra_bn=False, cardinality=8, expansion=4, block_dropout=0.0,
                                 fc_init="kaiming"),
    # ImageNet DIA-ResNet-50: torchvision layout (its DIA units have r = 20, below)
    "dia_resnet50": dict(block="bottleneck", layers=[3, 4, 6, 3], widths=[256, 512, 1024, 2048], stem_width=64,
                         stem="imagenet", extra_bn=False, cardinality=1),
}
# §3.6 and §4: DIA (r = 4, one unit per stage, dia_lstm, one layer, PyTorch's default init), the plain twin without
# attention nor extra BN, the SE twin (r = 16, one module per block, no extra BN); γ = 1 on every last BN
ATTENTION = {"": dict(attn="dia", reduction=4, share="stage", cell="dia_lstm", num_layers=1, dia_bias_init="default"),
             "_base": dict(attn=None, extra_bn=False), "_se": dict(attn="se", reduction=16, share="none",
                                                                   extra_bn=False)}


@pytest.mark.parametrize("name", [f + v for f in ARCHITECTURES for v in ATTENTION])
def test_registered_architectures_match_the_spec(name):
    family = next(f for f in ARCHITECTURES if name.startswith(f) and name.removeprefix(f) in ATTENTION)
    variant = name.removeprefix(family)
    expected = {**ARCHITECTURES[family], **ATTENTION[variant], "zero_init_last": False,
                "num_classes": 1000 if family == "dia_resnet50" else 100}
    if variant == "" and family == "dia_resnet50":  # the authors' EAN code: C → C/20
        expected["reduction"] = 20
    with torch.device("meta"):
        model = timm.create_model(name)
    assert {key: model.config[key] for key in expected} == expected
    block = model.layer1.blocks[0]
    if family == "dia_wrn52_4":  # the dropout that the config names sits between the block's two convs
        assert block.dropout.p == 0.3
    if family == "dia_resnext101_8x32d":  # 8 groups of 32 channels in the first stage
        assert (block.conv2.groups, block.conv2.in_channels) == (8, 256)


def test_normalisation_statistics_are_the_ones_named():
    """§6: cifar.py normalises CIFAR-100 with the CIFAR-10 statistics (the preset); --norm-stats cifar100 uses the
    CIFAR-100 ones, imagenet the ImageNet ones — and the test pipeline applies exactly those."""
    expected = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
                "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
                "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
    assert NORM_STATS == expected
    image = torch.full((3, 32, 32), 200, dtype=torch.uint8)
    for name, (mean, std) in expected.items():
        out = transforms(name, train=False)(image)
        torch.testing.assert_close(out[:, 5, 7], (200 / 255 - torch.tensor(mean)) / torch.tensor(std))


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters())


@pytest.mark.parametrize(("name", "zeroed"), [("dia_wrn52_4", True), ("dia_resnext101_8x32d", True),
                                              ("dia_resnet164", False), ("dia_preresnet164", False)])
def test_official_dia_bias_init_zeroes_exactly_the_attention_biases_of_wrn_and_resnext(name, zeroed):
    """§8: the official init loops of DIA-WRN and DIA-ResNeXt zero every attention bias, those of DIA-ResNet and
    DIA-PreResNet leave PyTorch's init; every other tensor is the default init's, drawn alike."""
    def build(init):
        torch.manual_seed(0)
        return params(timm.create_model(name, num_classes=10, layers=(1, 1, 1), dia_bias_init=init))

    default, official = build("default"), build("official")
    biases = {k for k in default if ".attn." in k and k.endswith("bias")}
    assert len(biases) == 3 * 4  # per stage: fc1 and fc2 of the two MLPs
    assert all(default[k].abs().min() > 0 for k in biases)  # PyTorch's default init, not zero
    for key, value in official.items():
        if key in biases and zeroed:
            assert torch.all(value == 0), key
        else:
            assert torch.equal(value, default[key]), key


@pytest.mark.parametrize(("name", "extra"), [("dia_preresnet164", 16_128), ("dia_wrn52_4", 7_168)])
def test_extra_bn_is_one_batchnorm_after_the_branch_and_nothing_else(name, extra):
    """§4/§5: DIA-PreResNet/WRN normalise the branch once more before the gate (16,128 / 7,168 parameters at full
    depth); extra_bn=False removes exactly that BN: with it set to the identity the two models agree."""
    full = timm.create_model(name, num_classes=100)
    assert sum(p.numel() for p in full.parameters()) - sum(
        p.numel() for p in timm.create_model(name, num_classes=100, extra_bn=False).parameters()) == extra
    torch.manual_seed(0)
    with_bn = timm.create_model(name, num_classes=10, layers=(1, 2, 1)).eval()
    without = DIAResNet(**{**with_bn.config, "extra_bn": False}).eval()
    missing, unexpected = without.load_state_dict(with_bn.state_dict(), strict=False)
    assert missing == [] and {k.rsplit(".", 2)[-2] for k in unexpected} == {"bn_out"}
    x, u = torch.randn(2, 3, 16, 16), torch.randn(2, 128, 8, 8)
    bns = [block.bn_out for stage in with_bn.stages for block in stage.blocks]
    with torch.no_grad():
        for bn in bns:  # BN(x) = x: γ 1, β 0, mean 0, var + eps = 1
            bn.running_mean.zero_(), bn.running_var.fill_(1 - bn.eps)
        torch.testing.assert_close(with_bn(x), without(x))
        for bn in bns:  # BN(x) = 2x + 0.5
            bn.weight.fill_(2.0), bn.bias.fill_(0.5)
        assert not torch.allclose(with_bn(x), without(x), atol=1e-2)
        # the branch F leaves the block through that BN, before the gate; the shortcut does not
        (branch, shortcut), (bare, bare_shortcut) = with_bn.layer2.blocks[1](u), without.layer2.blocks[1](u)
        torch.testing.assert_close(branch, 2.0 * bare + 0.5)
        torch.testing.assert_close(shortcut, bare_shortcut)
