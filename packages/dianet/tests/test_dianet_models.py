"""Backbones: exact parameter counts (spec §5), timm interface, one code path for plain/SE/DIA, init, export."""

import subprocess
import sys

import pytest
import timm
import torch
from dianet.config import MODEL_NAMES
from dianet.models import EXPORT_NAME, DIAResNet, model_names
from diffcore.checkpoint import export_model, load_pretrained
from diffcore.testing import assert_close_state_dicts

# spec §5 (CIFAR-100 heads) and §4 (ImageNet ResNet-50, 1000 classes)
COUNTS = {
    "dia_resnet164": (1_727_284, 1_946_132, 1_929_388),
    "dia_preresnet164": (1_726_388, 1_961_364, 1_928_492),
    "dia_wrn52_4": (12_072_500, 12_298_516, 12_162_324),
    "dia_resnext101_8x32d": (32_138_244, 33_006_020, 32_621_804),
    "dia_resnet50": (25_557_032, 28_358_052, 28_088_024),
}


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def is_imagenet(name: str) -> bool:
    return name.startswith("dia_resnet50")


@pytest.mark.parametrize("family", list(COUNTS))
def test_parameter_counts_match_the_spec_table_exactly(family):
    classes = {} if is_imagenet(family) else {"num_classes": 100}
    base, dia, se = (count(timm.create_model(family + suffix, **classes)) for suffix in ("_base", "", "_se"))
    assert (base, dia, se) == COUNTS[family]


def test_the_registry_lists_fifteen_models():
    assert model_names() == list(MODEL_NAMES) and len(MODEL_NAMES) == 15
    assert all(timm.is_model(name) for name in MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_forwards_and_backpropagates(name):
    """Shapes and gradients on a small input (16×16 CIFAR / 64×64 ImageNet, batch 2); one block per stage at
    the model's own widths and block type keeps it fast (full depth: the next test and the counts)."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=5, layers=(1,) * (4 if is_imagenet(name) else 3))
    size = 64 if is_imagenet(name) else 16
    x = torch.randn(2, 3, size, size)
    logits = model(x)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    logits.square().mean().backward()
    missing = [k for k, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing[:5]}"
    features = model.forward_features(x)
    assert features.shape == (2, model.num_features, size // (32 if is_imagenet(name) else 4),
                              size // (32 if is_imagenet(name) else 4))
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)


def test_full_depth_dia_resnet164_threads_its_state_through_eighteen_blocks():
    torch.manual_seed(0)
    model = timm.create_model("dia_resnet164", num_classes=100)
    x = torch.randn(1, 3, 8, 8)
    feats, gates = model.layer1(model.act1(model.bn1(model.conv1(x))), return_attention=True)
    assert feats.shape == (1, 64, 8, 8) and len(gates) == 18
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.layer3.attn.parameters())


@pytest.mark.parametrize("name", ["dia_resnet164", "dia_preresnet164_se", "dia_wrn52_4", "dia_resnext101_8x32d_base",
                                  "dia_resnet50"])
def test_features_only_gives_the_stem_and_one_map_per_stage(name):
    layers = (1,) * (4 if is_imagenet(name) else 3)
    model = timm.create_model(name, features_only=True, layers=layers)
    size = 64 if is_imagenet(name) else 16
    maps = model(torch.randn(1, 3, size, size))
    info = model.feature_info
    assert [m.shape[1] for m in maps] == info.channels()
    assert [size // m.shape[-1] for m in maps] == info.reduction()
    assert info.reduction() == ([2, 4, 8, 16, 32] if is_imagenet(name) else [1, 1, 2, 4])
    subset = timm.create_model(name, features_only=True, out_indices=(1, 2), layers=layers)
    assert len(subset(torch.randn(1, 3, size, size))) == 2


def test_timm_interface_reset_classifier_and_pretrained_cfg():
    model = timm.create_model("dia_resnet164", num_classes=100, layers=(1, 1, 1))
    assert model.num_features == 256 and model.get_classifier() is model.fc
    assert model.pretrained_cfg["input_size"] == (3, 32, 32) and model.pretrained_cfg["num_classes"] == 100
    groups = timm.models.group_parameters(model, model.group_matcher())
    assert [sorted({k.split(".")[0] for k in g}) for g in groups.values()] == \
        [["bn1", "conv1"], ["layer1"], ["layer2"], ["layer3"], ["fc"]]  # a stage keeps its shared unit
    x = torch.randn(2, 3, 32, 32)
    model.reset_classifier(10)
    assert model(x).shape == (2, 10) and model.config["num_classes"] == 10
    model.reset_classifier(0)
    assert model(x).shape == (2, 256)
    assert timm.create_model("dia_resnet50").pretrained_cfg["input_size"] == (3, 224, 224)
    with pytest.raises(TypeError):
        timm.create_model("dia_resnet164", not_an_option=1)


def test_gradient_checkpointing_per_stage_gives_the_same_gradients():
    torch.manual_seed(0)
    model = timm.create_model("dia_resnet164", num_classes=10, layers=(2, 2, 2))
    x = torch.randn(2, 3, 16, 16)
    grads = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        model(x).sum().backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    assert_close_state_dicts(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_plain_se_and_dia_come_from_one_code_path():
    """The twins share every non-attention tensor name and shape; DIA adds units (+ the extra BN of §4)."""
    def shapes(name):
        return {k: tuple(v.shape) for k, v in timm.create_model(name, num_classes=100).state_dict().items()}

    for family in ("dia_resnet164", "dia_preresnet164"):
        base, dia, se = shapes(family + "_base"), shapes(family), shapes(family + "_se")
        assert all(dia[k] == v and se[k] == v for k, v in base.items())
        extra_dia = {k.split(".")[1] if ".attn." in k else k.split(".")[-2] for k in set(dia) - set(base)}
        assert extra_dia == ({"attn"} if family == "dia_resnet164" else {"attn", "bn_out"})
        assert {k for k in set(se) - set(base) if ".attn." not in k} == set()
    dia = timm.create_model("dia_resnet164", num_classes=100)
    se = timm.create_model("dia_resnet164_se", num_classes=100)
    assert type(dia) is type(se) is DIAResNet
    assert [len(s.attn) for s in dia.stages] == [1, 1, 1] and [len(s.attn) for s in se.stages] == [18, 18, 18]


def test_ablation_switches_build_and_train_one_step():
    """cell="lstm" and share="none" (spec §14.3), plus shared SE and other widths (derived, not hard-coded)."""
    torch.manual_seed(0)
    variants = [dict(cell="lstm"), dict(share="none"), dict(cell="shared_se"), dict(reduction=8),
                dict(widths=(32, 48, 96))]
    for kwargs in variants:
        model = timm.create_model("dia_wrn52_4", num_classes=10, layers=(1, 1, 1), **kwargs)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
        before = {k: v.clone() for k, v in model.state_dict().items()}
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        changed = [k for k, v in model.state_dict().items() if ".attn." in k and not torch.equal(v, before[k])]
        assert changed, f"{kwargs}: the attention units did not train"
    per_block = timm.create_model("dia_resnet164", num_classes=100, share="none")
    shared = timm.create_model("dia_resnet164", num_classes=100)
    assert count(per_block) - count(shared) == 17 * (10_784 + 42_048 + 166_016)


def test_wrn_with_other_widen_factor_uses_stage_widths():
    """The official code hard-codes cell widths 64/128/256 and crashes for k ≠ 4 (spec §8); spec §12's WRN-16-1."""
    base = timm.create_model("dia_wrn52_4_base", num_classes=10, layers=(2, 2, 2), widths=(16, 32, 64))
    dia = timm.create_model("dia_wrn52_4", num_classes=10, layers=(2, 2, 2), widths=(16, 32, 64))
    assert count(dia) - count(base) == 14_840
    assert dia(torch.randn(1, 3, 16, 16)).shape == (1, 10)


def test_init_follows_the_official_loops():
    """Spec §4: He-normal convs, BN γ = 1, the WRN classifier's zero bias, ResNeXt's Kaiming-normal classifier
    with zero bias; zero_init_last; reset is idempotent (dia_bias_init="official": test_dianet_presets.py)."""
    torch.manual_seed(0)
    wrn = timm.create_model("dia_wrn52_4", num_classes=10, layers=(1, 1, 1))
    assert torch.all(wrn.fc.bias == 0)
    fc = timm.create_model("dia_resnext101_8x32d", num_classes=10, layers=(1, 1, 1)).fc
    assert torch.all(fc.bias == 0) and abs(fc.weight.std().item() / (2 / 512) ** 0.5 - 1) < 0.05
    conv = wrn.layer2.blocks[0].conv1.weight
    assert abs(conv.std().item() - (2 / (9 * conv.shape[0])) ** 0.5) < 0.1 * (2 / (9 * conv.shape[0])) ** 0.5
    assert all(torch.all(m.weight == 1) for m in wrn.modules() if isinstance(m, torch.nn.BatchNorm2d))
    last = timm.create_model("dia_resnet164", num_classes=10, layers=(1, 1, 1), zero_init_last=True)
    assert torch.all(last.layer1.blocks[0].bn3.weight == 0)
    torch.manual_seed(1)
    wrn.reset_parameters()
    first = {k: v.clone() for k, v in wrn.state_dict().items()}
    torch.manual_seed(1)
    wrn.reset_parameters()
    assert_close_state_dicts(first, wrn.state_dict())


def test_named_width_presets_and_stem_width():
    """widths="bearpaw" (spec §8): bearpaw's ResNeXt (stem 64 | 256, 512, 1024); its other nets equal DIANet's."""
    nxt = timm.create_model("dia_resnext101_8x32d_base", widths="bearpaw", layers=(1, 1, 1), num_classes=10)
    assert (nxt.config["stem_width"], nxt.config["widths"]) == (64, [256, 512, 1024])
    assert nxt.layer1.blocks[0].conv2.weight.shape == (512, 64, 3, 3)  # D = 8 · 256 / 4 in 8 groups
    dianet = timm.create_model("dia_resnext101_8x32d", widths="dianet", layers=(1, 1, 1), num_classes=10)
    assert (dianet.config["stem_width"], dianet.config["widths"]) == (32, [128, 256, 512])
    for name in ("dia_resnet164", "dia_preresnet164_se", "dia_wrn52_4"):
        assert count(timm.create_model(name, widths="bearpaw")) == count(timm.create_model(name))
    stem = timm.create_model("dia_resnext101_8x32d", widths="bearpaw", stem_width=48, layers=(1, 1, 1))
    assert stem.config["stem_width"] == 48 and stem.config["widths"] == [256, 512, 1024]
    with pytest.raises(ValueError, match="named presets"):
        timm.create_model("dia_resnet164", widths="wide")


def test_bad_architectures_fail_early_with_a_clear_message():
    with pytest.raises(ValueError, match="multiples of expansion"):
        DIAResNet(widths=(64, 130, 256))
    with pytest.raises(ValueError, match="one positive entry per stage"):
        DIAResNet(layers=(2, 2), widths=(64, 128, 256))
    with pytest.raises(ValueError, match="attn must be"):
        DIAResNet(attn="cbam")
    with pytest.raises(ValueError, match="block must be"):
        DIAResNet(block="dense")
    with pytest.raises(ValueError, match=r"block_dropout=0\.3 does not apply to 'bottleneck'"):
        timm.create_model("dia_resnet164", block_dropout=0.3)
    with pytest.raises(ValueError, match="cardinality=8 does not apply to 'wide_basic'"):
        timm.create_model("dia_wrn52_4", cardinality=8)


def test_export_and_load_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("dia_preresnet164", num_classes=10, layers=(1, 2, 1))
    model(torch.randn(4, 3, 16, 16))  # move the BN running statistics away from their init
    model.eval()
    export_model(model, tmp_path / "model", name=EXPORT_NAME, config=model.config, package="dianet")
    loaded = load_pretrained(tmp_path / "model").eval()
    assert type(loaded) is DIAResNet and loaded.config == model.config
    assert_close_state_dicts(model.state_dict(), loaded.state_dict())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), loaded(x))


def test_import_dianet_registers_with_timm_imported_later_and_the_cli_stays_torch_free():
    """(timm imported first is the plain branch of dianet/__init__.py: it imports dianet.models at once.)"""
    def run(code: str) -> str:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()

    assert run("import sys, dianet.cli; print([m for m in ('torch', 'timm') if m in sys.modules]); import timm, torch; "
               "torch.set_default_device('meta'); model = timm.create_model('dia_resnet164', num_classes=100); "
               "print(sum(p.numel() for p in model.parameters()))") == "[]\n1946132"
