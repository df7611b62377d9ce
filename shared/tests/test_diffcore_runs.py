import json
import os
import stat
from dataclasses import dataclass

import pytest
from diffcore.errors import ConfigError
from diffcore.io import atomic_dir, atomic_write_text
from diffcore.runs import RunDir, check_run_dir, default_run_dir, format_table


@dataclass(frozen=True)
class Cfg:
    lr: float = 0.1


def test_run_directory_files(tmp_path):
    run = RunDir.create(tmp_path / "r", Cfg(), package="diffcore", command="test", seed=3, world_size=2)
    run.log_metrics({"epoch": 1, "loss": float("nan")})
    run.log_metrics({"epoch": 2, "loss": 0.5})
    run.write_results({"acc": 91.0})
    assert json.loads((run.path / "config.json").read_text()) == {"lr": 0.1}
    meta = json.loads((run.path / "meta.json").read_text())
    assert meta["seed"] == 3 and meta["world_size"] == 2 and meta["command"] == "test"
    assert "torch" in meta["versions"] and isinstance(meta["argv"], list) and "git_sha" in meta
    assert run.read_metrics() == [{"epoch": 1, "loss": None}, {"epoch": 2, "loss": 0.5}]
    assert json.loads((run.path / "results.json").read_text()) == {"acc": 91.0}


def test_non_main_process_writes_nothing(tmp_path):
    run = RunDir.create(tmp_path / "r", Cfg(), package="diffcore", command="test", is_main=False)
    run.log_metrics({"a": 1})
    run.write_results({"a": 1})
    assert not (tmp_path / "r").exists()


def test_default_run_dir_is_unique(tmp_path):
    first = default_run_dir("pkg", "graph cora", root=tmp_path)
    first.mkdir(parents=True)
    second = default_run_dir("pkg", "graph cora", root=tmp_path)
    assert first.parent == tmp_path / "pkg" and first.name.endswith("_graph-cora") and second != first


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")
    try:
        from diffcore.io import atomic_path

        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    except RuntimeError:
        pass
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_format_table():
    table = format_table([{"name": "a", "acc": 81.234567}, {"name": "bb", "acc": 1.0, "std": 0.5}])
    lines = table.splitlines()
    assert lines[0].split() == ["name", "acc", "std"] and "81.23" in lines[2] and lines[3].split()[-1] == "0.5"


# ------------------------------------------------------------------------------------- the run lifecycle


def _finished_run(tmp_path, config=None):
    run = RunDir.create(tmp_path / "r", config or Cfg(), package="diffcore", command="test")
    run.write_results({"acc": 91.0})
    return run.path


def _files(path):
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_finished_run_is_never_overwritten_silently(tmp_path):
    path = _finished_run(tmp_path)
    before = _files(path)
    with pytest.raises(ConfigError, match=r"is not empty \(config.json, meta.json, results.json\); pass --resume"):
        RunDir.create(path, Cfg(lr=0.2), package="diffcore", command="test")
    assert _files(path) == before


def test_overwrite_replaces_a_run_but_never_a_folder_that_is_not_one(tmp_path):
    path = _finished_run(tmp_path)
    RunDir.create(path, Cfg(lr=0.2), package="diffcore", command="test", mode="overwrite")
    assert json.loads((path / "config.json").read_text()) == {"lr": 0.2} and not (path / "results.json").exists()
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match="not a run directory"):
        RunDir.create(precious, Cfg(), package="diffcore", command="test", mode="overwrite")
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_resume_needs_the_same_command_and_config(tmp_path):
    path = _finished_run(tmp_path)
    with pytest.raises(ConfigError, match=r"different configuration \(lr: 0.1 → 0.2\)"):
        RunDir.create(path, Cfg(lr=0.2), package="diffcore", command="test", mode="resume")
    with pytest.raises(ConfigError, match="it is a `diffcore test` run, not `diffcore other`"):
        RunDir.create(path, Cfg(), package="diffcore", command="other", mode="resume")
    run = RunDir.create(path, Cfg(), package="diffcore", command="test", mode="resume")
    assert run.resumed and len(json.loads((path / "meta.json").read_text())["resumed"]) == 1
    (path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"config\.json is corrupt"):
        RunDir.create(path, Cfg(), package="diffcore", command="test", mode="resume")


def test_run_directory_under_a_file_or_unwritable_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        check_run_dir(tmp_path / "file" / "run")
    if os.geteuid() != 0:  # root writes through permission bits; the CLI table covers a read-only filesystem
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.raises(ConfigError, match="no write permission"):
            check_run_dir(locked / "run")


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "b.txt").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o750


def test_atomic_dir_keeps_the_old_folder_on_error(tmp_path):
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "weights").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "model") as tmp:
        (tmp / "weights").write_text("new, half written")
        raise RuntimeError("crash")
    assert (tmp_path / "model" / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_truncate_metrics_drops_lines_after_the_saved_epoch(tmp_path):
    run = RunDir.create(tmp_path / "r", Cfg(), package="diffcore", command="test")
    for epoch in (1, 2, 3):
        run.log_metrics({"epoch": epoch})
    run.truncate_metrics(lambda line: line["epoch"] <= 2)
    assert [m["epoch"] for m in run.read_metrics()] == [1, 2]
