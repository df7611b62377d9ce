"""The few-shot protocol: splits (§15.4), batched heads = one-at-a-time Adam, 100 % on a separable case."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffclassify.config import HeadConfig
from diffclassify.data import first_per_class, next_per_class, random_per_class
from diffclassify.features import FeatureSet
from diffclassify.fewshot import check_features, fit_heads, plan_runs
from diffclassify.heads import HeadRun, head_generator, init_head, train_heads
from diffcore.errors import ConfigError, DataError
from torch import nn


def test_first_per_class_is_deterministic_balanced_and_in_dataset_order():
    labels = np.array([2, 0, 1, 0, 2, 1, 0, 1, 2, 0])
    rows = first_per_class(labels, 2)
    assert rows.tolist() == [1, 3, 2, 5, 0, 4]  # class-major, dataset order within a class
    assert np.bincount(labels[rows]).tolist() == [2, 2, 2]
    assert first_per_class(labels, 2).tolist() == rows.tolist()
    nxt = next_per_class(labels, 2, 1)
    assert nxt.tolist() == [6, 7, 8] and not set(nxt) & set(rows)
    with pytest.raises(DataError, match="class 1 has 3 images, fewer than the 4"):
        first_per_class(labels, 4)
    drawn = random_per_class(labels, 2, np.random.default_rng(0))
    assert np.bincount(labels[drawn]).tolist() == [2, 2, 2]


def toy_features(n_per_class: int = 30, classes: int = 3, dim: int = 3, gap: float = 4.0, seed: int = 0,
                 meta: dict | None = None) -> FeatureSet:
    """Separable Gaussian blobs; train and test drawn independently."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(classes, dim) * gap

    def split(n):
        labels = torch.arange(classes).repeat(n)
        return centres[labels] + 0.3 * torch.randn(len(labels), dim, generator=g), labels

    xtr, ytr = split(n_per_class)
    xte, yte = split(10)
    return FeatureSet(xtr, ytr, torch.arange(len(ytr)), xte, yte, torch.arange(len(yte)),
                      {"source": "pixels", "dataset": "toy", "num_classes": classes, "timesteps": [], **(meta or {})})


@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_tiny_separable_case_reaches_100_percent(head, standardize):
    rows = fit_heads(toy_features(), head, (1, 5), [0, 1, 2], HeadConfig(epochs=60, lr=0.05, standardize=standardize))
    assert [r["per_class"] for r in rows] == [1, 5]
    for row in rows:
        assert row["accs"] == [100.0, 100.0, 100.0] and row["acc_mean"] == 100.0 and row["acc_std"] == 0.0
        assert row["seeds"] == 3 and row["test_images"] == 30 and row["head"] == head
        assert row["standardized"] == standardize


def test_untrained_heads_are_not_perfect():
    """The 100 % above is learned: with the smallest learning rate and one epoch, heads stay near chance."""
    rows = fit_heads(toy_features(), "linear", (1,), [0, 1, 2], HeadConfig(epochs=1, lr=1e-6))
    assert rows[0]["acc_mean"] < 90


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_batched_heads_equal_one_at_a_time_torch_adam(kind):
    torch.manual_seed(0)
    x, y = torch.randn(200, 7), torch.randint(0, 4, (200,))
    runs = [HeadRun(s, seed, (np.arange(4 * s) * 7) % 200) for s in (1, 3, 9) for seed in (0, 1)]
    batched = train_heads(kind, x, y, runs, 4, epochs=5, batch_size=8, hidden=16)
    for g, run in enumerate(runs):
        gen = head_generator(run.seed, run.per_class, kind)
        init = init_head(kind, 7, 4, 16, gen)
        model = nn.Linear(7, 4) if kind == "linear" else nn.Sequential(nn.Linear(7, 16), nn.ReLU(), nn.Linear(16, 4))
        model.load_state_dict({k.replace("fc1", "0").replace("fc2", "2"): v for k, v in init.items()})
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        rows = torch.as_tensor(run.train_rows)
        for _ in range(5):
            order = rows[torch.randperm(len(rows), generator=gen)]
            for start in range(0, len(order), 8):
                batch = order[start:start + 8]
                opt.zero_grad()
                F.cross_entropy(model(x[batch]), y[batch]).backward()
                opt.step()
        for got, want in zip(batched.values(), model.parameters(), strict=True):
            torch.testing.assert_close(got[g], want.detach(), atol=1e-6, rtol=1e-5)


def test_a_heads_result_does_not_depend_on_its_batch_mates():
    fs = toy_features(gap=0.5)
    alone = fit_heads(fs, "mlp", (5,), [1], HeadConfig(epochs=5))[0]["accs"]
    together = fit_heads(fs, "mlp", (1, 5, 10), [0, 1], HeadConfig(epochs=5))[1]["accs"][1]
    assert alone == [together]


def test_train_next_rows_never_overlap_and_sizes_are_checked():
    fs = toy_features(n_per_class=10)
    runs = plan_runs(fs, (2, 4), [0], HeadConfig(test_source="train-next", test_per_class=3))
    for run in runs:
        assert not set(run.train_rows) & set(run.eval_rows)
        assert np.bincount(fs.train_labels.numpy()[run.eval_rows]).tolist() == [3, 3, 3]
    rows = fit_heads(fs, "linear", (2,), [0], HeadConfig(test_source="train-next"))
    assert rows[0]["test_images"] == 6  # the original's n_test = s
    with pytest.raises(ConfigError, match="--per-class 11 is larger than class 0, which has 10 training images"):
        plan_runs(fs, (11,), [0], HeadConfig())
    with pytest.raises(ConfigError, match="plus 3 train-next"):
        plan_runs(fs, (8,), [0], HeadConfig(test_source="train-next", test_per_class=3))
    with pytest.raises(ConfigError, match="--split first"):
        plan_runs(fs, (2,), [0], HeadConfig(test_source="train-next", split="random"))


def test_test_split_is_separate_and_subsettable():
    fs = toy_features()
    rows = fit_heads(fs, "linear", (2,), [0], HeadConfig(test_per_class=4))
    assert rows[0]["test_images"] == 12
    with pytest.raises(ConfigError, match="--test-per-class 11 is larger"):
        plan_runs(fs, (2,), [0], HeadConfig(test_per_class=11))


def test_random_split_differs_per_seed():
    fs = toy_features()
    runs = plan_runs(fs, (3,), [0, 1], HeadConfig(split="random"))
    assert runs[0].train_rows.tolist() != runs[1].train_rows.tolist()
    first = plan_runs(fs, (3,), [0, 1], HeadConfig())
    assert first[0].train_rows.tolist() == first[1].train_rows.tolist()


def test_features_of_another_dataset_or_source_are_refused():
    fs = toy_features()
    check_features(fs, "f", dataset="toy", source="pixels")
    with pytest.raises(ConfigError, match="features of dataset 'toy', not 'mnist'"):
        check_features(fs, "f", dataset="mnist")
    with pytest.raises(ConfigError, match="holds 'pixels' features, not 'ddpm'"):
        check_features(fs, "f", source="ddpm")


def test_standardization_uses_the_training_rows_only():
    from diffclassify.fewshot import standardized

    fs = toy_features()
    z = standardized(fs)
    torch.testing.assert_close(z.train_features.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.train_features.std(0), torch.ones(3), atol=1e-5, rtol=0)
    mean, std = fs.train_features.mean(0), fs.train_features.std(0)
    torch.testing.assert_close(z.test_features, (fs.test_features - mean) / std)
