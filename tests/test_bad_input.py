"""Every bad input is a one-line error: exit 1, ``Error: <what is wrong and what to do>``, no traceback,
and nothing already on disk changes (no half-written run directory either).

One row per case. ``argv`` may hold ``{out}`` — a run directory that already holds a previous run's files —
and ``{tmp}``, the test's scratch folder (also the working directory, so a default ``runs/`` folder would
show up as a change). ``setup(tmp)`` writes input files before the snapshot is taken.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner


@dataclass(frozen=True)
class Case:
    id: str
    entry: str  # "<import>.cli:main"
    argv: tuple[str, ...]
    message: str  # a fragment of the expected error line
    setup: Callable[[Path], None] | None = None
    exit_code: int = 1  # 2 only for click's own usage errors (an invalid choice, a missing option)


def _file(name: str, content: bytes | str) -> Callable[[Path], None]:
    """A setup writing ``content`` to ``tmp/name``."""

    def write(tmp: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)

    return write


def _setups(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def run(tmp: Path) -> None:
        for step in steps:
            step(tmp)

    return run


def _locked_folder(tmp: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes through permission bits; the read-only-filesystem row covers this as root")
    (tmp / "locked").mkdir(mode=0o555)


TOY = "diff_resnet.cli:main"

# ------------------------------------------------------------------------------------------- the table
CASES: list[Case] = [
    # --- diffcore (shared options, every command; `diff-resnet toy` carries them) --------------------
    Case("used-output-dir", TOY, ("toy", "--example", "moons", "--output-dir", "{out}"), "is not empty"),
    Case("output-dir-under-a-file", TOY, ("toy", "--output-dir", "{tmp}/notes.txt/run"), "notes.txt is a file",
         setup=_file("notes.txt", "my notes")),
    Case("output-dir-read-only-filesystem", TOY, ("toy", "--output-dir", "/sys/diffnets-run"),
         "cannot create run directory /sys/diffnets-run"),
    Case("output-dir-without-write-permission", TOY, ("toy", "--output-dir", "{tmp}/locked/run"),
         "no write permission", setup=_locked_folder),
    Case("overwrite-a-folder-that-is-no-run", TOY, ("toy", "--output-dir", "{tmp}/home", "--overwrite"),
         "not a run directory", setup=_file("home/thesis.tex", "years of work")),
    Case("unknown-config-key", TOY, ("toy", "--set", "nosuch=1"), "unknown config key 'nosuch'"),
    Case("wrong-type", TOY, ("toy", "--set", "seed=abc"), "seed='abc' is not a valid int"),
    Case("resume-missing-run", "dianet.cli:main", ("train", "--arch", "dia_resnet164", "--resume", "{tmp}/nowhere"),
         "no such run directory"),
    Case("resume-and-overwrite", "dianet.cli:main", ("train", "--arch", "dia_resnet164", "--resume", "{out}",
                                                     "--overwrite"), "pass only one"),
    Case("resume-another-command", "dianet.cli:main", ("train", "--arch", "dia_resnet164", "--resume", "{out}"),
         "config.json does not belong to this command"),
    # --- diff-resnet ------------------------------------------------------------------------------
    # --- dianet -----------------------------------------------------------------------------------
    # --- difformer --------------------------------------------------------------------------------
    # --- pdiff ------------------------------------------------------------------------------------
    # --- diffclassify -----------------------------------------------------------------------------
]


# ------------------------------------------------------------------------------------------ the harness
def _previous_run(folder: Path) -> None:
    """What a finished run leaves behind; a refused command must not touch any of it."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"previous": True}) + "\n")
    (folder / "meta.json").write_text(json.dumps({"package": "earlier", "command": "earlier"}) + "\n")
    (folder / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 1.0}\n')
    (folder / "results.json").write_text(json.dumps({"test_acc": 50.0}) + "\n")
    (folder / "model").mkdir()
    (folder / "model" / "model.safetensors").write_bytes(b"previous weights")


def _snapshot(root: Path) -> dict[str, str | None]:
    """Relative path → sha256 (files) or None (folders), for everything under ``root``."""
    state: dict[str, str | None] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        state[key] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return state


def _entry(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _available(case: Case) -> bool:
    try:
        importlib.import_module(case.entry.partition(":")[0])
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_one_line_error(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not _available(case):
        pytest.skip(f"{case.entry} is not installed")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "400")  # click wraps nothing, so "one line" means one line
    _previous_run(tmp_path / "out")
    if case.setup is not None:
        case.setup(tmp_path)
    before = _snapshot(tmp_path)
    argv = [a.format(out=tmp_path / "out", tmp=tmp_path) for a in case.argv]
    result = CliRunner().invoke(_entry(case.entry), argv, catch_exceptions=True, env={"COLUMNS": "400"})
    output = result.output
    assert isinstance(result.exception, SystemExit), f"crashed instead of a clean error: {result.exception!r}\n{output}"
    assert result.exit_code == case.exit_code, output
    assert "Traceback" not in output, output
    error_lines = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, f"expected one 'Error:' line:\n{output}"
    assert case.message in error_lines[0], f"{case.message!r} not in {error_lines[0]!r}"
    assert _snapshot(tmp_path) == before, "files on disk changed"


def test_cases_have_unique_ids() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert all(os.sep not in i for i in ids)
