"""Fixtures shared by the difformer tests: generated graphs and files, small models (as factory fixtures,
since test modules cannot import conftest under --import-mode=importlib)."""

import numpy as np
import pytest
import torch
from difformer.graph import prepare_edges
from difformer.models import DIFFormer
from torch_geometric.data import Data


def random_graph_data(n: int, classes: int = 3, features: int = 6, seed: int = 0) -> Data:
    """A sparse random graph whose labels depend on the features (so a model can learn them)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long() if classes == 3 else torch.randint(0, classes, (n,), generator=g)
    edge_index, _ = prepare_edges(torch.randint(0, n, (2, 3 * n), generator=g), n)
    return Data(x=x, edge_index=edge_index, y=y)


def write_graph_file(path, n: int = 60, seed: int = 0, masks: bool = False) -> None:
    data = random_graph_data(n, seed=seed)
    arrays = {"x": data.x.numpy(), "edge_index": data.edge_index.numpy(), "y": data.y.numpy()}
    if masks:
        order = np.random.default_rng(seed).permutation(n)
        for key, part in (("train_mask", order[: n // 2]), ("val_mask", order[n // 2: 3 * n // 4]),
                          ("test_mask", order[3 * n // 4:])):
            mask = np.zeros((n, 2), dtype=bool)
            mask[part, :] = True
            arrays[key] = mask
    np.savez(path, **arrays)


def short_model(in_channels: int, out_channels: int, **kw) -> DIFFormer:
    return DIFFormer(in_channels, 8, out_channels, num_layers=2, dropout=0.0, use_weight=False, **kw)


@pytest.fixture
def make_graph():
    return random_graph_data


@pytest.fixture
def make_graph_file():
    return write_graph_file


@pytest.fixture
def make_model():
    return short_model
