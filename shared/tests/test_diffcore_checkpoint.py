import json

import pytest
import torch
from diffcore.checkpoint import (
    export_model,
    load_pretrained,
    load_state_dict_strict,
    read_legacy_state_dict,
    register_model,
)
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


def test_load_pretrained_imports_only_diffnets_modules(tmp_path):
    model = TinyNet(3)
    export_model(model, tmp_path / "m", name="diffcore_tests.TinyNet", config=model.config, package=__name__)
    header = json.loads((tmp_path / "m" / "config.json").read_text())
    for package, module in [("os", "os"), ("dianet", "subprocess"), ("evil", "evil.models")]:
        (tmp_path / "m" / "config.json").write_text(json.dumps({**header, "model": "unregistered.Net",
                                                                  "package": package, "module": module}))
        with pytest.raises(CheckpointError, match="only modules of the diffnets packages"):
            load_pretrained(tmp_path / "m")


def test_export_replaces_weights_and_config_together(tmp_path):
    export_model(TinyNet(3), tmp_path / "m", name="diffcore_tests.TinyNet", config={"width": 3}, package=__name__)
    with pytest.raises(TypeError):  # a config that is not JSON-able fails before anything is written
        export_model(TinyNet(4), tmp_path / "m", name="diffcore_tests.TinyNet", config={"width": object()},
                     package=__name__)
    assert load_pretrained(tmp_path / "m").config == {"width": 3, "tie": False}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_legacy_reader_unwraps_and_strips_and_refuses_junk(tmp_path):
    state = {"module.fc.weight": torch.ones(2, 2), "module.fc.bias": torch.zeros(2)}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pth")
    assert sorted(read_legacy_state_dict(tmp_path / "ckpt.pth")) == ["fc.bias", "fc.weight"]
    torch.save(state, tmp_path / "bare.pt")
    assert torch.equal(read_legacy_state_dict(tmp_path / "bare.pt")["fc.weight"], torch.ones(2, 2))
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    torch.save({}, tmp_path / "nothing.pth")
    torch.save({"state_dict": state}, tmp_path / "cut.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "cut.pth").read_bytes()[:200])
    for name in ("empty.pth", "junk.pth", "nothing.pth", "cut.pth", "missing.pth"):
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
            read_legacy_state_dict(tmp_path / name)
