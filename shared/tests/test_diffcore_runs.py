import json
from dataclasses import dataclass

from diffcore.io import atomic_write_text
from diffcore.runs import RunDir, default_run_dir, format_table


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
