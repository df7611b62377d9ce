import json

import pytest
import torch
from diffcore.checkpoint import export_model, load_pretrained, load_state_dict_strict, register_model
from diffcore.errors import CheckpointError


@register_model("diffcore_tests.TinyNet")
class TinyNet(torch.nn.Module):
    def __init__(self, width: int = 4, tie: bool = False):
        super().__init__()
        self.config = {"width": width, "tie": tie}
        self.encoder = torch.nn.Linear(width, width)
        self.decoder = torch.nn.Linear(width, width)
        if tie:
            self.decoder.weight = self.encoder.weight

    def forward(self, x):
        return self.decoder(torch.relu(self.encoder(x)))


@pytest.mark.parametrize("tie", [False, True])
def test_round_trip(tmp_path, tie):
    model = TinyNet(5, tie)
    export_model(model, tmp_path / "m", name="diffcore_tests.TinyNet", config=model.config, package=__name__)
    header = json.loads((tmp_path / "m" / "config.json").read_text())
    assert header["model"] == "diffcore_tests.TinyNet" and header["config"] == {"width": 5, "tie": tie}
    loaded = load_pretrained(tmp_path / "m")
    x = torch.randn(3, 5)
    assert type(loaded) is TinyNet and torch.equal(loaded(x), model(x))
    if tie:
        assert loaded.decoder.weight is loaded.encoder.weight or torch.equal(loaded.decoder.weight,
                                                                              loaded.encoder.weight)


def test_truncated_file_is_one_line_error(tmp_path):
    model = TinyNet()
    export_model(model, tmp_path / "m", name="diffcore_tests.TinyNet", config=model.config, package=__name__)
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file") as err:
        load_pretrained(tmp_path / "m")
    assert "\n" not in str(err.value)


def test_mismatched_checkpoint_names_keys_and_shapes(tmp_path):
    export_model(TinyNet(4), tmp_path / "m", name="diffcore_tests.TinyNet", config={"width": 4}, package=__name__)
    with pytest.raises(CheckpointError, match=r"shape mismatch \[.*encoder.weight \(4, 4\) vs \(6, 6\)") as err:
        load_state_dict_strict(TinyNet(6), tmp_path / "m" / "model.safetensors")
    assert "\n" not in str(err.value)

    class Other(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Linear(4, 4)
            self.head = torch.nn.Linear(4, 2)

    with pytest.raises(CheckpointError, match=r"missing keys \[head.weight, head.bias\].*unexpected keys"):
        load_state_dict_strict(Other(), tmp_path / "m" / "model.safetensors")


def test_missing_and_bad_folders(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pretrained(tmp_path / "nowhere")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"model": "nope", "package": "diffcore", "config": {}}')
    with pytest.raises(CheckpointError, match="model 'nope' is not registered by diffcore"):
        load_pretrained(tmp_path / "m")
    header = {"model": "diffcore_tests.TinyNet", "package": __name__, "config": {"depth": 3}}
    (tmp_path / "m" / "config.json").write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match=r"cannot rebuild diffcore_tests\.TinyNet"):
        load_pretrained(tmp_path / "m")
