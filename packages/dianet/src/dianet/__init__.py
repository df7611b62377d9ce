"""DIANet: Dense-and-Implicit Attention Network (Huang, Liang, Liang, Yang; AAAI 2020).

Shared attention across the blocks of a stage with an LSTM-style cell: one DIA-LSTM unit per stage reads
every block's pooled residual branch and gates it, carrying its state from block to block.

    import timm, dianet
    model = timm.create_model("dia_resnet164", num_classes=100)

    from dianet import DIAStage, DIALSTMCell     # the layer, on your own blocks

How ``import dianet`` registers the models with timm and still keeps ``dianet --help`` free of torch:
importing ``dianet.cli`` runs this file first, so it cannot import torch or timm. Registration is only
needed once timm exists in the process, so this file

* imports :mod:`dianet.models` (which registers) right away if timm is already imported, and otherwise
* puts a finder on ``sys.meta_path`` that lets Python import timm as usual and, as soon as timm's
  package module has finished executing, imports :mod:`dianet.models`.

Either way ``timm.create_model("dia_*")`` works after ``import dianet`` whatever the import order, and a
process that never imports timm (the CLI's ``--help``) never pays for torch. Other names load on first
use (PEP 562).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

from diffcore.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "DIALSTMCell": "dianet.layers",
    "DIAStage": "dianet.layers",
    "SEGate": "dianet.layers",
    "BottleneckMLP": "dianet.layers",
    "DIAResNet": "dianet.models",
    "arch_kwargs": "dianet.models",
    "model_names": "dianet.models",
    "convert_official_state_dict": "dianet.convert",
})


class _RegisterWhenTimmLoads(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it wraps timm's own loader so that loading timm also registers our models."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)  # one shot; find the real spec with the remaining finders
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        exec_timm = spec.loader.exec_module

        def exec_and_register(module):
            exec_timm(module)
            importlib.import_module("dianet.models")

        spec.loader.exec_module = exec_and_register
        return spec


if "timm" in sys.modules:
    importlib.import_module("dianet.models")
elif not any(type(f).__name__ == "_RegisterWhenTimmLoads" for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWhenTimmLoads())
