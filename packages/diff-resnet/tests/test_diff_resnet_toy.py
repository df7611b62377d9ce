"""The synthetic examples of §4.1 and the ``toy`` command end to end."""

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner
from diff_resnet.cli import main
from diff_resnet.config import TOY_PRESETS
from diff_resnet.diffusion import laplacian, toy_weights
from diff_resnet.toy import distance_diameter_ratio, make_points, run_toy, train_toy_network
from diffcore.runs import RunDir


@pytest.mark.parametrize("example", ["two_moon", "two_circle", "two_spiral", "xor"])
def test_points_are_deterministic_and_split_in_halves(example):
    config = TOY_PRESETS[example]
    points, labels, groups = make_points(config)
    n = 2 * config.n_per_class
    assert points.shape == (n, 2) and points.dtype == torch.float32
    assert labels.tolist() == [0] * (n // 2) + [1] * (n // 2)
    assert torch.equal(make_points(config)[0], points)
    if example == "xor":
        centres = torch.tensor([[0.0, 0.0], [2.0, 2.0], [2.0, 0.0], [0.0, 2.0]])[groups]
        assert ((points - centres).norm(dim=1) <= 0.75 + 1e-6).all()  # discs of diameter 1.5


def test_distance_diameter_ratio_hand_computed():
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [4.0, 0.0], [4.0, 2.0]])
    groups = torch.tensor([0, 0, 1, 1])
    # l = min distance between groups = |(1,0) − (4,0)| = 3; d = max diameter = 2 → l/d = 1.5
    assert distance_diameter_ratio(points, groups) == pytest.approx(1.5)


def test_legacy_fresh_optimizer_keeps_no_momentum():
    """Rebuilding SGD every step (quirk 3) drops the momentum buffer: it equals momentum-free SGD."""
    config = dataclasses.replace(TOY_PRESETS["two_moon"], iterations=4, legacy_fresh_optimizer=True)
    points, labels, _ = make_points(config)
    operator = laplacian(toy_weights(points, config.sigma, config.n_top))
    legacy = train_toy_network(config, points, labels, 5, operator)
    plain = train_toy_network(dataclasses.replace(config, momentum=0.0, legacy_fresh_optimizer=False),
                              points, labels, 5, operator)
    with_momentum = train_toy_network(dataclasses.replace(config, legacy_fresh_optimizer=False),
                                      points, labels, 5, operator)
    assert legacy.losses == pytest.approx(plain.losses)
    assert legacy.losses[:2] == pytest.approx(with_momentum.losses[:2])  # the first step has no history yet
    assert legacy.losses[3] != pytest.approx(with_momentum.losses[3])


def test_moon_example_writes_figures_gif_and_accuracies(tmp_path):
    config = dataclasses.replace(TOY_PRESETS["two_moon"], iterations=3)
    run = RunDir.create(tmp_path, config, package="diff-resnet", command="toy")
    results = run_toy([config], run)
    moon = results["two_moon"]
    assert len(moon["acc_without_diffusion"]) == len(moon["acc_with_diffusion"]) == 3
    assert moon["acc_with_diffusion"][0] == 50.0  # iteration 0 is the untrained network
    assert moon["final_acc_with_diffusion"] == moon["acc_with_diffusion"][-1]
    folder = tmp_path / moon["figures"]
    names = {p.name for p in folder.iterdir()}
    assert {"raw.png", "diffusion.gif"} <= names
    assert {f"{run_}_iter={k}.png" for run_ in ("with_diffusion", "without_diffusion") for k in range(3)} <= names
    assert not any(name.endswith(".tmp") for name in names)
    from PIL import Image

    with Image.open(tmp_path / moon["gif"]) as gif:
        assert gif.n_frames > 10
    assert len(run.read_metrics()) == 6
    json.dumps(results)


def test_xor_diffusion_raises_the_distance_diameter_ratio(tmp_path):
    config = dataclasses.replace(TOY_PRESETS["xor"], iterations=30)
    results = run_toy([config], RunDir.create(tmp_path, config, package="diff-resnet", command="toy"))["xor"]
    assert len(results["ratio_curve"]) == 30 and len(list((tmp_path / results["figures"]).glob("iter=*.png"))) == 30
    assert results["ratio_after"] > results["ratio_before"]
    assert results["disc_ratio_after"] > results["disc_ratio_before"]


def test_cli_toy_end_to_end(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["toy", "--example", "moons", "--output-dir", str(tmp_path / "run"),
                                  "--set", "iterations=2", "--legacy-fresh-optimizer"])
    assert result.exit_code == 0, result.output
    assert "two_moon" in result.output and "acc with diffusion" in result.output
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert len(saved["two_moon"]["acc_with_diffusion"]) == 2
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["two_moon"]["legacy_fresh_optimizer"] is True


def test_cli_toy_dry_run_and_bad_override(tmp_path):
    runner = CliRunner()
    dry = runner.invoke(main, ["toy", "--dry-run", "--output-dir", str(tmp_path / "dry")])
    assert dry.exit_code == 0 and '"example": "two_spiral"' in dry.output and '"layers": 900' in dry.output
    assert not (tmp_path / "dry").exists()
    bad = runner.invoke(main, ["toy", "--example", "moons", "--set", "iterations=many"])
    assert bad.exit_code != 0
    assert "iterations" in bad.output and "Traceback" not in bad.output
    assert len(bad.output.strip().splitlines()) == 1
