from dataclasses import dataclass, field
from typing import Literal

import pytest
from diffcore.config import Presets, apply_overrides, from_dict, load_json, save_json, to_dict
from diffcore.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    lr: float = 0.1
    schedule: tuple[int, ...] = (60, 120)


@dataclass(frozen=True)
class Outer:
    name: str = "a"
    layers: int = 2
    dropout: float | None = None
    flag: bool = False
    mode: Literal["x", "y"] = "x"
    optim: Inner = field(default_factory=Inner)


def test_json_round_trip(tmp_path):
    config = Outer(name="b", layers=3, dropout=0.5, flag=True, mode="y", optim=Inner(0.01, (1, 2)))
    save_json(config, tmp_path / "c.json")
    assert load_json(Outer, tmp_path / "c.json") == config
    assert to_dict(config)["optim"]["schedule"] == [1, 2]


def test_overrides_are_type_checked_and_nested():
    config = apply_overrides(Outer(), ["layers=5", "dropout=0.25", "flag=true", "mode=y",
                                       "optim.lr=1e-3", "optim.schedule=30,60,90", "dropout=none"])
    assert config == Outer(layers=5, dropout=None, flag=True, mode="y", optim=Inner(1e-3, (30, 60, 90)))


@pytest.mark.parametrize(("override", "message"), [
    ("layers=2.5", "layers='2.5' is not a valid int"),
    ("flag=maybe", "flag='maybe' is not a valid bool"),
    ("mode=z", "mode='z' is not one of 'x', 'y'"),
    ("optim.schedule=1,b", "optim.schedule[1]='b' is not a valid int"),
    ("layers", "must look like key=value"),
    ("name.inner=1", "name is not a nested config"),
])
def test_bad_values_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        apply_overrides(Outer(), [override])


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        apply_overrides(Outer(), ["layer=3"])
    assert "unknown config key 'layer'" in str(err.value)
    assert "valid keys: name, layers, dropout, flag, mode, optim" in str(err.value)
    with pytest.raises(ConfigError, match="unknown config key wat for Outer"):
        from_dict(Outer, {"wat": 1})


def test_bad_json_file_is_one_line_error(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_json(Outer, tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="does not exist"):
        load_json(Outer, tmp_path / "missing.json")


def test_presets():
    presets = Presets({"small": (Outer(layers=1), "paper table 1")})
    assert presets["small"].layers == 1 and presets.source("small") == "paper table 1"
    assert list(presets) == ["small"]
    with pytest.raises(ConfigError, match="unknown preset 'big'; available presets: small"):
        presets["big"]
