"""diffcore: the shared core of diffnets.

Modules (import them directly; this package imports nothing heavy so CLIs start fast):

* :mod:`diffcore.config` — frozen dataclass configs ⇄ JSON, presets, ``key=value`` overrides
* :mod:`diffcore.data` — data root, offline layouts, graph and image loaders (one module per modality), image folders
* :mod:`diffcore.device` — the one device resolver (``check_device``, ``resolve_device``)
* :mod:`diffcore.train` — :class:`~diffcore.train.Trainer` on HF Accelerate (resume, AMP, accumulation, DDP)
* :mod:`diffcore.checkpoint` — ``model.safetensors`` + ``config.json`` export and strict loading
* :mod:`diffcore.runs` — run directories (``config.json``, ``meta.json``, ``metrics.jsonl``, ``results.json``)
* :mod:`diffcore.cli` — the shared click group and options
* :mod:`diffcore.io` — atomic writes; :mod:`diffcore.errors` — user-facing errors; :mod:`diffcore.lazy` — lazy
  package exports; :mod:`diffcore.testing`
"""

__version__ = "0.1.0"

import warnings as _warnings

# torch_geometric 2.8 compiles helpers with torch.jit.script at import, which torch ≥ 2.10 flags as deprecated:
# library noise that every user of a PyG-based command would otherwise see first.
_warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
