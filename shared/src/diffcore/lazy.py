"""Lazy public names for a package ``__init__`` (PEP 562).

A paper package lists its public names and the modules that define them; each is imported on first
attribute access, so ``import <package>`` (which every ``<package> --help`` runs) never pays for torch::

    __getattr__, __dir__, __all__ = lazy_exports(__name__, {"Diffusion": "diff_resnet.diffusion"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]],
                                                                    list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package`` whose name ``n`` lives in module ``exports[n]``."""
    names = sorted(exports)

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__, names
