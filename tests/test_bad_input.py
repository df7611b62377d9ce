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


def _arrays(name: str, **arrays) -> Callable[[Path], None]:
    """A setup writing arrays to ``tmp/name``: ``np.savez`` for ``.npz``, ``torch.save`` of tensors for ``.pt``.
    Values are callables of numpy (built lazily, at setup)."""

    def write(tmp: Path) -> None:
        import numpy as np

        data = {key: make(np) for key, make in arrays.items()}
        if name.endswith(".pt"):
            import torch

            torch.save({k: torch.from_numpy(v) for k, v in data.items()}, tmp / name)
        else:
            np.savez(tmp / name, **data)

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
DFM = "difformer.cli:main"

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
    Case("difformer-missing-dataset", DFM, ("node", "--dataset", "pokec", "--data-root", "{tmp}/empty",
                                            "--output-dir", "{out}"), "pokec.mat not found under data root"),
    Case("difformer-missing-dataset-names-data-root", DFM, ("node", "--dataset", "film", "--data-root", "{tmp}",
                                                            "--output-dir", "{out}"), "Pass --data-root DIR"),
    Case("difformer-missing-ogb-files", DFM, ("node", "--dataset", "ogbn-proteins", "--data-root", "{tmp}",
                                              "--output-dir", "{out}"), "expected raw/edge.csv.gz"),
    Case("difformer-unknown-dataset", DFM, ("node", "--dataset", "coraa", "--output-dir", "{out}"),
         "unknown dataset 'coraa'"),
    Case("difformer-file-missing-key", DFM, ("node", "--dataset", "{tmp}/g.npz", "--output-dir", "{out}"),
         "lacks edge_index", setup=_arrays("g.npz", x=lambda np: np.ones((5, 2)), y=lambda np: np.arange(5))),
    Case("difformer-file-wrong-shape", DFM, ("node", "--dataset", "{tmp}/g.npz", "--output-dir", "{out}"),
         "y must be an integer [N] array with N = 5",
         setup=_arrays("g.npz", x=lambda np: np.ones((5, 2)), y=lambda np: np.arange(4),
                    edge_index=lambda np: np.array([[0], [1]]))),
    Case("difformer-edge-index-out-of-range", DFM, ("node", "--dataset", "{tmp}/g.npz", "--output-dir", "{out}"),
         "node ids in [0, 5] but x has 5 rows",
         setup=_arrays("g.npz", x=lambda np: np.ones((5, 2)), y=lambda np: np.arange(5) % 2,
                    edge_index=lambda np: np.array([[0, 1], [1, 5]]))),
    Case("difformer-features-file-wrong-keys", DFM, ("instances", "--dataset", "{tmp}/f.npz", "--output-dir",
                                                     "{out}"), "lacks y",
         setup=_arrays("f.npz", x=lambda np: np.ones((5, 2)), labels=lambda np: np.arange(5))),
    Case("difformer-unknown-kernel", DFM, ("node", "--kernel", "softmax", "--output-dir", "{out}"),
         "Invalid value for '--kernel'", exit_code=2),
    Case("difformer-unknown-kernel-set", DFM, ("node", "--set", "model.kernel=softmax", "--output-dir", "{out}"),
         "model.kernel='softmax' is not one of"),
    Case("difformer-sigmoid-too-big", DFM, ("node", "--dataset", "{tmp}/big.npz", "--kernel", "sigmoid",
                                            "--block-size", "200000", "--output-dir", "{out}"),
         "more than the", setup=_arrays("big.npz", x=lambda np: np.ones((200_000, 1), np.float32),
                                     y=lambda np: np.arange(200_000) % 2, edge_index=lambda np: np.array([[0], [1]]))),
    Case("difformer-block-size-zero", DFM, ("node", "--kernel", "sigmoid", "--block-size", "0", "--output-dir",
                                            "{out}"), "--block-size must be positive"),
    Case("difformer-graph-weight-zero", DFM, ("node", "--set", "model.graph_weight=0", "--output-dir", "{out}"),
         "0 is ambiguous"),
    Case("difformer-no-released-setting", DFM, ("node", "--dataset", "ogbn-proteins", "--kernel", "sigmoid",
                                                "--output-dir", "{out}"), "no released setting"),
    Case("difformer-too-many-labels", DFM, ("instances", "--dataset", "digits", "--labels-per-class", "200",
                                            "--output-dir", "{out}"), "leave none for testing"),
    Case("difformer-knn-zero", DFM, ("instances", "--knn", "0", "--output-dir", "{out}"), "--knn must be positive"),
    Case("difformer-temporal-missing-file", DFM, ("temporal", "--dataset", "{tmp}/nope.json", "--output-dir",
                                                  "{out}"), "nope.json does not exist"),
    Case("difformer-temporal-wrong-layout", DFM, ("temporal", "--dataset", "{tmp}/t.json", "--output-dir", "{out}"),
         "not a PyG-Temporal dataset", setup=_file("t.json", '{"series": [[1, 2], [3, 4]]}')),
    Case("difformer-temporal-lags", DFM, ("temporal", "--dataset", "{tmp}/t.json", "--lags", "9", "--output-dir",
                                          "{out}"), "lags=9 must be in [1, 2]",
         setup=_file("t.json", '{"edges": [[0, 1]], "weights": [1.0], "X": [[1, 2], [3, 4], [5, 6]]}')),
    Case("difformer-convert-not-a-checkpoint", DFM, ("convert", "{tmp}/notes.txt", "{tmp}/model"),
         "cannot read", setup=_file("notes.txt", "not a checkpoint")),
    Case("difformer-convert-wrong-state-dict", DFM, ("convert", "{tmp}/w.pt", "{tmp}/model"),
         "not a DIFFormer state dict", setup=_arrays("w.pt", weight=lambda np: np.ones((2, 2), np.float32))),
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
