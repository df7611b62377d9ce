"""``dianet convert``: official gbup-group/DIANet checkpoints (DataParallel, ModuleList, lstm) → our layout."""

import pytest
import timm
import torch
from click.testing import CliRunner
from dianet.cli import main
from dianet.convert import convert_official_state_dict, load_official
from diffcore.checkpoint import load_pretrained
from diffcore.errors import CheckpointError
from diffcore.testing import assert_close_state_dicts

STAGE_PREFIX = {"dia_resnet164": "layer", "dia_preresnet164": "layer", "dia_wrn52_4": "block",
                "dia_resnext101_8x32d": "stage_"}
TOP = {"dia_preresnet164": {"norm.0": "bn"}, "dia_wrn52_4": {"norm.0": "bn1"},
       "dia_resnext101_8x32d": {"conv1": "conv_1_3x3", "bn1": "bn_1", "fc": "classifier"}}
BLOCK = {"dia_preresnet164": {"bn_out": "bn_additional", "downsample": "downsample.0"},
         "dia_wrn52_4": {"bn_out": "bn_additional", "shortcut": "convShortcut"},
         "dia_resnext101_8x32d": {"conv1": "conv_reduce", "bn1": "bn_reduce", "conv2": "conv_conv", "bn2": "bn",
                                  "conv3": "conv_expand", "bn3": "bn_expand", "downsample.0": "shortcut.shortcut_conv",
                                  "downsample.1": "shortcut.shortcut_bn"}}


def official_key(ours: str, family: str) -> str:
    """Our key → the name the official model files give it (written from those files, independently of convert.py)."""
    module, leaf = ours.rsplit(".", 1)
    parts = module.split(".")
    if not parts[0].startswith("layer"):
        return f"module.{TOP.get(family, {}).get(module, module)}.{leaf}"
    stage = STAGE_PREFIX[family] + parts[0].removeprefix("layer")
    if parts[1] == "attn":  # layerK.attn.0.{ih,hh}.{fc1,fc2}
        mlp = {"ih": "w_ih", "hh": "w_hh"}[parts[3]]
        return f"module.{stage}.lstm.{mlp}.0.seq.{ {'fc1': 0, 'fc2': 2}[parts[4]] }.{leaf}"
    inner = ".".join(parts[3:])
    return f"module.{stage}.ModuleList.{parts[2]}.{BLOCK.get(family, {}).get(inner, inner)}.{leaf}"


def official_checkpoint(family: str, layers=(2, 2, 2), **kwargs):
    torch.manual_seed(0)
    model = timm.create_model(family, num_classes=10, layers=layers, **kwargs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    ours = model.state_dict()
    return model, ours, {official_key(k, family): v.clone() for k, v in ours.items()}


@pytest.mark.parametrize("family", list(STAGE_PREFIX))
def test_converts_every_official_family(family):
    model, ours, official = official_checkpoint(family)
    stage = STAGE_PREFIX[family]
    assert (f"module.{stage}1.lstm.w_ih.0.seq.0.weight" in official and f"module.{stage}1.ModuleList.1.bn1.weight" \
        in official) or f"module.{stage}1.ModuleList.1.bn_reduce.weight" in official
    converted = convert_official_state_dict(official)
    assert converted.family == family
    assert_close_state_dicts(converted.state_dict, ours)
    kwargs = converted.kwargs
    assert tuple(kwargs["layers"]) == (2, 2, 2) and kwargs["num_classes"] == 10 and kwargs["reduction"] == 4
    assert tuple(kwargs["widths"]) == tuple(model.config["widths"])
    if family == "dia_resnext101_8x32d":
        assert (kwargs["cardinality"], kwargs["expansion"]) == (8, 4)


def test_official_key_names_are_those_of_the_official_files():
    """A few keys exactly as the official DIA-WRN / DIA-ResNeXt / DIA-PreResNet state dicts have them."""
    _, _, wrn = official_checkpoint("dia_wrn52_4")
    assert tuple(wrn["module.block1.lstm.w_ih.0.seq.0.weight"].shape) == (16, 64)
    assert tuple(wrn["module.block3.lstm.w_hh.0.seq.2.weight"].shape) == (1024, 64)
    assert {"module.block1.ModuleList.0.convShortcut.weight", "module.block1.ModuleList.0.bn_additional.weight",
            "module.bn1.running_var", "module.fc.bias"} <= set(wrn)
    _, _, nxt = official_checkpoint("dia_resnext101_8x32d")
    assert {"module.conv_1_3x3.weight", "module.bn_1.weight", "module.classifier.weight",
            "module.stage_2.ModuleList.0.shortcut.shortcut_conv.weight", "module.stage_3.ModuleList.1.conv_conv.weight",
            "module.stage_1.ModuleList.0.bn.running_mean"} <= set(nxt)
    _, _, pre = official_checkpoint("dia_preresnet164")
    assert {"module.layer2.ModuleList.0.downsample.0.weight", "module.bn.weight"} <= set(pre)


def test_cli_convert_reads_a_pth_with_weights_only_and_eval_can_load_it(tmp_path):
    model, ours, official = official_checkpoint("dia_resnet164", layers=(1, 2, 1))
    torch.save({"epoch": 180, "state_dict": official, "acc": 76.5, "best_acc": 77.0}, tmp_path / "model_best.pth.tar")
    result = CliRunner().invoke(main, ["convert", str(tmp_path / "model_best.pth.tar"), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "dia_resnet164" in result.output
    loaded = load_pretrained(tmp_path / "out")
    assert_close_state_dicts(loaded.state_dict(), ours)
    assert loaded.config["layers"] == [1, 2, 1]
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model.eval()(x))


def test_bad_checkpoints_give_one_line_errors(tmp_path):
    torch.save({"state_dict": {"features.0.weight": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not an official DIANet"):
        convert_official_state_dict(load_official(tmp_path / "other.pth"))
    basic = {"module.layer1.ModuleList.0.conv1.weight": torch.zeros(1), "module.conv1.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="BasicBlock"):
        convert_official_state_dict(basic)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(main, ["convert", str(tmp_path / "junk.pth"), str(tmp_path / "out")])
    assert result.exit_code == 1 and "Error: cannot read" in result.output and "Traceback" not in result.output
    _, _, official = official_checkpoint("dia_resnet164", layers=(1, 1, 1))
    del official["module.layer2.lstm.w_hh.0.seq.2.bias"]
    torch.save(official, tmp_path / "broken.pth")
    result = CliRunner().invoke(main, ["convert", str(tmp_path / "broken.pth"), str(tmp_path / "out")])
    assert result.exit_code == 1 and "does not match" in result.output and "layer2.attn.0.hh.fc2.bias" in result.output
