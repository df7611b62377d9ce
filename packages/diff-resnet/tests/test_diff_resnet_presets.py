"""Every preset pinned field by field against the spec (``../shared/specs/diff-resnet.md`` §4, §5, §8).

The expected values are typed here from the spec's tables (and, where the spec is silent, from the documented
defaults of this package, marked "ours"), never read from our configs: a wrong preset value fails, and so does
a new config field nobody pinned.
"""

import dataclasses

import pytest
import torch
from diff_resnet.config import TOY_EXAMPLES, TOY_PRESETS
from diff_resnet.fewshot.backbone import backbone_config
from diff_resnet.fewshot.config import ABLATION_BASE, FEWSHOT_DATASETS, FEWSHOT_PRESETS
from diff_resnet.fewshot.episodes import _optimizer
from diff_resnet.graph.config import GRAPH_PRESETS

# §4.1: the network examples train 21 iterations of SGD with weight decay 5e-4; the scripts build a new
# SGD(momentum=0.9) before every step, so no momentum acts (quirk 3): momentum 0 reproduces them.
TOY_COMMON = {"sigma": 0.5, "step_size": 1.0, "momentum": 0.0, "weight_decay": 5e-4, "iterations": 21}
TOY_EXPECTED = {
    "two_moon": {"example": "two_moon", "n_per_class": 500, "noise": 0.05, "n_top": 25, "layers": 60, "lr": 1.0,
                 "seed": 40},
    "two_circle": {"example": "two_circle", "n_per_class": 500, "noise": 0.05, "n_top": 50, "layers": 200, "lr": 1.0,
                   "seed": 42},
    "two_spiral": {"example": "two_spiral", "n_per_class": 500, "noise": 0.1, "n_top": 25, "layers": 900, "lr": 0.8,
                   "seed": 42},
    # XOR: 400 points (4 discs of 100), no noise and no network (layers 0; lr, momentum and weight decay unused),
    # 201 plotted diffusion iterations.
    "xor": {"example": "xor", "n_per_class": 200, "noise": 0.0, "n_top": 20, "layers": 0, "lr": 1.0, "seed": 42,
            "iterations": 201},
}


@pytest.mark.parametrize("name", list(TOY_EXPECTED))
def test_toy_presets_are_the_spec_table(name):
    assert dataclasses.asdict(TOY_PRESETS[name]) == TOY_COMMON | TOY_EXPECTED[name]


def test_toy_presets_and_example_names_are_all_pinned():
    assert set(TOY_PRESETS) == set(TOY_EXPECTED)
    assert TOY_EXAMPLES == {"moons": "two_moon", "circles": "two_circle", "spirals": "two_spiral", "xor": "xor"}


# §4.2 and §5 (graph/train.py's defaults): Adam(0.01, 5e-4), ≤ 10,000 epochs, patience 50, seed 42, 100 splits ×
# 20 inits, 20 / 30 nodes per class, dropout 0.5; the released operator diag(rowsum Â) − Â (quirk 7); a run that
# reaches max_epochs is tested with its best weights (quirk 2, corrected by default).
GRAPH_COMMON = {"format": "npz", "dropout": 0.5, "lr": 0.01, "weight_decay": 5e-4, "max_epochs": 10_000,
                "patience": 50, "splits": 100, "inits": 20, "seed": 42, "train_per_class": 20, "val_per_class": 30,
                "laplacian": "renormalized", "legacy_test_last_at_max_epochs": False,
                "batch_runs": True, "batch_memory_gb": 8.0, "device": "cpu"}  # the last three: ours
GRAPH_EXPECTED = {
    "cora": {"dataset": "cora", "step_size": 0.25, "layers": 20, "dropout": 0.25},  # the README graph command
    "citeseer": {"dataset": "citeseer", "step_size": None, "layers": None},  # no published setting: required
    "pubmed": {"dataset": "pubmed", "step_size": None, "layers": None},
}


@pytest.mark.parametrize("name", list(GRAPH_EXPECTED))
def test_graph_presets_are_the_spec_table(name):
    assert set(GRAPH_PRESETS) == set(GRAPH_EXPECTED)
    assert dataclasses.asdict(GRAPH_PRESETS[name]) == GRAPH_COMMON | GRAPH_EXPECTED[name]


# §4.3 and §5 (fewshot/train.py's defaults): 5-way, 15 queries, 10,000 episodes, seed 1, 100 epochs of
# SGD(0.1, momentum 0.9, weight decay 1e-4) with MultiStepLR at 50 and 75, λ 0.5, α 0, rectification scale 10,
# LaplacianShot with 2 neighbours, 20 updates, tolerance 1e-6.
FEWSHOT_COMMON = {"method": "diffusion", "way": 5, "shot": 1, "query": 15, "episodes": 10_000, "seed": 1,
                  "step_size": 0.5, "n_top": 8, "sigma": 4, "lamda": 0.5, "alpha": 0.0, "mu": 0.0,
                  "raw_features": False, "epochs": 100, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
                  "milestones": (0.5, 0.75), "rectify_scale": 10.0, "laplacian_knn": 2, "laplacian_iters": 20,
                  "laplacian_tol": 1e-6, "batch_episodes": 100, "batched": True, "device": "cpu"}  # last three: ours
FEWSHOT_EXPECTED = {
    "mini-resnet18-1shot": {"layers": 6},  # README few-shot command
    "mini-resnet18-1shot-v2021": {"layers": 5},  # 2021 README
}


@pytest.mark.parametrize("name", list(FEWSHOT_EXPECTED))
def test_fewshot_presets_are_the_spec_table(name):
    assert set(FEWSHOT_PRESETS) == set(FEWSHOT_EXPECTED)
    assert dataclasses.asdict(FEWSHOT_PRESETS[name]) == FEWSHOT_COMMON | FEWSHOT_EXPECTED[name]


def test_ablation_base_is_the_ablation_script():
    """§4.3e: ablation.py runs 1000 episodes on raw features, μ 0 by default; the rest as train.py."""
    assert dataclasses.asdict(ABLATION_BASE) == FEWSHOT_COMMON | {"layers": 6, "episodes": 1000, "raw_features": True}


def test_episode_learning_rate_drops_tenfold_at_epochs_50_and_75():
    """The milestone fractions are an effect, not a label: a 100-epoch head's scheduler steps at 50 and 75."""
    optimizer, scheduler = _optimizer([torch.zeros(1, requires_grad=True)], FEWSHOT_PRESETS["mini-resnet18-1shot"])
    assert dict(scheduler.milestones) == {50: 1, 75: 1} and scheduler.gamma == 0.1
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.1, 0.9, 1e-4)


# §4.3a: SGD(0.1, 0.9, 5e-4), batch 256, label smoothing 0.1, MultiStepLR at ⌊0.5E⌋, ⌊0.75E⌋ (γ 0.1), seed 1;
# selection from epoch ⌊0.75E⌋ on with 1000 5-way 1-shot 15-query validation episodes; E = 100 (mini, tiered),
# 400 (CUB). §8: 64 / 351 / 100 base classes; (b) Resize(96) (CUB 120) → CenterCrop(84).
BACKBONE_EXPECTED = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "label_smoothing": 0.1,
                     "milestones": (0.5, 0.75), "lr_decay": 0.1, "select_from": 0.75, "val_episodes": 1000,
                     "val_way": 5, "val_shot": 1, "val_query": 15, "width": 64}  # width: conv4's, ours
DATASETS_EXPECTED = {"mini": (100, 64, 96), "tiered": (100, 351, 96), "cub": (400, 100, 120)}


@pytest.mark.parametrize("dataset", list(DATASETS_EXPECTED))
def test_backbone_recipes_and_datasets_are_the_spec(dataset):
    epochs, base_classes, resize = DATASETS_EXPECTED[dataset]
    config = backbone_config(dataset, "resnet18")
    fields = dataclasses.asdict(config)
    train = fields.pop("train")
    assert fields == BACKBONE_EXPECTED | {"dataset": dataset, "backbone": "resnet18"}
    assert (train["epochs"], train["batch_size"], train["seed"]) == (epochs, 256, 1)
    assert (train["monitor"], train["monitor_mode"], train["restore_best"]) == ("val_proto_acc", "max", True)
    spec = FEWSHOT_DATASETS[dataset]
    assert (spec.kind, spec.image_size, spec.eval_resize, spec.num_base_classes) == ("folder", 84, resize,
                                                                                     base_classes)
    assert (spec.mean, spec.std, spec.augment) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "imagenet")
