"""Lazy package exports (PEP 562)."""

import sys

import pytest
from diffcore.lazy import lazy_exports


def test_names_load_on_first_use_and_unknown_names_fail():
    sys.modules.pop("colorsys", None)
    getattr_, dir_, all_ = lazy_exports("fakepkg", {"rgb_to_hsv": "colorsys", "dumps": "json"})
    assert all_ == ["dumps", "rgb_to_hsv"] and dir_() == all_
    assert "colorsys" not in sys.modules  # nothing imported until a name is used
    assert getattr_("rgb_to_hsv")(1.0, 0.0, 0.0) == (0.0, 1.0, 1.0)
    assert "colorsys" in sys.modules
    with pytest.raises(AttributeError, match="module 'fakepkg' has no attribute 'nope'"):
        getattr_("nope")
