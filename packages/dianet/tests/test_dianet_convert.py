"""``dianet convert`` against the key lists of the official files (gbup-group/DIANet ``models/cifar/*.py``).

The lists below are written from the official model files, not from our mapping: every state-dict entry of
``dia_resnet(depth=11, block_name='bottleneck')``, ``dia_preresnet(depth=11, block_name='bottleneck')``,
``dia_wrn(depth=10, widen_factor=4)`` and ``dia_resnext(cardinality=8, depth=11, widen_factor=4)`` with
``num_classes=10`` (one block per stage: depth 9n + 2, 6n + 4), as ``nn.DataParallel`` saves them (``module.``).
``NAME BN C`` stands for the five entries of a ``BatchNorm2d(C)``.
"""

import pytest
import torch
from click.testing import CliRunner
from dianet.cli import main
from dianet.convert import convert_official_state_dict
from diffcore.checkpoint import load_pretrained
from diffcore.errors import CheckpointError

# dia_resnet.py: ResNet(conv1, bn1, layer1..3 = Attention(ModuleList of Bottleneck, LSTMCell(C, C, 1)), fc)
DIA_RESNET_11 = """
conv1.weight 16 3 3 3
bn1 BN 16
layer1.ModuleList.0.conv1.weight 16 16 1 1
layer1.ModuleList.0.bn1 BN 16
layer1.ModuleList.0.conv2.weight 16 16 3 3
layer1.ModuleList.0.bn2 BN 16
layer1.ModuleList.0.conv3.weight 64 16 1 1
layer1.ModuleList.0.bn3 BN 64
layer1.ModuleList.0.downsample.0.weight 64 16 1 1
layer1.ModuleList.0.downsample.1 BN 64
layer1.lstm.w_ih.0.seq.0.weight 16 64
layer1.lstm.w_ih.0.seq.0.bias 16
layer1.lstm.w_ih.0.seq.2.weight 256 16
layer1.lstm.w_ih.0.seq.2.bias 256
layer1.lstm.w_hh.0.seq.0.weight 16 64
layer1.lstm.w_hh.0.seq.0.bias 16
layer1.lstm.w_hh.0.seq.2.weight 256 16
layer1.lstm.w_hh.0.seq.2.bias 256
layer2.ModuleList.0.conv1.weight 32 64 1 1
layer2.ModuleList.0.bn1 BN 32
layer2.ModuleList.0.conv2.weight 32 32 3 3
layer2.ModuleList.0.bn2 BN 32
layer2.ModuleList.0.conv3.weight 128 32 1 1
layer2.ModuleList.0.bn3 BN 128
layer2.ModuleList.0.downsample.0.weight 128 64 1 1
layer2.ModuleList.0.downsample.1 BN 128
layer2.lstm.w_ih.0.seq.0.weight 32 128
layer2.lstm.w_ih.0.seq.0.bias 32
layer2.lstm.w_ih.0.seq.2.weight 512 32
layer2.lstm.w_ih.0.seq.2.bias 512
layer2.lstm.w_hh.0.seq.0.weight 32 128
layer2.lstm.w_hh.0.seq.0.bias 32
layer2.lstm.w_hh.0.seq.2.weight 512 32
layer2.lstm.w_hh.0.seq.2.bias 512
layer3.ModuleList.0.conv1.weight 64 128 1 1
layer3.ModuleList.0.bn1 BN 64
layer3.ModuleList.0.conv2.weight 64 64 3 3
layer3.ModuleList.0.bn2 BN 64
layer3.ModuleList.0.conv3.weight 256 64 1 1
layer3.ModuleList.0.bn3 BN 256
layer3.ModuleList.0.downsample.0.weight 256 128 1 1
layer3.ModuleList.0.downsample.1 BN 256
layer3.lstm.w_ih.0.seq.0.weight 64 256
layer3.lstm.w_ih.0.seq.0.bias 64
layer3.lstm.w_ih.0.seq.2.weight 1024 64
layer3.lstm.w_ih.0.seq.2.bias 1024
layer3.lstm.w_hh.0.seq.0.weight 64 256
layer3.lstm.w_hh.0.seq.0.bias 64
layer3.lstm.w_hh.0.seq.2.weight 1024 64
layer3.lstm.w_hh.0.seq.2.bias 1024
fc.weight 10 256
fc.bias 10
"""

# dia_preresnet.py: conv1 (no BN), blocks bn1 conv1 bn2 conv2 bn3 conv3 downsample(conv) bn_additional, then bn, fc
DIA_PRERESNET_11 = """
conv1.weight 16 3 3 3
layer1.ModuleList.0.bn1 BN 16
layer1.ModuleList.0.conv1.weight 16 16 1 1
layer1.ModuleList.0.bn2 BN 16
layer1.ModuleList.0.conv2.weight 16 16 3 3
layer1.ModuleList.0.bn3 BN 16
layer1.ModuleList.0.conv3.weight 64 16 1 1
layer1.ModuleList.0.downsample.0.weight 64 16 1 1
layer1.ModuleList.0.bn_additional BN 64
layer1.lstm.w_ih.0.seq.0.weight 16 64
layer1.lstm.w_ih.0.seq.0.bias 16
layer1.lstm.w_ih.0.seq.2.weight 256 16
layer1.lstm.w_ih.0.seq.2.bias 256
layer1.lstm.w_hh.0.seq.0.weight 16 64
layer1.lstm.w_hh.0.seq.0.bias 16
layer1.lstm.w_hh.0.seq.2.weight 256 16
layer1.lstm.w_hh.0.seq.2.bias 256
layer2.ModuleList.0.bn1 BN 64
layer2.ModuleList.0.conv1.weight 32 64 1 1
layer2.ModuleList.0.bn2 BN 32
layer2.ModuleList.0.conv2.weight 32 32 3 3
layer2.ModuleList.0.bn3 BN 32
layer2.ModuleList.0.conv3.weight 128 32 1 1
layer2.ModuleList.0.downsample.0.weight 128 64 1 1
layer2.ModuleList.0.bn_additional BN 128
layer2.lstm.w_ih.0.seq.0.weight 32 128
layer2.lstm.w_ih.0.seq.0.bias 32
layer2.lstm.w_ih.0.seq.2.weight 512 32
layer2.lstm.w_ih.0.seq.2.bias 512
layer2.lstm.w_hh.0.seq.0.weight 32 128
layer2.lstm.w_hh.0.seq.0.bias 32
layer2.lstm.w_hh.0.seq.2.weight 512 32
layer2.lstm.w_hh.0.seq.2.bias 512
layer3.ModuleList.0.bn1 BN 128
layer3.ModuleList.0.conv1.weight 64 128 1 1
layer3.ModuleList.0.bn2 BN 64
layer3.ModuleList.0.conv2.weight 64 64 3 3
layer3.ModuleList.0.bn3 BN 64
layer3.ModuleList.0.conv3.weight 256 64 1 1
layer3.ModuleList.0.downsample.0.weight 256 128 1 1
layer3.ModuleList.0.bn_additional BN 256
layer3.lstm.w_ih.0.seq.0.weight 64 256
layer3.lstm.w_ih.0.seq.0.bias 64
layer3.lstm.w_ih.0.seq.2.weight 1024 64
layer3.lstm.w_ih.0.seq.2.bias 1024
layer3.lstm.w_hh.0.seq.0.weight 64 256
layer3.lstm.w_hh.0.seq.0.bias 64
layer3.lstm.w_hh.0.seq.2.weight 1024 64
layer3.lstm.w_hh.0.seq.2.bias 1024
bn BN 256
fc.weight 10 256
fc.bias 10
"""

# dia_wrn.py: conv1, block1..3 = Attention(ModuleList of BasicBlock(bn1 conv1 bn2 conv2 convShortcut bn_additional)),
# bn1, fc; LSTM widths hard-coded 64/128/256, so widen_factor 4
DIA_WRN_10_4 = """
conv1.weight 16 3 3 3
block1.ModuleList.0.bn1 BN 16
block1.ModuleList.0.conv1.weight 64 16 3 3
block1.ModuleList.0.bn2 BN 64
block1.ModuleList.0.conv2.weight 64 64 3 3
block1.ModuleList.0.convShortcut.weight 64 16 1 1
block1.ModuleList.0.bn_additional BN 64
block1.lstm.w_ih.0.seq.0.weight 16 64
block1.lstm.w_ih.0.seq.0.bias 16
block1.lstm.w_ih.0.seq.2.weight 256 16
block1.lstm.w_ih.0.seq.2.bias 256
block1.lstm.w_hh.0.seq.0.weight 16 64
block1.lstm.w_hh.0.seq.0.bias 16
block1.lstm.w_hh.0.seq.2.weight 256 16
block1.lstm.w_hh.0.seq.2.bias 256
block2.ModuleList.0.bn1 BN 64
block2.ModuleList.0.conv1.weight 128 64 3 3
block2.ModuleList.0.bn2 BN 128
block2.ModuleList.0.conv2.weight 128 128 3 3
block2.ModuleList.0.convShortcut.weight 128 64 1 1
block2.ModuleList.0.bn_additional BN 128
block2.lstm.w_ih.0.seq.0.weight 32 128
block2.lstm.w_ih.0.seq.0.bias 32
block2.lstm.w_ih.0.seq.2.weight 512 32
block2.lstm.w_ih.0.seq.2.bias 512
block2.lstm.w_hh.0.seq.0.weight 32 128
block2.lstm.w_hh.0.seq.0.bias 32
block2.lstm.w_hh.0.seq.2.weight 512 32
block2.lstm.w_hh.0.seq.2.bias 512
block3.ModuleList.0.bn1 BN 128
block3.ModuleList.0.conv1.weight 256 128 3 3
block3.ModuleList.0.bn2 BN 256
block3.ModuleList.0.conv2.weight 256 256 3 3
block3.ModuleList.0.convShortcut.weight 256 128 1 1
block3.ModuleList.0.bn_additional BN 256
block3.lstm.w_ih.0.seq.0.weight 64 256
block3.lstm.w_ih.0.seq.0.bias 64
block3.lstm.w_ih.0.seq.2.weight 1024 64
block3.lstm.w_ih.0.seq.2.bias 1024
block3.lstm.w_hh.0.seq.0.weight 64 256
block3.lstm.w_hh.0.seq.0.bias 64
block3.lstm.w_hh.0.seq.2.weight 1024 64
block3.lstm.w_hh.0.seq.2.bias 1024
bn1 BN 256
fc.weight 10 256
fc.bias 10
"""

# dia_resnext.py: conv_1_3x3, bn_1, stage_1..3 = Attention(ModuleList of ResNeXtBottleneck), classifier;
# stages 32 | 128, 256, 512, inner width D = 8 · out / 4 in 8 groups
DIA_RESNEXT_11_8x32d = """
conv_1_3x3.weight 32 3 3 3
bn_1 BN 32
stage_1.ModuleList.0.conv_reduce.weight 256 32 1 1
stage_1.ModuleList.0.bn_reduce BN 256
stage_1.ModuleList.0.conv_conv.weight 256 32 3 3
stage_1.ModuleList.0.bn BN 256
stage_1.ModuleList.0.conv_expand.weight 128 256 1 1
stage_1.ModuleList.0.bn_expand BN 128
stage_1.ModuleList.0.shortcut.shortcut_conv.weight 128 32 1 1
stage_1.ModuleList.0.shortcut.shortcut_bn BN 128
stage_1.lstm.w_ih.0.seq.0.weight 32 128
stage_1.lstm.w_ih.0.seq.0.bias 32
stage_1.lstm.w_ih.0.seq.2.weight 512 32
stage_1.lstm.w_ih.0.seq.2.bias 512
stage_1.lstm.w_hh.0.seq.0.weight 32 128
stage_1.lstm.w_hh.0.seq.0.bias 32
stage_1.lstm.w_hh.0.seq.2.weight 512 32
stage_1.lstm.w_hh.0.seq.2.bias 512
stage_2.ModuleList.0.conv_reduce.weight 512 128 1 1
stage_2.ModuleList.0.bn_reduce BN 512
stage_2.ModuleList.0.conv_conv.weight 512 64 3 3
stage_2.ModuleList.0.bn BN 512
stage_2.ModuleList.0.conv_expand.weight 256 512 1 1
stage_2.ModuleList.0.bn_expand BN 256
stage_2.ModuleList.0.shortcut.shortcut_conv.weight 256 128 1 1
stage_2.ModuleList.0.shortcut.shortcut_bn BN 256
stage_2.lstm.w_ih.0.seq.0.weight 64 256
stage_2.lstm.w_ih.0.seq.0.bias 64
stage_2.lstm.w_ih.0.seq.2.weight 1024 64
stage_2.lstm.w_ih.0.seq.2.bias 1024
stage_2.lstm.w_hh.0.seq.0.weight 64 256
stage_2.lstm.w_hh.0.seq.0.bias 64
stage_2.lstm.w_hh.0.seq.2.weight 1024 64
stage_2.lstm.w_hh.0.seq.2.bias 1024
stage_3.ModuleList.0.conv_reduce.weight 1024 256 1 1
stage_3.ModuleList.0.bn_reduce BN 1024
stage_3.ModuleList.0.conv_conv.weight 1024 128 3 3
stage_3.ModuleList.0.bn BN 1024
stage_3.ModuleList.0.conv_expand.weight 512 1024 1 1
stage_3.ModuleList.0.bn_expand BN 512
stage_3.ModuleList.0.shortcut.shortcut_conv.weight 512 256 1 1
stage_3.ModuleList.0.shortcut.shortcut_bn BN 512
stage_3.lstm.w_ih.0.seq.0.weight 128 512
stage_3.lstm.w_ih.0.seq.0.bias 128
stage_3.lstm.w_ih.0.seq.2.weight 2048 128
stage_3.lstm.w_ih.0.seq.2.bias 2048
stage_3.lstm.w_hh.0.seq.0.weight 128 512
stage_3.lstm.w_hh.0.seq.0.bias 128
stage_3.lstm.w_hh.0.seq.2.weight 2048 128
stage_3.lstm.w_hh.0.seq.2.bias 2048
classifier.weight 10 512
classifier.bias 10
"""

# (official file, its key list, the family it is, stage widths, stem width); then official → our name for one key
# of every renaming rule (written by hand from both layouts)
OFFICIAL = {
    "dia_resnet": (DIA_RESNET_11, "dia_resnet164", [64, 128, 256], 16, {
        "layer2.ModuleList.0.downsample.1.running_var": "layer2.blocks.0.downsample.1.running_var",
        "layer3.lstm.w_hh.0.seq.2.bias": "layer3.attn.0.hh.fc2.bias",
        "layer1.lstm.w_ih.0.seq.0.weight": "layer1.attn.0.ih.fc1.weight"}),
    "dia_preresnet": (DIA_PRERESNET_11, "dia_preresnet164", [64, 128, 256], 16, {
        "layer2.ModuleList.0.downsample.0.weight": "layer2.blocks.0.downsample.weight",
        "layer1.ModuleList.0.bn_additional.weight": "layer1.blocks.0.bn_out.weight",
        "bn.running_mean": "norm.0.running_mean"}),
    "dia_wrn": (DIA_WRN_10_4, "dia_wrn52_4", [64, 128, 256], 16, {
        "block1.ModuleList.0.convShortcut.weight": "layer1.blocks.0.shortcut.weight",
        "block3.ModuleList.0.bn_additional.bias": "layer3.blocks.0.bn_out.bias",
        "block2.lstm.w_hh.0.seq.0.bias": "layer2.attn.0.hh.fc1.bias",
        "bn1.weight": "norm.0.weight"}),
    "dia_resnext": (DIA_RESNEXT_11_8x32d, "dia_resnext101_8x32d", [128, 256, 512], 32, {
        "conv_1_3x3.weight": "conv1.weight", "bn_1.running_var": "bn1.running_var",
        "stage_1.ModuleList.0.conv_reduce.weight": "layer1.blocks.0.conv1.weight",
        "stage_2.ModuleList.0.bn_reduce.bias": "layer2.blocks.0.bn1.bias",
        "stage_3.ModuleList.0.conv_conv.weight": "layer3.blocks.0.conv2.weight",
        "stage_3.ModuleList.0.bn.weight": "layer3.blocks.0.bn2.weight",
        "stage_1.ModuleList.0.conv_expand.weight": "layer1.blocks.0.conv3.weight",
        "stage_2.ModuleList.0.bn_expand.running_mean": "layer2.blocks.0.bn3.running_mean",
        "stage_2.ModuleList.0.shortcut.shortcut_conv.weight": "layer2.blocks.0.downsample.0.weight",
        "stage_3.ModuleList.0.shortcut.shortcut_bn.bias": "layer3.blocks.0.downsample.1.bias",
        "stage_3.lstm.w_ih.0.seq.2.weight": "layer3.attn.0.ih.fc2.weight",
        "classifier.weight": "fc.weight"}),
}


def official_state_dict(listing: str, batch_counters: bool = True) -> dict[str, torch.Tensor]:
    """Distinct random tensors of the listed shapes, keyed as DataParallel saves them."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for line in listing.strip().splitlines():
        name, *shape = line.split()
        if shape[0] == "BN":
            c = int(shape[1])
            entries = {"weight": (c,), "bias": (c,), "running_mean": (c,), "running_var": (c,)}
            state.update({f"module.{name}.{k}": torch.rand(s, generator=g) + 0.5 for k, s in entries.items()})
            if batch_counters:  # PyTorch ≥ 0.4.1 saves them
                state[f"module.{name}.num_batches_tracked"] = torch.tensor(7)
        else:
            state[f"module.{name}"] = torch.randn(tuple(map(int, shape)), generator=g)
    return state


@pytest.mark.parametrize("official_file", list(OFFICIAL))
def test_converts_the_complete_key_list_of_every_official_file(official_file, tmp_path):
    listing, family, widths, stem, renamed = OFFICIAL[official_file]
    official = official_state_dict(listing, batch_counters=official_file != "dia_wrn")
    torch.save({"epoch": 164, "state_dict": official, "acc": 76.1, "best_acc": 76.6}, tmp_path / "model_best.pth.tar")
    result = CliRunner().invoke(main, ["convert", str(tmp_path / "model_best.pth.tar"), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    model = load_pretrained(tmp_path / "out")  # strict: every key of our model came from the file
    config = model.config
    assert (config["layers"], config["widths"], config["stem_width"], config["num_classes"]) == ([1, 1, 1], widths,
                                                                                                  stem, 10)
    assert config["reduction"] == 4 and config["cardinality"] == (8 if official_file == "dia_resnext" else 1)
    ours = model.state_dict()
    for official_key, our_key in renamed.items():
        torch.testing.assert_close(ours[our_key], official[f"module.{official_key}"], rtol=0, atol=0)

    def signatures(state):  # the tensors are distinct random draws: shape + leading values identify each one
        return sorted((tuple(v.shape), tuple(v.flatten()[:4].tolist())) for v in state.values()
                      if v.dtype.is_floating_point)

    assert signatures(ours) == signatures(official)  # every official tensor lands in our model, exactly once
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 10)
    assert f"{family}" in result.output


def test_converted_dict_matches_without_the_data_parallel_prefix():
    official = {k.removeprefix("module."): v for k, v in official_state_dict(DIA_WRN_10_4).items()}
    converted = convert_official_state_dict(official)
    assert converted.family == "dia_wrn52_4" and converted.kwargs["block"] == "wide_basic"
    torch.testing.assert_close(converted.state_dict["layer1.blocks.0.shortcut.weight"],
                               official["block1.ModuleList.0.convShortcut.weight"])


def test_bad_checkpoints_give_one_line_errors(tmp_path):
    torch.save({"state_dict": {"features.0.weight": torch.zeros(1)}}, tmp_path / "other.pth")
    result = CliRunner().invoke(main, ["convert", str(tmp_path / "other.pth"), str(tmp_path / "out")])
    assert result.exit_code == 1 and "not an official DIANet" in result.output
    basic = {"module.layer1.ModuleList.0.conv1.weight": torch.zeros(1), "module.conv1.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="BasicBlock"):
        convert_official_state_dict(basic)
    stacked = {**official_state_dict(DIA_RESNET_11), "module.layer2.lstm.w_ih.1.weight": torch.zeros(512, 128)}
    with pytest.raises(CheckpointError, match=r"^layer2\.lstm\.w_ih\.1\.weight: only one-layer DIA-LSTM cells"):
        convert_official_state_dict(stacked)
    official = official_state_dict(DIA_RESNET_11)
    del official["module.layer2.lstm.w_hh.0.seq.2.bias"]
    torch.save(official, tmp_path / "broken.pth")
    result = CliRunner().invoke(main, ["convert", str(tmp_path / "broken.pth"), str(tmp_path / "out")])
    assert result.exit_code == 1 and "does not match" in result.output and "layer2.attn.0.hh.fc2.bias" in result.output
    assert not (tmp_path / "out").exists()
