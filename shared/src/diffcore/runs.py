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
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from diffcore.config import config_differences, to_dict
from diffcore.errors import ConfigError
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


RunMode = Literal["new", "overwrite", "resume"]


def _first_existing_parent(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
    return Path("/")


def check_run_dir(path: str | Path, mode: RunMode = "new", *, package: str | None = None,
                  command: str | None = None, config: Mapping[str, Any] | None = None) -> Path:
    """Check, without writing anything, that ``path`` can hold this run; return it.

    * ``new``: ``path`` must be absent or an empty folder (a finished run is never overwritten silently);
    * ``overwrite``: ``path`` may hold an earlier run, which will be replaced (a non-empty folder that is not
      a run directory — no ``meta.json`` — is refused, so a typo cannot delete a home folder);
    * ``resume``: ``path`` must be a run of the same ``package`` and ``command`` whose ``config.json`` equals
      ``config`` (the differing keys are named).
    Also refused: a path under a file, a folder that cannot be created or written.
    """
    path = Path(path)
    anchor = _first_existing_parent(path)
    if not anchor.is_dir():
        raise ConfigError(f"cannot create run directory {path}: {anchor} is a file; choose another --output-dir")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot create run directory {path}: no write permission in {anchor}; "
                          "choose another --output-dir")
    entries = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if mode == "resume":
        _check_resumable(path, package, command, config)
    elif entries and mode == "new":
        shown = ", ".join(entries[:4]) + (", …" if len(entries) > 4 else "")
        raise ConfigError(f"run directory {path} is not empty ({shown}); pass --resume {path} to continue it, "
                          "--overwrite to replace it, or choose another --output-dir")
    elif entries and not (path / "meta.json").is_file():
        raise ConfigError(f"--overwrite refuses {path}: it is not a run directory (no meta.json); "
                          "choose an empty or new folder")
    return path


def _check_resumable(path: Path, package: str | None, command: str | None, config: Mapping[str, Any] | None) -> None:
    meta, saved = read_json_file(path / "meta.json", "run"), read_json_file(path / "config.json", "run")
    if (package, command) != (None, None) and (meta.get("package"), meta.get("command")) != (package, command):
        raise ConfigError(f"cannot resume {path}: it is a `{meta.get('package')} {meta.get('command')}` run, "
                          f"not `{package} {command}`")
    if config is not None:
        differences = config_differences(saved, json.loads(json.dumps(_jsonable(dict(config)))))
        if differences:
            raise ConfigError(f"cannot resume {path} with a different configuration ({'; '.join(differences)}); "
                              "drop those options, or start a new run")


def read_json_file(path: str | Path, what: str = "") -> dict[str, Any]:
    """A JSON object from ``path``; a missing or corrupt file is a :class:`ConfigError` naming it."""
    path = Path(path)
    label = f"{what} file" if what else "file"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: not a finished {what or 'run'} directory?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{label} {path} is corrupt (not valid JSON: {err}); restore or remove it") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{label} {path} must hold a JSON object, found {type(data).__name__}")
    return data


class RunDir:
    """One run's folder. Open with :meth:`create`; all writes are atomic and main-process only.

    ``resumed`` is true when the run continues an earlier one (``--resume``): its training state is there.
    """

    def __init__(self, path: str | Path, is_main: bool = True, resumed: bool = False):
        self.path = Path(path)
        self.is_main = is_main
        self.resumed = resumed

    @classmethod
    def create(
        cls, path: str | Path, config: Any, *, package: str, command: str, seed: int | None = None,
        world_size: int = 1, is_main: bool = True, extra_meta: Mapping[str, Any] | None = None,
        mode: RunMode = "new",
    ) -> RunDir:
        """Check the folder (:func:`check_run_dir`), then write ``config.json`` and ``meta.json``.

        ``overwrite`` replaces an earlier run's folder; ``resume`` keeps it and records the resumption in
        ``meta.json`` (``resumed``: argv, time and world size of each continuation).
        """
        config_dict = to_dict(config) if not isinstance(config, Mapping) else dict(config)
        run = cls(path, is_main, resumed=mode == "resume")
        if not is_main:
            return run
        check_run_dir(run.path, mode, package=package, command=command, config=config_dict)
        now = _dt.datetime.now().isoformat(timespec="seconds")
        if mode == "resume":
            meta = read_json_file(run.path / "meta.json", "run")
            meta["resumed"] = [*meta.get("resumed", []), {"argv": sys.argv, "started": now, "world_size": world_size}]
            run.write_json("meta.json", meta)
            return run
        try:
            if mode == "overwrite" and run.path.exists():
                shutil.rmtree(run.path)
            run.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"cannot create run directory {run.path}: {err.strerror}; "
                              "choose another --output-dir") from None
        run.write_json("config.json", config_dict)
        run.write_json("meta.json", {
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
            "started": now,
            "cwd": os.getcwd(),
            **(extra_meta or {}),
        })
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

    def truncate_metrics(self, keep: Callable[[dict[str, Any]], bool]) -> None:
        """Keep only the logged lines for which ``keep(line)`` holds (a resumed run drops lines logged after
        its last saved state, so no epoch appears twice)."""
        if self.is_main and (self.path / "metrics.jsonl").exists():
            lines = [json.dumps(m) + "\n" for m in self.read_metrics() if keep(m)]
            atomic_write_text(self.path / "metrics.jsonl", "".join(lines))

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
