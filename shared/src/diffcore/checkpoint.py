"""Exported models: a folder with ``model.safetensors`` and ``config.json``, loaded strictly.

``config.json`` = ``{"model": registry name, "package": import name, "module": defining module,
"version": package version, "config": constructor kwargs}``. :func:`load_pretrained` imports the
defining module (which registers the model; only modules of a diffnets package are imported, so a shared
folder cannot make us run other code), rebuilds the class from ``config`` and loads the weights with every
key and shape checked. Training state for ``--resume`` is separate (``accelerator.save_state``, see
:mod:`diffcore.train`). :func:`read_legacy_state_dict` reads the original projects' pickled ``.pth``/``.pt``
files, weights only.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_model

from diffcore.errors import CheckpointError
from diffcore.io import atomic_dir

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
#: Import names whose modules :func:`load_pretrained` may import to rebuild a model.
PACKAGES = ("diffcore", "diff_resnet", "difformer", "dianet", "pdiff", "diffclassify")

_REGISTRY: dict[str, Callable[..., torch.nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., torch.nn.Module]], Callable[..., torch.nn.Module]]:
    """Class decorator: make ``name`` loadable by :func:`load_pretrained` (``name`` must be unique)."""

    def wrap(builder: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
        if _REGISTRY.get(name, builder) is not builder:
            raise ValueError(f"model name {name!r} is already registered by {_REGISTRY[name]!r}")
        _REGISTRY[name] = builder
        return builder

    return wrap


def registered_models() -> list[str]:
    return sorted(_REGISTRY)


def export_model(
    model: torch.nn.Module, directory: str | Path, *, name: str, config: Mapping[str, Any], package: str,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``directory/model.safetensors`` and ``directory/config.json`` as one atomic unit.

    Both files are written into a temporary folder that then replaces ``directory``, so a reader sees the
    old pair or the new pair, never new weights with an old config. ``config`` must be the JSON-able
    constructor kwargs that rebuild ``model`` via the registry ``name``. Shared (tied) tensors are stored
    once, as safetensors requires.
    """
    directory = Path(directory)
    dists = metadata.packages_distributions().get(package, [])
    version = metadata.version(dists[0]) if dists else None
    header = {"model": name, "package": package, "module": type(model).__module__, "version": version,
              "config": dict(config), **(extra or {})}
    text = json.dumps(header, indent=2) + "\n"  # fails before anything is written if not JSON-able
    with atomic_dir(directory) as tmp:
        save_model(model, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "model": name})
        (tmp / CONFIG_NAME).write_text(text)
    return directory


def read_checkpoint_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_NAME
    if not Path(directory).is_dir():
        raise CheckpointError(f"checkpoint folder {directory} does not exist (expected {WEIGHTS_NAME} + {CONFIG_NAME})")
    try:
        header = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: not an exported model folder") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err.msg}); re-export the model") from None
    for key in ("model", "package", "config"):
        if key not in header:
            raise CheckpointError(f"{path} has no {key!r} entry; re-export the model")
    return header


def load_state_dict_strict(model: torch.nn.Module, weights: str | Path) -> torch.nn.Module:
    """Load ``weights`` (safetensors) into ``model``; any missing, unexpected or mis-shaped key is an error."""
    weights = Path(weights)
    if not weights.exists():
        raise CheckpointError(f"{weights} is missing")
    expected = model.state_dict()
    try:
        with safe_open(str(weights), framework="pt") as f:
            stored = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, RuntimeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{weights} is truncated or not a safetensors file ({first}); re-export it") from None
    # Tied parameters are stored once: a missing key is fine when it aliases a stored one.
    aliases = _aliases(model)
    missing = [k for k in expected if k not in stored and not any(a in stored for a in aliases.get(k, ()))]
    unexpected = [k for k in stored if k not in expected]
    shapes = [
        f"{k} {tuple(stored[k].shape)} vs {tuple(expected[k].shape)}"
        for k in stored if k in expected and stored[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_short(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch {_short(shapes)} (stored vs model)")
    if problems:
        raise CheckpointError(
            f"{weights} does not match {type(model).__name__}: {'; '.join(problems)}; "
            "check the architecture options or re-export"
        )
    for key, aliased in aliases.items():
        if key not in stored:
            stored[key] = next(stored[a] for a in aliased if a in stored)
    model.load_state_dict(stored, strict=True)
    return model


def load_pretrained(directory: str | Path, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the exported model's class from ``config.json`` and load its weights strictly."""
    header = read_checkpoint_config(directory)
    package, module = header["package"], header.get("module", header["package"])
    if header["model"] not in _REGISTRY:  # a model registered by code already imported needs no import
        if package not in PACKAGES or (module != package and not module.startswith(f"{package}.")):
            raise CheckpointError(
                f"{directory}/{CONFIG_NAME} names module {module!r} of package {package!r}; only modules of the "
                f"diffnets packages ({', '.join(PACKAGES)}) are imported to rebuild a model — import the module "
                "that registers it yourself first"
            )
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise CheckpointError(
                f"{directory} was exported by package {package!r}, which cannot be imported ({err}); install it"
            ) from None
    if header["model"] not in _REGISTRY:
        raise CheckpointError(
            f"{directory}: model {header['model']!r} is not registered by {header['package']}; "
            f"known models: {', '.join(registered_models())}"
        )
    try:
        model = _REGISTRY[header["model"]](**header["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{directory}/{CONFIG_NAME}: cannot rebuild {header['model']} ({err})") from None
    load_state_dict_strict(model, Path(directory) / WEIGHTS_NAME)
    return model.to(map_location)


def _aliases(model: torch.nn.Module) -> dict[str, list[str]]:
    """State-dict keys that share storage with other keys (tied weights)."""
    by_ptr: dict[tuple[int, int], list[str]] = {}
    for k, v in model.state_dict().items():
        if v.numel():
            by_ptr.setdefault((v.untyped_storage().data_ptr(), v.storage_offset()), []).append(k)
    return {k: [o for o in names if o != k] for names in by_ptr.values() if len(names) > 1 for k in names}


def _short(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{', …' if len(items) > limit else ''}] ({len(items)})"


def read_legacy_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict inside an original project's ``.pth`` / ``.pt`` / ``.pth.tar`` / ``.pkl`` file.

    Read with ``torch.load(weights_only=True)`` (no code from the file runs). Accepts a bare state dict or a
    checkpoint dict holding one under ``state_dict`` (or ``model``); the ``module.`` prefix of
    ``nn.DataParallel`` is stripped. Any file that yields no non-empty ``{name: tensor}`` mapping — missing,
    empty, truncated, not a PyTorch file, pickled code — is one :class:`CheckpointError` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist or is not a file")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling fails with many exception types; the first line says what was refused
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot read {path} as a weights-only PyTorch checkpoint ({first[:200]})") from None
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors (found {type(obj).__name__}); "
                              "is it the original's checkpoint file?")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}
