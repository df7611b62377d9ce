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


# diffclassify: a tiny exported checkpoint, a features file and an image folder (no training needed).
DC = "diffclassify.cli:main"
_DC_PROCESS = {"type": "discrete", "num_steps": 1000, "beta_start": 1e-4, "beta_end": 0.02,
               "forward_variance": "standard"}


def _dc_checkpoint(name: str, kind: str = "ddpm", num_classes: int | None = None) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        from diffclassify.models import MnistConvVAE, MyUNet
        from diffcore.checkpoint import export_model

        info = {"kind": kind, "dataset": "digits", "image": {"channels": 1, "size": 8},
                "classes": [str(i) for i in range(10)]}
        if kind == "ddpm":
            model, registered = MyUNet(image_size=8, widths=(4, 8, 16), num_classes=num_classes), "diffclassify.myunet"
            info["process"] = _DC_PROCESS
        else:
            model, registered = MnistConvVAE(image_size=8, latent_dim=2), "diffclassify.mnist_vae"
        export_model(model, tmp / name / "model", name=registered, config=model.config, package="diffclassify",
                     extra={"diffclassify": info})

    return write


def _dc_features(tmp: Path) -> None:
    """features.safetensors of digits pixels: 5 training images per class, 3 test images per class."""
    import torch
    from diffclassify.features import FeatureSet

    train, test = torch.arange(10).repeat(5), torch.arange(10).repeat(3)
    FeatureSet(torch.rand(50, 64), train, torch.arange(50), torch.rand(30, 64), test, torch.arange(30),
               {"source": "pixels", "dataset": "digits", "num_classes": 10, "train_per_class": 5}
               ).save(tmp / "features.safetensors")


def _dc_colour_folder(tmp: Path) -> None:
    import torch
    from torchvision.io import write_png

    for split in ("train", "test"):
        for label in ("a", "b"):
            (tmp / "colour" / split / label).mkdir(parents=True)
            write_png(torch.zeros(3, 32, 32, dtype=torch.uint8), str(tmp / "colour" / split / label / "0.png"))



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
    Case("dc-unknown-block", DC, ("extract", "--model", "{tmp}/ddpm", "--blocks", "b_mid,b9"),
         "unknown block 'b9' for --source ddpm on MyUNet; valid blocks: b1, b2, b3, b_mid, b4, b5, b_out",
         setup=_dc_checkpoint("ddpm")),
    Case("dc-features-of-another-dataset", DC, ("fit", "--features", "{tmp}/features.safetensors", "--dataset",
                                                "cifar10-subset"),
         "holds features of dataset 'digits', not 'cifar10-subset'", setup=_dc_features),
    Case("dc-features-of-another-source", DC, ("fit", "--features", "{tmp}/features.safetensors", "--source",
                                               "ddpm"), "holds 'pixels' features, not 'ddpm'", setup=_dc_features),
    Case("dc-per-class-larger-than-a-class", DC, ("fit", "--features", "{tmp}/features.safetensors", "--per-class",
                                                  "2,6"),
         "--per-class 6 is larger than class 0, which has 5 training images", setup=_dc_features),
    Case("dc-label-conditioned-checkpoint", DC, ("extract", "--model", "{tmp}/cond"),
         "is label-conditioned (trained with --label-conditioning)", setup=_dc_checkpoint("cond", num_classes=10)),
    Case("dc-label-conditioning-on-an-unconditional-model", DC, ("extract", "--model", "{tmp}/ddpm",
                                                                 "--label-conditioning"),
         "needs a label-conditioned checkpoint", setup=_dc_checkpoint("ddpm")),
    Case("dc-ddpm-source-on-a-vae", DC, ("extract", "--model", "{tmp}/vae", "--source", "ddpm"),
         "--source ddpm needs a DDPM checkpoint", setup=_dc_checkpoint("vae", kind="vae")),
    Case("dc-timestep-out-of-range", DC, ("extract", "--model", "{tmp}/ddpm", "--timestep", "50,1000"),
         "timesteps must lie in 0…999, got 1000", setup=_dc_checkpoint("ddpm")),
    Case("dc-checkpoint-for-other-images", DC, ("extract", "--model", "{tmp}/ddpm", "--dataset", "{tmp}/colour"),
         "was trained on 1-channel 8×8 images (digits)",
         setup=_setups(_dc_checkpoint("ddpm"), _dc_colour_folder)),
    Case("dc-extract-without-model", DC, ("extract", "--source", "ddpm"), "--source ddpm needs --model"),
    Case("dc-checkpoint-missing", DC, ("extract", "--model", "{tmp}/nowhere"), "neither a run directory"),
    Case("dc-sample-z-on-encoder", DC, ("extract", "--model", "{tmp}/vae", "--source", "vae-encoder",
                                        "--vae-sample-z"), "changes only decoder features",
         setup=_dc_checkpoint("vae", kind="vae")),
    Case("dc-test-per-class-too-large", DC, ("extract", "--model", "{tmp}/ddpm", "--test-per-class", "100"),
         "--test-per-class 100 is larger than class", setup=_dc_checkpoint("ddpm")),
    Case("dc-features-missing", DC, ("fit", "--features", "{tmp}/none.safetensors"), "does not exist"),
    Case("dc-features-not-safetensors", DC, ("fit", "--features", "{tmp}/junk.safetensors"),
         "is not a readable safetensors file", setup=_file("junk.safetensors", "a text file")),
    Case("dc-fit-zero-per-class", DC, ("fit", "--features", "{tmp}/features.safetensors", "--per-class", "0"),
         "--per-class needs positive sizes", setup=_dc_features),
    Case("dc-fit-on-a-missing-gpu", DC, ("fit", "--features", "{tmp}/features.safetensors", "--device", "cuda:3"),
         "cuda:3", setup=_dc_features),
    Case("dc-sweep-ddpm-without-checkpoint", DC, ("sweep", "--preset", "digits", "--vae", "{tmp}/vae"),
         "--sources includes ddpm: pass --ddpm RUN_DIR"),
    Case("dc-sweep-unknown-source", DC, ("sweep", "--preset", "digits", "--sources", "pixels,vq-vae"),
         "unknown source vq-vae"),
    Case("dc-sweep-unknown-head", DC, ("sweep", "--preset", "digits", "--sources", "pixels", "--t-list", "",
                                       "--heads", "linear,svm"), "unknown head svm"),
    Case("dc-sweep-features-of-another-dataset", DC, ("sweep", "--dataset", "cifar10-subset", "--sources", "",
                                                      "--features", "{tmp}/features.safetensors", "--t-list", ""),
         "not 'cifar10-subset'", setup=_dc_features),
    Case("dc-unknown-dataset", DC, ("train-ddpm", "--dataset", "imagenet-mini"), "is neither one of"),
    Case("dc-zero-epochs", DC, ("train-ddpm", "--dataset", "digits", "--epochs", "0"), "epochs must be positive"),
    Case("dc-two-widths", DC, ("train-ddpm", "--dataset", "digits", "--widths", "4,8"),
         "model.widths must be three positive widths"),
    Case("dc-legacy-noise-on-vdiff", DC, ("train-ddpm", "--dataset", "{tmp}/colour", "--legacy-noise"),
         "--legacy-noise applies to the discrete DDPM", setup=_dc_colour_folder),
    Case("dc-fp16-without-a-gpu", DC, ("train-ddpm", "--dataset", "digits", "--mixed-precision", "fp16"),
         "mixed_precision=fp16 needs a CUDA GPU"),
    Case("dc-vae-beta-on-mnist-vae", DC, ("train-vae", "--dataset", "digits", "--beta", "4"),
         "beta applies to the CIFAR VAE"),
    Case("dc-sample-nothing", DC, ("sample", "--model", "{tmp}/nowhere"), "neither a run directory"),
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
