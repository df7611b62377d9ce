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


def _needs_no_gpu(tmp: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU, so fp16 is allowed")


def _locked_folder(tmp: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes through permission bits; the read-only-filesystem row covers this as root")
    (tmp / "locked").mkdir(mode=0o555)


def _no_gpu(tmp: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible here, so device=cuda is valid")


def _features(name: str, kind: str) -> Callable[[Path], None]:
    """A few-shot feature file ``tmp/name``: 6 classes × 20 rows of 8-d features, degenerate as ``kind`` says."""

    def write(tmp: Path) -> None:
        import torch
        from diff_resnet.fewshot.data import save_features

        labels = torch.arange(6).repeat_interleave(20)
        features = torch.randn(120, 8, generator=torch.Generator().manual_seed(0)) + 3 * labels[:, None]
        if kind == "identical":  # a collapsed backbone: every image gets the same vector
            features = torch.ones(120, 8)
        elif kind == "duplicates":  # one vector four times: a zero local scale in an episode drawing them all
            features[20:24] = features[20]
        elif kind == "nan":  # written around save_features, which refuses it
            from safetensors.torch import save_file

            features[5, 3] = float("nan")
            save_file({"features": features, "labels": labels, "base_mean": torch.zeros(8)}, str(tmp / name))
            return
        save_features(tmp / name, features, labels, torch.zeros(8))

    return write


def _official_keys_as(name: str) -> Callable[[Path], None]:
    """A DataParallel file with the official ResNet-18 keys (tiny tensors), to be converted as another net."""

    def write(tmp: Path) -> None:
        import torch

        keys = (Path(__file__).parents[1] / "packages" / "diff-resnet" / "tests" / "data" /
                "official_resnet18_keys.txt").read_text().split()
        torch.save({k: torch.zeros(1) for k in keys}, tmp / name)

    return write


def _cora_root(tmp: Path) -> None:
    """``tmp/data/gnn_benchmark_npz`` → the shared data's copy (read-only there; nothing is written)."""
    from diffcore.testing import require_shared_data

    root = require_shared_data("gnn_benchmark_npz/cora.npz")
    (tmp / "data").mkdir()
    (tmp / "data" / "gnn_benchmark_npz").symlink_to(Path(root) / "gnn_benchmark_npz")

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


def _png(name: str, channels: int = 3, size: int = 32) -> Callable[[Path], None]:
    """A setup writing a black ``size``×``size`` PNG to ``tmp/name``."""

    def write(tmp: Path) -> None:
        import torch
        from torchvision.io import write_png

        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        write_png(torch.zeros(channels, size, size, dtype=torch.uint8), str(tmp / name))

    return write



TOY = "diff_resnet.cli:main"
DRN = TOY
F = "{tmp}/features.safetensors"
DIANET = "dianet.cli:main"


def _dianet_run(name: str, command: str = "train", state: bool = False, results: str | None = None,
                seed: int = 0) -> Callable[[Path], None]:
    """A `dianet` run directory as a finished or interrupted run leaves it (its config from `--dry-run`):
    ``state`` adds a training state whose weights file is truncated, ``results`` a results.json."""

    def write(tmp: Path) -> None:
        from dianet.cli import main

        folder = tmp / name
        folder.mkdir(parents=True)
        config = CliRunner().invoke(main, ["train", "--arch", "dia_resnet164", "--seed", str(seed), "--dry-run"])
        (folder / "config.json").write_text(config.output)
        (folder / "meta.json").write_text(json.dumps({"package": "dianet", "command": command}))
        if state:
            (folder / "state").mkdir()
            (folder / "state" / "trainer_state.json").write_text(json.dumps({"epoch": 3, "global_step": 1173}))
            (folder / "state" / "model.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"__meta")
        if results is not None:
            (folder / "results.json").write_text(results)

    return write


_RESULT = json.dumps({"test_acc_final": 76.0, "test_acc_best": 76.5})
_NO_GPU = "fp16 needs a CUDA GPU"


def _pdiff_collection(name: str, dataset: str = "digits", *, truncate: bool = False, foreign_host: bool = False
                      ) -> Callable[[Path], None]:
    """A small `pdiff collect` folder (MNIST MLP, S = its last Linear, K = 12), optionally damaged."""

    def make(tmp: Path) -> None:
        import torch
        from pdiff.collect import CHECKPOINTS, MANIFEST, save_collection
        from pdiff.models import build_host
        from pdiff.params import ParamSpec

        torch.manual_seed(0)
        host = build_host("mnist_mlp", 10, 1)
        spec = ParamSpec.of(host, arch="mnist_mlp", dataset=dataset, num_classes=10, in_chans=1, selector="last")
        checkpoints = spec.flatten(dict(host.named_parameters())).detach() + 0.01 * torch.randn(12, spec.dim)
        save_collection(tmp / name, host, spec, checkpoints, {"host": {"arch": "mnist_mlp", "dataset": dataset,
                                                                      "val_size": 200}, "k": 12})
        if truncate:
            path = tmp / name / CHECKPOINTS
            path.write_bytes(path.read_bytes()[:200])
        if foreign_host:  # the manifest of another host's checkpoints next to this host
            manifest = json.loads((tmp / name / MANIFEST).read_text())
            manifest["spec"]["fingerprint"] = "0" * 64
            (tmp / name / MANIFEST).write_text(json.dumps(manifest))

    return make


def _pdiff_generated(name: str, dataset: str) -> Callable[[Path], None]:
    """A `pdiff generate` folder of 4 vectors for the MLP host of :func:`_pdiff_collection`."""

    def make(tmp: Path) -> None:
        import torch
        from pdiff.models import build_host
        from pdiff.params import ParamSpec
        from pdiff.pipeline import GENERATED, GENERATED_MANIFEST
        from safetensors.torch import save_file

        torch.manual_seed(0)
        host = build_host("mnist_mlp", 10, 1)
        spec = ParamSpec.of(host, arch="mnist_mlp", dataset=dataset, num_classes=10, in_chans=1, selector="last")
        (tmp / name).mkdir()
        save_file({"params": torch.zeros(4, spec.dim)}, str(tmp / name / GENERATED))
        (tmp / name / GENERATED_MANIFEST).write_text(json.dumps({"spec": spec.to_json(), "checkpoints": None}))

    return make


PDIFF = "pdiff.cli:main"
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
    # toy: every ToyConfig field in range before any figure is drawn (sigma=0 used to segfault in LAPACK)
    Case("drn-toy-sigma-zero", DRN, ("toy", "--set", "sigma=0"), "sigma is the Gaussian length scale"),
    Case("drn-toy-sigma-underflows", DRN, ("toy", "--example", "moons", "--set", "sigma=1e-30"),
         "sigma is the Gaussian length scale"),
    Case("drn-toy-iterations-zero", DRN, ("toy", "--set", "iterations=0"), "iterations must be ≥ 1"),
    Case("drn-toy-negative-layers", DRN, ("toy", "--set", "layers=-3"), "layers (diffusion steps T) must be ≥ 0"),
    Case("drn-toy-n-top-above-points", DRN, ("toy", "--set", "n_top=5000"), "n_top must lie in [1, 1000]"),
    Case("drn-toy-n-top-zero", DRN, ("toy", "--example", "xor", "--set", "n_top=0"), "n_top must lie in [1, 400]"),
    Case("drn-toy-negative-lr", DRN, ("toy", "--set", "lr=-1"), "lr must be a finite number > 0"),
    Case("drn-toy-nan-step-size", DRN, ("toy", "--set", "step_size=nan"), "step_size must be a finite number > 0"),
    Case("drn-toy-momentum-one", DRN, ("toy", "--momentum", "1"), "momentum must lie in [0, 1)"),
    Case("drn-toy-negative-seed", DRN, ("toy", "--seed", "-1"), "seed must lie in [0, 2**32)"),
    Case("drn-toy-xor-odd-points", DRN, ("toy", "--example", "xor", "--set", "n_per_class=3"), "must be even"),
    Case("drn-toy-negative-noise", DRN, ("toy", "--set", "noise=-0.1"), "noise must be a finite number ≥ 0"),
    Case("drn-toy-too-many-points", DRN, ("toy", "--set", "n_per_class=1000000"), "dense N × N weights"),
    # graph: the whole protocol config, then the data, before the run directory
    Case("drn-graph-negative-step-size", DRN, ("graph", "--step-size", "-1"), "--step-size (γ) must be a finite"),
    Case("drn-graph-negative-lr", DRN, ("graph", "--set", "lr=-1"), "lr must be a finite number > 0"),
    Case("drn-graph-cuda-without-gpu", DRN, ("graph", "--set", "device=cuda"), "no CUDA GPU is visible",
         setup=_no_gpu),
    Case("drn-graph-unknown-device", DRN, ("graph", "--set", "device=gpu7"), "is not a torch device"),
    Case("drn-graph-dropout-one", DRN, ("graph", "--dropout", "1"), "--dropout must lie in [0, 1)"),
    Case("drn-graph-negative-layers", DRN, ("graph", "--layers", "-2"), "--layers (diffusion steps T) must be ≥ 0"),
    Case("drn-graph-zero-splits", DRN, ("graph", "--splits", "0"), "--splits must be ≥ 1"),
    Case("drn-graph-zero-max-epochs", DRN, ("graph", "--max-epochs", "0"), "--max-epochs must be ≥ 1"),
    Case("drn-graph-zero-memory", DRN, ("graph", "--set", "batch_memory_gb=0"), "batch_memory_gb must be a finite"),
    Case("drn-graph-citeseer-without-setting", DRN, ("graph", "--dataset", "citeseer"),
         "pass --step-size F and --layers N"),
    Case("drn-graph-classes-too-small", DRN,
         ("graph", "--data-root", "{tmp}/data", "--set", "train_per_class=200"), "the smallest class has 131 nodes",
         setup=_cora_root),
    # fewshot eval / ablation: the config, then the feature file
    Case("drn-fewshot-identical-rows", DRN, ("fewshot", "eval", "--features", F), "all 120 feature rows are identical",
         setup=_features("features.safetensors", "identical")),
    Case("drn-fewshot-duplicate-rows", DRN, ("fewshot", "eval", "--features", F), "4 feature rows are copies of one",
         setup=_features("features.safetensors", "duplicates")),
    Case("drn-fewshot-nan-features", DRN, ("fewshot", "eval", "--features", F, "--method", "simple"),
         "hold NaN/inf values", setup=_features("features.safetensors", "nan")),
    Case("drn-fewshot-negative-lr", DRN, ("fewshot", "eval", "--features", F, "--set", "lr=-0.1"),
         "lr must be a finite number > 0", setup=_features("features.safetensors", "good")),
    Case("drn-fewshot-sigma-one", DRN, ("fewshot", "eval", "--features", F, "--sigma", "1"),
         "--n-top and --sigma are ranks", setup=_features("features.safetensors", "good")),
    Case("drn-fewshot-n-top-above-episode", DRN, ("fewshot", "eval", "--features", F, "--n-top", "500"),
         "must lie in [2, 80]", setup=_features("features.safetensors", "good")),
    Case("drn-fewshot-way-above-classes", DRN, ("fewshot", "eval", "--features", F, "--way", "9"),
         "way=9 needs 9 classes", setup=_features("features.safetensors", "good")),
    Case("drn-fewshot-missing-features", DRN, ("fewshot", "eval", "--features", "{tmp}/absent.safetensors"),
         "does not exist"),
    Case("drn-fewshot-ablation-without-n-top", DRN, ("fewshot", "ablation", "--features", F, "--step-size", "0.5",
                                                     "--layers", "0", "--sigma", "4"), "Missing option '--n-top'",
         exit_code=2),
    Case("drn-fewshot-ablation-negative-mu", DRN, ("fewshot", "ablation", "--features", F, "--step-size", "0.5",
                                                   "--layers", "0", "--n-top", "8", "--sigma", "4", "--mu", "-1"),
         "--mu must be a finite number ≥ 0", setup=_features("features.safetensors", "good")),
    # fewshot backbone / extract / convert
    Case("drn-fewshot-backbone-zero-epochs", DRN, ("fewshot", "backbone", "--dataset", "mnist", "--epochs", "0"),
         "epochs must be ≥ 1"),
    Case("drn-fewshot-backbone-missing-images", DRN, ("fewshot", "backbone", "--dataset", "cub", "--data-root",
                                                      "{tmp}"), "CUB-200-2011 not found"),
    Case("drn-fewshot-extract-missing-checkpoint", DRN, ("fewshot", "extract", "--checkpoint", "{tmp}/nowhere"),
         "does not exist"),
    Case("drn-fewshot-convert-junk", DRN, ("fewshot", "convert", "--checkpoint", "{tmp}/junk.pth", "--backbone",
                                           "resnet18", "--dataset", "mini", "--output-dir", "{tmp}/model"),
         "cannot read", setup=_file("junk.pth", "this is not a checkpoint")),
    Case("drn-fewshot-convert-empty", DRN, ("fewshot", "convert", "--checkpoint", "{tmp}/empty.pth", "--backbone",
                                            "resnet18", "--dataset", "mini", "--output-dir", "{tmp}/model"),
         "cannot read", setup=_file("empty.pth", b"")),
    Case("drn-fewshot-convert-wrong-backbone", DRN, ("fewshot", "convert", "--checkpoint", "{tmp}/mini.pt",
                                                     "--backbone", "wrn28_10", "--dataset", "mini", "--output-dir",
                                                     "{tmp}/model"), "does not match WideResNet",
         setup=_official_keys_as("mini.pt")),
    Case("drn-fewshot-convert-into-a-run", DRN, ("fewshot", "convert", "--checkpoint", "{tmp}/mini.pt", "--backbone",
                                                 "resnet18", "--dataset", "mini", "--output-dir", "{out}"),
         "is not empty", setup=_official_keys_as("mini.pt")),
    # --- dianet -----------------------------------------------------------------------------------
    Case("dianet-resume-without-saved-state", DIANET, ("train", "--resume", "{tmp}/run"), "no saved training state",
         setup=_dianet_run("run")),
    Case("dianet-resume-truncated-state", DIANET, ("train", "--resume", "{tmp}/run"),
         "state/model.safetensors is truncated or corrupt", setup=_dianet_run("run", state=True)),
    Case("dianet-resume-other-config", DIANET, ("train", "--resume", "{tmp}/run", "--epochs", "3", "--lr", "0.05"),
         "train.epochs: 180 → 3", setup=_dianet_run("run", state=True)),
    Case("dianet-resume-without-arch-or-run", DIANET, ("train", "--epochs", "3"), "Missing option '--arch'",
         exit_code=2),
    Case("dianet-summarize-eval-run", DIANET, ("summarize", "{tmp}/eval"), "is a `dianet eval` run",
         setup=_dianet_run("eval", command="eval", results=_RESULT)),
    Case("dianet-summarize-corrupt-results", DIANET, ("summarize", "{tmp}/run"), "run/results.json is corrupt",
         setup=_dianet_run("run", results='{"test_acc_final": 76.')),
    Case("dianet-summarize-unfinished-run", DIANET, ("summarize", "{tmp}/run"), "has not finished",
         setup=_dianet_run("run")),
    Case("dianet-summarize-repeated-seed", DIANET, ("summarize", "{tmp}/a", "{tmp}/b"), "with the same seed (0)",
         setup=_setups(_dianet_run("a", results=_RESULT), _dianet_run("b", results=_RESULT))),
    Case("dianet-summarize-another-package", DIANET, ("summarize", "{out}"), "is a `earlier earlier` run"),
    Case("dianet-epochs-0", DIANET, ("train", "--arch", "dia_resnet164", "--epochs", "0"), "epochs must be ≥ 1"),
    Case("dianet-schedule-decreasing", DIANET, ("train", "--arch", "dia_resnet164", "--schedule", "120,60"),
         "schedule must list increasing positive epochs"),
    Case("dianet-schedule-not-numbers", DIANET, ("train", "--arch", "dia_resnet164", "--schedule", "60,120e"),
         "schedule[1]='120e' is not a valid int"),
    Case("dianet-unknown-arch", DIANET, ("train", "--arch", "resnet20"), "'resnet20' is not one of", exit_code=2),
    Case("dianet-unknown-cell", DIANET, ("train", "--arch", "dia_resnet164", "--set", "model.cell=gru"),
         "model.cell='gru' is not one of"),
    Case("dianet-width-not-a-multiple", DIANET,
         ("train", "--arch", "dia_resnet164", "--set", "model.widths=64,130,256"), "multiples of expansion"),
    Case("dianet-unknown-width-preset", DIANET, ("train", "--arch", "dia_resnet164", "--set", "model.widths=wide"),
         "neither comma-separated positive stage widths"),
    Case("dianet-option-of-another-block", DIANET, ("train", "--arch", "dia_wrn52_4", "--set", "model.cardinality=8"),
         "cardinality=8 does not apply to 'wide_basic' blocks"),
    Case("dianet-reduction-too-large", DIANET, ("train", "--arch", "dia_resnet164", "--set", "model.reduction=100"),
         "leaves no hidden units"),
    Case("dianet-stacked-se", DIANET, ("train", "--arch", "dia_resnet164_se", "--set", "model.num_layers=2"),
         "stacked layers exist for the DIA-LSTM cell only"),
    Case("dianet-fp16-on-cpu", DIANET, ("train", "--arch", "dia_resnet164", "--mixed-precision", "fp16"), _NO_GPU,
         setup=_needs_no_gpu),
    Case("dianet-eval-fp16-on-cpu", DIANET, ("eval", "--checkpoint", "{tmp}/model", "--mixed-precision", "fp16"),
         _NO_GPU, setup=_setups(_needs_no_gpu, _file("model/config.json", json.dumps(
             {"model": "dianet.DIAResNet", "package": "dianet", "config": {}, "dataset": "cifar10"})))),
    Case("dianet-select-on-val-without-split", DIANET, ("train", "--arch", "dia_resnet164", "--select-on", "val"),
         "add --val-split N"),
    Case("dianet-negative-val-split", DIANET, ("train", "--arch", "dia_resnet164", "--val-split", "-5000"),
         "val_split must be ≥ 0"),
    Case("dianet-seeds-0", DIANET, ("train", "--arch", "dia_resnet164", "--seeds", "0"), "seeds must be ≥ 1"),
    Case("dianet-negative-lr", DIANET, ("train", "--arch", "dia_resnet164", "--lr", "-0.1"), "lr must be > 0"),
    Case("dianet-restore-best", DIANET, ("train", "--arch", "dia_resnet164", "--set", "train.restore_best=true"),
         "leave train.restore_best false"),
    Case("dianet-missing-dataset", DIANET, ("train", "--arch", "dia_resnet164", "--dataset", "{tmp}/cifar"),
         "is neither one of cifar10, cifar100, cifar10-subset nor an image folder"),
    Case("dianet-imagenet-without-dataset", DIANET, ("train", "--arch", "dia_resnet50"), "pass --dataset DIR"),
    Case("dianet-eval-missing-checkpoint", DIANET, ("eval", "--checkpoint", "{tmp}/nowhere"), "does not exist"),
    Case("dianet-convert-junk", DIANET, ("convert", "{tmp}/model_best.pth.tar", "{tmp}/converted"), "cannot read",
         setup=_file("model_best.pth.tar", b"<html>404 Not Found</html>")),
    Case("dianet-convert-empty-file", DIANET, ("convert", "{tmp}/empty.pth", "{tmp}/converted"), "cannot read",
         setup=_file("empty.pth", b"")),
    Case("dianet-convert-missing-file", DIANET, ("convert", "{tmp}/absent.pth", "{tmp}/converted"), "does not exist"),
    Case("dianet-convert-into-a-used-folder", DIANET, ("convert", "{tmp}/ckpt.pth", "{tmp}/home"), "is not empty",
         setup=_setups(_file("ckpt.pth", b"x"), _file("home/thesis.tex", "years of work"))),
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
    Case("pdiff-selector-matches-nothing", PDIFF, ("collect", "--dataset", "digits", "--params", "layer9.bn"),
         "matches no parameter"),
    Case("pdiff-k-below-ddpm-batch", PDIFF, ("run", "--dataset", "digits", "--k", "10"),
         "larger than the K=10 checkpoints"),
    Case("pdiff-unknown-host", PDIFF, ("collect", "--model", "resnet-18"), "unknown host architecture"),
    Case("pdiff-unknown-dataset", PDIFF, ("collect", "--dataset", "mnsit"), "neither one of"),
    Case("pdiff-folder-without-test", PDIFF, ("collect", "--dataset", "{tmp}/colour"), "has no test/ subfolder",
         setup=_setups(_png("colour/train/a/0.png"), _png("colour/train/b/0.png"))),
    Case("pdiff-folder-unreadable-image", PDIFF, ("collect", "--dataset", "{tmp}/colour"), "cannot read image",
         setup=_setups(_dc_colour_folder, _file("colour/test/b/1.png", b"not a png"))),
    Case("pdiff-validation-split-too-large", PDIFF, ("run", "--dataset", "digits", "--set", "host.val_size=5000"),
         "leaves no training images"),
    Case("pdiff-not-a-collection", PDIFF, ("train", "--checkpoints", "{out}"), "not a pdiff collect folder"),
    Case("pdiff-train-on-a-missing-gpu", PDIFF, ("train", "--checkpoints", "{tmp}/ckpt", "--device", "cuda:3",
                                                  "--set", "ae.optim.batch_size=4", "--set", "ddpm.optim.batch_size=4"),
         "cuda:3", setup=_pdiff_collection("ckpt")),
    Case("pdiff-truncated-safetensors", PDIFF, ("train", "--checkpoints", "{tmp}/ckpt"), "is truncated",
         setup=_pdiff_collection("ckpt", truncate=True)),
    Case("pdiff-manifest-of-another-host", PDIFF, ("train", "--checkpoints", "{tmp}/ckpt"), "frozen weights differ",
         setup=_pdiff_collection("ckpt", foreign_host=True)),
    Case("pdiff-checkpoints-of-another-dataset", PDIFF,
         ("evaluate", "--generated", "{tmp}/gen", "--checkpoints", "{tmp}/ckpt"), "made for dataset 'mnist'",
         setup=_setups(_pdiff_collection("ckpt", "digits"), _pdiff_generated("gen", "mnist"))),
    Case("pdiff-generate-without-generator", PDIFF, ("generate",), "pass --generator"),
    Case("pdiff-old-autoencoder-on-a-small-subset", PDIFF,
         ("run", "--dataset", "digits", "--set", "host.val_size=300", "--ae", "old-medium"),
         "OldParamAutoencoder cannot code input_dim=384"),
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
    Case("dc-extract-on-a-missing-gpu", DC, ("extract", "--source", "pixels", "--dataset", "digits", "--device",
                                             "cuda:3"), "cuda:3"),
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
    Case("dc-folder-classes-differ", DC, ("train-ddpm", "--dataset", "{tmp}/colour"),
         "give both splits the same class folders", setup=_setups(_dc_colour_folder, _png("colour/train/c/0.png"))),
    Case("dc-folder-mixed-sizes", DC, ("train-vae", "--dataset", "{tmp}/colour"), "must have one size",
         setup=_setups(_dc_colour_folder, _png("colour/test/a/1.png", size=28))),
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
