"""Few-shot episodes (spec §3.3–3.4, §4.3c–f, §11): weights, baselines, batched vs looped heads, feature files, CLI."""

import dataclasses
import functools
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from diff_resnet.cli import main
from diff_resnet.diffusion import fewshot_weights, laplacian
from diff_resnet.fewshot.config import FEWSHOT_PRESETS, FewShotConfig
from diff_resnet.fewshot.data import FeatureSet, load_features, save_features
from diff_resnet.fewshot.episodes import (
    EpisodeSampler,
    confidence_interval,
    diffusion_episodes,
    episode_accuracies,
    gather_episodes,
    init_head,
    laplacian_shot,
    nearest_prototype,
    preprocess,
    rectified_prototypes,
    reference_diffusion_episode,
    run_fewshot,
    smoothness_penalty,
)
from diffcore.errors import ConfigError, DataError

FAST = FewShotConfig(episodes=6, batch_episodes=4, epochs=100)


def gaussian_features(classes: int = 8, per_class: int = 24, dim: int = 16, spread: float = 1.0,
                      seed: int = 0) -> FeatureSet:
    """Gaussian clusters around random centres; ``spread`` is the within-class noise level."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    centres = torch.randn(classes, dim, generator=g) * 2.0
    features = centres[labels] + spread * torch.randn(len(labels), dim, generator=g)
    return FeatureSet(features, labels, torch.randn(dim, generator=g) * 0.1, {"dataset": "gaussian"}, "memory")


# --------------------------------------------------------------------------------- weights (§3.4)


def test_episode_weights_hand_computed_and_scale_free():
    """Four points on a line, n_top = 4 (keep self + 2 others), sigma = 3 (scale = 2nd-nearest other).

    Rows (distances sorted; cut r_i = 4th smallest, strict; scale s_i = 3rd smallest):
    0: {0,1,3,7} r 7 s 3 → 1, e^{-1/9}, e^{-1};  1: {0,1,2,6} r 6 s 2 → e^{-1/4}, 1, e^{-1};
    2: {0,2,3,4} r 4 s 3 → e^{-1}, e^{-4/9}, 1;  3: {0,4,6,7} r 7 s 6 → e^{-1}, e^{-4/9}, 1 (for j = 1, 2, 3).
    W ← D^{-1/2} W D^{-1/2}, W′ = (W + Wᵀ)/2. Ranks make W′ invariant to scaling the features, so a second
    episode that is the first × 5 gets the same graph.
    """
    e = math.exp
    raw = torch.tensor([[1, e(-1 / 9), e(-1), 0], [e(-1 / 4), 1, e(-1), 0],
                        [e(-1), e(-4 / 9), 1, 0], [0, e(-1), e(-4 / 9), 1]], dtype=torch.float64)
    inv_sqrt = raw.sum(dim=1).rsqrt()
    normalised = inv_sqrt[:, None] * raw * inv_sqrt[None, :]
    expected = (normalised + normalised.T) / 2
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    weights = fewshot_weights(torch.stack([x, 5 * x]), n_top=4, sigma=3)
    torch.testing.assert_close(weights[0], expected)
    torch.testing.assert_close(weights[1], expected)
    lap = laplacian(weights)
    torch.testing.assert_close(lap.sum(dim=-1), torch.zeros(2, 4, dtype=torch.float64))
    assert (torch.linalg.eigvalsh(lap) > -1e-12).all()  # positive semi-definite


def test_preprocess_centres_normalises_and_shifts_by_hand():
    support = torch.tensor([[[4.0, 4.0], [1.0, 5.0]]])  # base mean (1, 1) → (3, 3), (0, 4)
    query = torch.tensor([[[1.0, -1.0], [4.0, 1.0]]])  # → (0, −2), (3, 0)
    base = torch.tensor([1.0, 1.0])
    s, q = preprocess(support, query, base, shift=False)
    torch.testing.assert_close(s, torch.tensor([[[0.5**0.5, 0.5**0.5], [0.0, 1.0]]]))
    torch.testing.assert_close(q, torch.tensor([[[0.0, -1.0], [1.0, 0.0]]]))
    _, shifted = preprocess(support, query, base, shift=True)
    eta = s.mean(dim=1) - q.mean(dim=1)  # mean(support) − mean(query)
    torch.testing.assert_close(shifted, q + eta[:, None])
    torch.testing.assert_close(shifted.mean(dim=1), s.mean(dim=1))


def test_rectified_prototypes_by_hand_and_empty_class_keeps_support_mean():
    support = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])  # way 3, shot 1
    points = torch.cat([support, torch.tensor([[[1.0, 0.1], [0.9, -0.1], [0.1, 1.0]]])], dim=1)
    proto = rectified_prototypes(support, points, way=3, scale=10.0)
    similarity = 10 * torch.nn.functional.normalize(points[0], dim=-1) @ support[0].T
    weights = similarity.softmax(dim=-1)
    assigned = similarity.argmax(dim=-1)  # classes 0, 1, 2, 0, 0, 1
    for c in (0, 1, 2):
        members = assigned == c
        torch.testing.assert_close(proto[0, c], (weights[members, c, None] * points[0, members]).mean(dim=0))
    # 2-shot: class 0's support points (1, ±1) lie nearer the prototypes of classes 1 and 2 (directions (1, ±1))
    # than their own mean (1, 0), so no point is assigned to class 0; it keeps its support mean (quirk 10).
    support = torch.tensor([[[1.0, 1.0], [1.0, -1.0], [1.0, 0.9], [1.0, 1.1], [1.0, -0.9], [1.0, -1.1]]])
    fallback = rectified_prototypes(support, support, way=3)
    assert torch.isfinite(fallback).all()
    torch.testing.assert_close(fallback[0, 0], torch.tensor([1.0, 0.0]))
    assert not torch.allclose(fallback[0, 1], torch.tensor([1.0, 1.0]))  # rectified: weighted by the softmax


def test_nearest_prototype_and_confidence_interval():
    support = torch.tensor([[[0.0, 0.0], [0.0, 0.2], [5.0, 5.0], [5.0, 5.2]]])  # way 2, shot 2
    query = torch.tensor([[[0.3, 0.0], [4.0, 4.0], [2.4, 2.4]]])
    assert nearest_prototype(support, query, way=2).tolist() == [[0, 1, 0]]
    mean, half = confidence_interval(np.array([80.0, 100.0, 90.0, 70.0]))
    assert mean == 85.0 and half == pytest.approx(1.96 * np.std([80, 100, 90, 70]) / 2)


def test_laplacian_shot_graph_uses_other_queries_and_batches_independently():
    data = gaussian_features(spread=1.5, seed=1)
    sampler = EpisodeSampler(data.labels)
    picks = torch.from_numpy(sampler.draw(3, range(5), 5, 16))
    support, query = gather_episodes(data.features, picks, shot=1)
    support, query = preprocess(support, query, data.base_mean, shift=True)
    batched = laplacian_shot(support, query, way=5)
    for b in range(5):  # each episode stops on its own energy criterion
        assert torch.equal(batched[b], laplacian_shot(support[b : b + 1], query[b : b + 1], way=5)[0])
    # λ = 0 and no iterations: the prediction is the nearest rectified prototype.
    proto = rectified_prototypes(support, torch.cat([support, query], dim=1), way=5)
    assert torch.equal(laplacian_shot(support, query, 5, lamda=0.0, max_iter=0), torch.cdist(query, proto).argmin(-1))


def reference_laplacian_shot(support, query, way, lamda, knn=2, max_iter=20, tol=1e-6):
    """§4.3d of the spec, one episode, in NumPy: rectified prototypes (step 7), a binary graph from each query
    to its ``knn`` nearest other queries (sorted positions 1..knn, not symmetrised), unary a = ‖x_q − p̃_c‖,
    y⁰ = softmax(−a), then y ← softmax(−a + λ W y) until |ΔE / E| < tol, E = Σ y (log y + a − λ W y)."""
    support, query = np.asarray(support, dtype=np.float64), np.asarray(query, dtype=np.float64)
    points = np.concatenate([support, query])
    proto = support.reshape(way, -1, support.shape[1]).mean(axis=1)
    cos = (points / np.linalg.norm(points, axis=1, keepdims=True)) @ (
        proto / np.linalg.norm(proto, axis=1, keepdims=True)).T
    score = 10 * cos
    soft = np.exp(score - score.max(axis=1, keepdims=True))
    soft /= soft.sum(axis=1, keepdims=True)
    assigned = score.argmax(axis=1)
    rectified = proto.copy()
    for c in range(way):
        if (assigned == c).any():  # a class no point is assigned to keeps its support mean
            rectified[c] = (soft[assigned == c, c, None] * points[assigned == c]).mean(axis=0)
    distance = np.linalg.norm(query[:, None] - query[None], axis=-1)
    graph = np.zeros_like(distance)
    for q, row in enumerate(distance):
        graph[q, np.argsort(row, kind="stable")[1 : knn + 1]] = 1.0
    unary = np.linalg.norm(query[:, None] - rectified[None], axis=-1)

    def softmax(z):
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def energy(y):
        return float(np.sum(y * (np.log(y) + unary - lamda * graph @ y)))

    y = softmax(-unary)
    current = energy(y)
    for _ in range(max_iter):
        y = softmax(-unary + lamda * graph @ y)
        new = energy(y)
        if abs((new - current) / current) < tol:
            break
        current = new
    return y.argmax(axis=1)


@pytest.mark.parametrize("lamda", [0.5, 2.0])
def test_laplacian_shot_with_lambda_equals_a_reference_written_from_the_spec(lamda):
    data = gaussian_features(spread=2.0, seed=7)
    picks = torch.from_numpy(EpisodeSampler(data.labels).draw(5, range(8), 5, 16))
    support, query = gather_episodes(data.features.double(), picks, shot=1)
    support, query = preprocess(support, query, data.base_mean.double(), shift=True)
    ours = laplacian_shot(support, query, way=5, lamda=lamda)
    for b in range(8):
        expected = reference_laplacian_shot(support[b].numpy(), query[b].numpy(), way=5, lamda=lamda)
        np.testing.assert_array_equal(ours[b].numpy(), expected, err_msg=f"episode {b}")
    # λ matters here: the graph term changes some predictions against the nearest rectified prototype.
    assert not torch.equal(ours, laplacian_shot(support, query, way=5, lamda=0.0, max_iter=0))


# -------------------------------------------------------------------------------------- episodes


def test_sampler_is_per_episode_and_validates():
    data = gaussian_features(classes=6, per_class=20)
    sampler = EpisodeSampler(data.labels)
    picks = sampler.draw(7, range(10), way=5, per_class=16)
    assert picks.shape == (10, 5, 16)
    np.testing.assert_array_equal(sampler.draw(7, [3, 4], 5, 16), picks[3:5])  # batch-independent
    for episode in picks:
        classes = data.labels[torch.from_numpy(episode)]
        assert (classes == classes[:, :1]).all() and len(set(classes[:, 0].tolist())) == 5
        assert len(set(episode.ravel().tolist())) == 5 * 16  # distinct images
    assert not np.array_equal(sampler.draw(8, [3], 5, 16)[0], picks[3])
    with pytest.raises(ConfigError, match="way=7 needs 7 classes"):
        sampler.check(7, 16)
    with pytest.raises(ConfigError, match=r"21 rows per class.*smallest class has 20"):
        sampler.check(5, 21)


def test_head_initialisation_is_per_episode_with_torch_default_range():
    first, again, other = init_head(1, 5, 64, 5), init_head(1, 5, 64, 5), init_head(1, 6, 64, 5)
    assert list(first) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "classifier.weight", "classifier.bias"]
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["fc1.weight"], other["fc1.weight"])
    assert first["classifier.weight"].shape == (5, 64)
    assert all(v.abs().max() <= 1 / 8 for v in first.values())  # U(±1/√d), d = 64
    assert first["fc1.weight"].std().item() == pytest.approx(1 / 8 / math.sqrt(3), rel=0.05)


@pytest.mark.parametrize(("layers", "alpha", "mu"), [(6, 0.0, 0.0), (0, 0.0, 0.0), (3, 0.2, 0.0), (0, 0.0, 0.5)])
def test_batched_heads_equal_one_at_a_time(layers, alpha, mu):
    """Stacked heads + one SGD on [B, ...] tensors == a ToyNet + torch SGD per episode (§11: vmapped == looped);
    with μ > 0 the batched 2·tr(zᵀLz) form of the smoothness loss equals the ablation script's pairwise sum."""
    config = dataclasses.replace(FAST, layers=layers, alpha=alpha, mu=mu, shot=1, query=5)
    data = gaussian_features(spread=1.2, seed=2)
    picks = torch.from_numpy(EpisodeSampler(data.labels).draw(config.seed, range(4), config.way, 6))
    support, query = gather_episodes(data.features, picks, shot=1)
    support, query = preprocess(support, query, data.base_mean, shift=True)
    batched = diffusion_episodes(support, query, [0, 1, 2, 3], config)
    for b in range(4):
        predictions, _ = reference_diffusion_episode(support[b], query[b], b, config)
        assert torch.equal(batched[b], predictions), f"episode {b}"


def test_batch_size_and_looped_reference_give_the_same_accuracies():
    data = gaussian_features(spread=2.0, seed=3)
    config = dataclasses.replace(FAST, episodes=5, epochs=40)
    by_batch = [run_fewshot(data, dataclasses.replace(config, batch_episodes=b))["episode_accs"] for b in (2, 5)]
    looped = run_fewshot(data, dataclasses.replace(config, batched=False))
    assert by_batch[0] == by_batch[1] == looped["episode_accs"]
    assert looped["batch_episodes"] == 1 and len(looped["episode_accs"]) == 5


def test_gaussian_cluster_episodes_beat_chance_with_every_method():
    """§11: synthetic 5 × (K + 15)-point episodes; each method runs and clearly beats 20 % chance."""
    data = gaussian_features(spread=1.5, seed=4)
    for method in ("simple", "laplacian", "diffusion"):
        for shot in (1, 5):
            results = run_fewshot(data, dataclasses.replace(FAST, method=method, shot=shot))
            assert results["acc_mean"] > 60, (method, shot, results["acc_mean"])
            assert len(results["episode_accs"]) == results["episodes"] == 6


def test_bad_episode_options_are_clear_errors():
    data = gaussian_features(classes=4)
    with pytest.raises(ConfigError, match="way=5 needs 5 classes, but the features have 4"):
        run_fewshot(data, FAST)  # 5-way on 4 novel classes (quirk 11)
    data = gaussian_features()
    for change, message in [({"n_top": 1}, "--n-top"), ({"layers": -1}, "--layers"), ({"shot": 20}, "rows per class"),
                            ({"device": "gpu7"}, "torch device"), ({"laplacian_knn": 75}, "laplacian_knn")]:
        with pytest.raises(ConfigError, match=message):
            run_fewshot(data, dataclasses.replace(FAST, **change))


def test_smoothness_penalty_is_the_pairwise_sum():
    z = torch.randn(3, 10, 4, dtype=torch.float64)
    weights = fewshot_weights(torch.randn(3, 10, 6, dtype=torch.float64), n_top=4, sigma=3)
    pairwise = (weights * (z[:, None] - z[:, :, None]).square().sum(dim=-1)).sum(dim=(1, 2))
    torch.testing.assert_close(smoothness_penalty(z, laplacian(weights)), pairwise)


def test_ablation_uses_raw_features_and_the_smoothness_loss():
    """Table 2's pipeline: no centring / normalisation / shift (so the base mean is ignored), and μ changes
    the trained heads."""
    data = gaussian_features(spread=2.5, seed=8)
    config = dataclasses.replace(FAST, raw_features=True, layers=0, epochs=30)
    moved = FeatureSet(data.features, data.labels, data.base_mean + 100.0, {}, "memory")
    raw = run_fewshot(data, config)["episode_accs"]
    assert run_fewshot(moved, config)["episode_accs"] == raw  # the base mean plays no part
    assert run_fewshot(data, dataclasses.replace(config, raw_features=False))["episode_accs"] != raw
    assert run_fewshot(data, dataclasses.replace(config, mu=1.0))["episode_accs"] != raw


# ----------------------------------------------------------------------------------- feature files


def test_feature_file_round_trip(tmp_path):
    data = gaussian_features()
    path = save_features(tmp_path / "f.safetensors", data.features, data.labels, data.base_mean, {"dataset": "g"})
    loaded = load_features(path)
    assert torch.equal(loaded.features, data.features) and torch.equal(loaded.labels, data.labels)
    assert loaded.metadata["format"] == "diff-resnet-fewshot-features" and loaded.summary()["dim"] == 16


@pytest.mark.parametrize(("tensors", "message"), [
    ({"feats": torch.zeros(4, 3), "labels": torch.zeros(4, dtype=torch.long), "base_mean": torch.zeros(3)},
     "lacks key.*features.*found base_mean, feats, labels"),
    ({"features": torch.zeros(4), "labels": torch.zeros(4, dtype=torch.long), "base_mean": torch.zeros(3)},
     r"features is \[4\] float32, expected \[N, d\] float"),
    ({"features": torch.zeros(4, 3), "labels": torch.zeros(4), "base_mean": torch.zeros(3)},
     r"labels is \[4\] float32, expected \[N\] integer"),
    ({"features": torch.zeros(4, 3), "labels": torch.zeros(5, dtype=torch.long), "base_mean": torch.zeros(3)},
     "labels has 5 rows but features has 4"),
    ({"features": torch.zeros(4, 3), "labels": torch.zeros(4, dtype=torch.long), "base_mean": torch.zeros(2)},
     "base_mean has 2 entries but features are 3-d"),
])
def test_wrong_feature_files_name_the_problem(tmp_path, tensors, message):
    from safetensors.torch import save_file

    save_file(tensors, str(tmp_path / "bad.safetensors"))
    with pytest.raises(DataError, match=message):
        load_features(tmp_path / "bad.safetensors")


def test_unreadable_or_missing_feature_file(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match=r"not a readable safetensors file.*expected safetensors keys features"):
        load_features(tmp_path / "junk.safetensors")
    with pytest.raises(DataError, match=r"does not exist.*fewshot extract"):
        load_features(tmp_path / "absent.safetensors")


# ------------------------------------------------------------------------------------------------ CLI


def tiny_features() -> FeatureSet:
    """The features of :func:`feature_file`, in memory."""
    return gaussian_features(classes=6, per_class=20, dim=8, spread=1.0, seed=5)


@pytest.fixture
def feature_file(tmp_path):
    data = tiny_features()
    return save_features(tmp_path / "tiny.safetensors", data.features, data.labels, data.base_mean,
                         {"dataset": "tiny-gaussian", "classes": json.dumps([f"c{i}" for i in range(6)])})


#: A small ``fewshot eval`` (the default preset otherwise) and the same config typed for the library.
EVAL_ARGS = ["--query", "5", "--episodes", "8", "--batch-episodes", "8", "--set", "epochs=30"]
EVAL_BASE = FewShotConfig(query=5, episodes=8, batch_episodes=8, epochs=30)


@functools.cache
def tiny_accuracies(**changes) -> list[float]:
    """Episode accuracies of the library on :func:`tiny_features` with ``EVAL_BASE`` changed as given."""
    return run_fewshot(tiny_features(), dataclasses.replace(EVAL_BASE, **changes))["episode_accs"]


@pytest.mark.parametrize(("options", "changes", "reference"), [
    (["--step-size", "0.2"], {"step_size": 0.2}, {}),
    (["--layers", "2"], {"layers": 2}, {}),
    (["--n-top", "5"], {"n_top": 5}, {}),
    (["--sigma", "2"], {"sigma": 2}, {}),
    (["--alpha", "0.5"], {"alpha": 0.5}, {}),
    (["--way", "4"], {"way": 4}, {}),
    (["--shot", "2"], {"shot": 2}, {}),
    (["--query", "4"], {"query": 4}, {}),
    (["--seed", "2"], {"seed": 2}, {}),
    (["--method", "simple"], {"method": "simple"}, {}),
    (["--method", "laplacian", "--lamda", "2"], {"method": "laplacian", "lamda": 2.0}, {"method": "laplacian"}),
    (["--method", "laplacian", "--set", "rectify_scale=3"], {"method": "laplacian", "rectify_scale": 3.0},
     {"method": "laplacian"}),
], ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_eval_options_reach_the_episodes(tmp_path, feature_file, options, changes, reference):
    """Each option changes the episodes' accuracies, to those of the library run with the config typed here."""
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["fewshot", "eval", "--features", str(feature_file), *EVAL_ARGS, *options,
                                       "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    accuracies = json.loads((out / "results.json").read_text())["episode_accs"]
    assert accuracies == tiny_accuracies(**changes)
    assert accuracies != tiny_accuracies(**reference)


@pytest.mark.parametrize("method", ["simple", "laplacian", "diffusion"])
def test_eval_command_end_to_end(tmp_path, feature_file, method):
    out = tmp_path / method
    result = CliRunner().invoke(main, [
        "fewshot", "eval", "--features", str(feature_file), "--method", method, "--shot", "1", "--query", "5",
        "--episodes", "5", "--batch-episodes", "2", "--layers", "2", "--set", "epochs=30", "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert "tiny-gaussian (8-d)" in result.output and f"{method}" in result.output and "±" in result.output
    results = json.loads((out / "results.json").read_text())
    assert (results["method"], results["shot"], results["episodes"], results["batch_episodes"]) == (method, 1, 5, 2)
    assert results["acc_mean"] == pytest.approx(np.mean(results["episode_accs"]))
    assert results["acc_ci95"] == pytest.approx(1.96 * np.std(results["episode_accs"]) / math.sqrt(5))
    assert results["features"]["classes"] == 6 and results["features"]["dim"] == 8
    # The options reach the episodes: the same accuracies as the library with the config typed here (the preset's
    # γ 0.5, n_top 8, σ 4 and the rest of train.py's defaults, with the options above).
    expected = FewShotConfig(method=method, shot=1, query=5, episodes=5, batch_episodes=2, layers=2, epochs=30)
    assert results["episode_accs"] == run_fewshot(load_features(feature_file), expected)["episode_accs"]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["episodes"] for m in lines] == [2, 4, 5]


def test_eval_dry_run_preset_and_one_line_errors(tmp_path, feature_file):
    runner = CliRunner()
    dry = runner.invoke(main, ["fewshot", "eval", "--features", str(feature_file), "--preset",
                               "mini-resnet18-1shot-v2021", "--shot", "5", "--dry-run"])
    assert dry.exit_code == 0 and json.loads(dry.output) == dataclasses.asdict(
        dataclasses.replace(FEWSHOT_PRESETS["mini-resnet18-1shot-v2021"], shot=5)) | {"milestones": [0.5, 0.75]}
    for args, message in [(["--way", "9"], "way=9 needs 9 classes"), (["--set", "bogus=1"], "unknown config key")]:
        result = runner.invoke(main, ["fewshot", "eval", "--features", str(feature_file), *args,
                                      "--output-dir", str(tmp_path / "r")])
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    result = runner.invoke(main, ["fewshot", "eval", "--features", str(tmp_path / "bad.safetensors")])
    assert result.exit_code == 1 and "expected safetensors keys features [N, d] float" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_ablation_command_end_to_end(tmp_path, feature_file):
    out = tmp_path / "ablation"
    result = CliRunner().invoke(main, [
        "fewshot", "ablation", "--features", str(feature_file), "--n-top", "6", "--sigma", "3", "--step-size", "0.5",
        "--layers", "0", "--mu", "0.1", "--query", "5", "--episodes", "4", "--set", "epochs=10",
        "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert (results["raw_features"], results["mu"], results["episodes"]) == (True, 0.1, 4)
    expected = FewShotConfig(method="diffusion", raw_features=True, n_top=6, sigma=3, step_size=0.5, layers=0, mu=0.1,
                             query=5, episodes=4, epochs=10)
    assert results["episode_accs"] == run_fewshot(load_features(feature_file), expected)["episode_accs"]
    default = CliRunner().invoke(main, ["fewshot", "ablation", "--features", str(feature_file), "--n-top", "8",
                                        "--sigma", "4", "--step-size", "0.5", "--layers", "6", "--dry-run"])
    assert default.exit_code == 0 and json.loads(default.output)["episodes"] == 1000


def test_episode_accuracies_are_percentages_of_queries():
    data = gaussian_features(spread=0.05, seed=6)  # tight clusters: every query right
    config = dataclasses.replace(FAST, method="simple", query=7)
    accs = episode_accuracies(data.features, data.base_mean, EpisodeSampler(data.labels), [0, 1, 2], config)
    assert accs.tolist() == [100.0, 100.0, 100.0]
