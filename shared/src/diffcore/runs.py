"""Run directories: ``config.json``, ``meta.json``, ``metrics.jsonl`` and ``results.json``.

Every command that trains or evaluates writes one. Only the main process writes (``is_main=False``
turns every write into a no-op), so the same code runs under ``accelerate launch``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from diffcore.config import to_dict
from diffcore.io import atomic_write_text

TRACKED_PACKAGES = (
    "diffcore", "diff-resnet", "difformer", "dianet", "pdiff", "diffclassify",
    "torch", "torchvision", "torch-geometric", "accelerate", "safetensors", "timm", "numpy",
)


def default_run_dir(package: str, name: str, root: str | Path = "runs") -> Path:
    """``runs/<package>/<timestamp>_<name>``; a numeric suffix keeps two runs in one second apart."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
    base = Path(root) / package / f"{stamp}_{safe}"
    path, k = base, 1
    while path.exists():
        path, k = base.with_name(f"{base.name}-{k}"), k + 1
    return path


def git_sha(cwd: str | Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _jsonable(value: Any) -> Any:
    """Tensors, numpy scalars and non-finite floats → plain JSON values (NaN/inf → null)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


class RunDir:
    """One run's folder. Create with :meth:`create`; all writes are atomic and main-process only."""

    def __init__(self, path: str | Path, is_main: bool = True):
        self.path = Path(path)
        self.is_main = is_main

    @classmethod
    def create(
        cls, path: str | Path, config: Any, *, package: str, command: str, seed: int | None = None,
        world_size: int = 1, is_main: bool = True, extra_meta: Mapping[str, Any] | None = None,
    ) -> RunDir:
        run = cls(path, is_main)
        if is_main:
            run.path.mkdir(parents=True, exist_ok=True)
            config_dict = to_dict(config) if not isinstance(config, Mapping) else dict(config)
            run.write_json("config.json", config_dict)
            meta = {
                "package": package,
                "command": command,
                "argv": sys.argv,
                "seed": seed,
                "world_size": world_size,
                "git_sha": git_sha(),
                "versions": package_versions(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "hostname": platform.node(),
                "started": _dt.datetime.now().isoformat(timespec="seconds"),
                "cwd": os.getcwd(),
                **(extra_meta or {}),
            }
            run.write_json("meta.json", meta)
        return run

    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, data: Any) -> None:
        if self.is_main:
            atomic_write_text(self.path / name, json.dumps(_jsonable(data), indent=2) + "\n")

    def log_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl`` (flushed, so a crash keeps what was logged)."""
        if not self.is_main:
            return
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(_jsonable(dict(metrics))) + "\n")
            f.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def write_results(self, results: Mapping[str, Any]) -> None:
        self.write_json("results.json", results)


def format_table(rows: list[Mapping[str, Any]], floatfmt: str = ".4g") -> str:
    """Render a list of dicts as a plain aligned text table (columns in first-seen key order)."""
    if not rows:
        return "(no rows)"
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([line, sep, *body])
