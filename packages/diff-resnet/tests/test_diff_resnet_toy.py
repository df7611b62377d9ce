"""The synthetic examples of §4.1 and the ``toy`` command end to end."""

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner
from diff_resnet.cli import main
from diff_resnet.config import TOY_PRESETS
from diff_resnet.diffusion import laplacian, toy_weights
from diff_resnet.models import ToyNet
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


def _fresh_sgd_every_step(config, points, labels, num_steps, laplacian):
    """The original scripts' loop, literally: a new SGD(momentum=0.9) before every step (quirk 3)."""
    torch.manual_seed(config.seed)
    model = ToyNet(step_size=config.step_size, num_steps=num_steps, fold_steps=num_steps > 0)
    correct = []
    for _ in range(config.iterations):
        logits = model(points, laplacian)
        correct.append(int((logits.argmax(dim=1) == labels).sum()))
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(logits, labels).backward()
        optimizer.step()
    return correct


# Correct predictions out of 1000 at iterations 0…20 of the original two_moon script (checked equal to it,
# iteration by iteration): without diffusion, and with its 60 diffusion steps.
MOON_WITHOUT = [500, 806, 810, 811, 816, 822, 825, 829, 835, 840, 841, 843, 845, 851, 854, 857, 862, 868, 871, 872, 877]
MOON_WITH = [500, 824, 821, 819, 830, 832, 836, 841, 843, 849, 860, 872, 882, 892, 910, 934, 953, 962, 975, 1000, 1000]


def test_default_two_moons_reproduces_the_original_counts():
    """The default (momentum 0) is the original's optimiser: rebuilding SGD(momentum=0.9) every step leaves
    no momentum buffer, so both give the published run, count for count."""
    config = TOY_PRESETS["two_moon"]
    assert config.momentum == 0.0
    points, labels, _ = make_points(config)
    laplacian_ = laplacian(toy_weights(points, config.sigma, config.n_top))
    without = train_toy_network(config, points, labels, 0, None)
    with_ = train_toy_network(config, points, labels, config.layers, laplacian_)
    assert [round(10 * a) for a in without.accuracies] == MOON_WITHOUT
    assert [round(10 * a) for a in with_.accuracies] == MOON_WITH
    assert _fresh_sgd_every_step(config, points, labels, config.layers, laplacian_) == MOON_WITH
    momentum = train_toy_network(dataclasses.replace(config, momentum=0.9), points, labels, config.layers, laplacian_)
    assert momentum.losses[:2] == pytest.approx(with_.losses[:2])  # the first step has no history yet
    assert momentum.losses[3] != pytest.approx(with_.losses[3])  # then real momentum changes the run


@pytest.mark.slow  # the first command a user runs, exactly as the README gives it (~20-60 s on 2 cores)
def test_first_command_reproduces_the_papers_figures(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["toy"])
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs" / "diff-resnet").iterdir()
    results = json.loads((run / "results.json").read_text())
    for example in ("two_moon", "two_circle", "two_spiral"):
        assert results[example]["final_acc_with_diffusion"] == 100.0, example
        assert results[example]["final_acc_without_diffusion"] < 90.0, example  # diffusion is what separates them
    assert results["two_moon"]["acc_with_diffusion"] == [c / 10 for c in MOON_WITH]
    assert results["xor"]["ratio_after"] > 4 * results["xor"]["ratio_before"]
    assert "Warning" not in result.output and "diverged" not in result.output


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


def test_cli_toy_end_to_end_and_its_options_reach_the_training(tmp_path):
    """The command trains what the library trains with the config typed here: `--momentum` reaches the optimiser
    and `--seed` the data and the initialisation (their echo in config.json would prove neither)."""
    runner = CliRunner()
    moons = dataclasses.replace(TOY_PRESETS["two_moon"], iterations=5)
    runs = {}
    for name, options, config in [("default", [], moons),
                                  ("changed", ["--momentum", "0.9", "--seed", "41"],
                                   dataclasses.replace(moons, momentum=0.9, seed=41))]:
        out = tmp_path / name
        result = runner.invoke(main, ["toy", "--example", "moons", "--output-dir", str(out), "--set", "iterations=5",
                                      *options])
        assert result.exit_code == 0, result.output
        assert "two_moon" in result.output and "acc with diffusion" in result.output
        runs[name] = json.loads((out / "results.json").read_text())["two_moon"]
        points, labels, _ = make_points(config)
        expected = train_toy_network(config, points, labels, config.layers,
                                     laplacian(toy_weights(points, config.sigma, config.n_top)))
        assert runs[name]["loss_with_diffusion"] == pytest.approx(expected.losses, rel=1e-6), name
        assert runs[name]["acc_with_diffusion"] == expected.accuracies, name
    assert runs["changed"]["loss_with_diffusion"][0] != pytest.approx(runs["default"]["loss_with_diffusion"][0])


def test_cli_toy_dry_run_and_bad_override(tmp_path):
    runner = CliRunner()
    dry = runner.invoke(main, ["toy", "--dry-run", "--output-dir", str(tmp_path / "dry")])
    assert dry.exit_code == 0 and '"example": "two_spiral"' in dry.output and '"layers": 900' in dry.output
    assert not (tmp_path / "dry").exists()
    bad = runner.invoke(main, ["toy", "--example", "moons", "--set", "iterations=many"])
    assert bad.exit_code == 1 and bad.output.startswith("Error: ")
    assert "iterations" in bad.output and "Traceback" not in bad.output
    assert len(bad.output.strip().splitlines()) == 1
