"""Where data lives: the data root, the cache, looking files up, downloading them, and saying what is missing.

Data root: ``--data-root`` → ``$DIFFNETS_DATA`` → ``~/.cache/diffnets``. A root is read-only to us: processed
files (PyG ``processed/``, feature caches) go to :func:`cache_dir` (``$DIFFNETS_CACHE`` →
``~/.cache/diffnets/processed``). The one thing written into a root is a download, into the library's own
standard subfolder. Every loader (here and in the paper packages) reports a missing file with
:func:`not_found`: one line naming the files expected, where, and ``--data-root``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from diffcore.errors import DataError

DEFAULT_ROOT = Path("~/.cache/diffnets")


def data_root(root: str | Path | None = None) -> Path:
    """``root`` if given, else ``$DIFFNETS_DATA``, else ``~/.cache/diffnets`` (user-expanded)."""
    chosen = root or os.environ.get("DIFFNETS_DATA") or DEFAULT_ROOT
    return Path(chosen).expanduser()


def cache_dir(*parts: str) -> Path:
    """Writable folder for processed data: ``$DIFFNETS_CACHE`` or ``~/.cache/diffnets/processed``."""
    base = Path(os.environ.get("DIFFNETS_CACHE") or DEFAULT_ROOT / "processed").expanduser()
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def not_found(what: str, root: Path, candidates: Sequence[Path], hint: str = "") -> DataError:
    """The one-line error for data absent from ``root``: what, the places looked in, and ``--data-root``."""
    places = " or ".join(str(c) for c in candidates)
    return DataError(
        f"{what} not found under data root {root}: expected {places}. "
        f"Pass --data-root DIR (or set $DIFFNETS_DATA) to a folder that has them{hint}."
    )


def first_existing(candidates: Sequence[Path], names: Sequence[str]) -> Path | None:
    """The first folder of ``candidates`` that holds every file of ``names``, else ``None``."""
    for folder in candidates:
        if all((folder / n).exists() for n in names):
            return folder
    return None


def require_extra(module: str, extra: str) -> None:
    """Import ``module`` or raise a :class:`DataError` naming the ``diffcore[extra]`` that provides it."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise DataError(f"this dataset needs {module}, which is not installed: pip install 'diffcore[{extra}]'") \
            from None


def download_file(url: str, target: Path, timeout: float = 30.0) -> None:
    """Download ``url`` to ``target`` atomically (a partial file never takes the final name)."""
    import urllib.request

    from diffcore.io import atomic_path

    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp, urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
        shutil.copyfileobj(response, out)
