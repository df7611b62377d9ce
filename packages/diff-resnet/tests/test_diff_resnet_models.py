"""ToyNet and DiffusionNet: shapes, gradients, sparse features, init and checkpoint round trip."""

import pytest
import torch
from diff_resnet import (
    DiffusionNet,
    ToyNet,
    diffusion_step,
    gcn_normalized_adjacency,
    graph_laplacian,
    laplacian,
    toy_weights,
)
from diffcore.checkpoint import export_model, load_pretrained
from diffcore.testing import assert_close_state_dicts

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")


def small_graph(n: int = 30, features: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-normalised binary features and the renormalised graph Laplacian of a ring plus chords."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.arange(n)
    adj = torch.zeros(n, n)
    adj[rows, (rows + 1) % n] = 1
    adj[rows, (rows + 7) % n] = 1
    adj = ((adj + adj.T) > 0).float()
    x = (torch.rand(n, features, generator=g) < 0.3).float()
    x = x / x.sum(dim=1, keepdim=True).clamp_min(1)
    return x, graph_laplacian(gcn_normalized_adjacency(adj.to_sparse_csr()))


@pytest.mark.parametrize("num_steps", [0, 5])
def test_toynet_shapes_and_gradients(num_steps):
    points = torch.randn(40, 2)
    lap = laplacian(toy_weights(points, 0.5, 8))
    model = ToyNet(num_steps=num_steps)
    logits, hidden = model(points, lap, return_hidden=True)
    assert logits.shape == (40, 2) and hidden.shape == (40, 2)
    torch.nn.functional.cross_entropy(logits, torch.randint(0, 2, (40,))).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    torch.testing.assert_close(hidden, diffusion_step(model.convection(points), lap, 1.0, num_steps))


def test_toynet_folded_steps_and_trajectory_match_stepwise():
    points = torch.randn(50, 2)
    lap = laplacian(toy_weights(points, 0.5, 10))
    torch.manual_seed(0)
    stepwise = ToyNet(num_steps=37)
    torch.manual_seed(0)
    folded = ToyNet(num_steps=37, fold_steps=True)
    torch.testing.assert_close(folded(points, lap), stepwise(points, lap))
    steps, states = stepwise.hidden_trajectory(points, lap, max_frames=8)
    assert steps[0] == 0 and steps[-1] == 37 and len(steps) == len(states) <= 8
    torch.testing.assert_close(states[-1], stepwise(points, lap, return_hidden=True)[1])
    with pytest.raises(ValueError, match="Laplacian"):
        stepwise(points)


def test_diffusionnet_shapes_gradients_and_parameter_count():
    x, lap = small_graph()
    model = DiffusionNet(12, 4, step_size=0.25, num_steps=3, dropout=0.5)
    assert sum(p.numel() for p in model.parameters()) == 12 * 12 + 12 + 12 * 4 + 4
    assert list(model.state_dict()) == ["linear.weight", "linear.bias", "classifier.weight", "classifier.bias"]
    logits = model(x, lap)
    assert logits.shape == (30, 4)
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert "in_features=12, num_classes=4" in repr(model) and "num_steps=3" in repr(model)


@pytest.mark.parametrize("layout", [torch.sparse_csr, torch.sparse_coo])
def test_diffusionnet_sparse_features_equal_dense(layout):
    x, lap = small_graph()
    model = DiffusionNet(12, 4, step_size=0.25, num_steps=3, dropout=0.5).eval()
    dense_out = model(x, lap)
    dense_grad = torch.autograd.grad(dense_out.square().sum(), model.linear.weight)[0]
    sparse_out = model(x.to_sparse(layout=layout), lap)
    sparse_grad = torch.autograd.grad(sparse_out.square().sum(), model.linear.weight)[0]
    torch.testing.assert_close(sparse_out, dense_out)
    torch.testing.assert_close(sparse_grad, dense_grad)


def test_diffusionnet_dropout_only_between_diffusion_steps():
    x, lap = small_graph()
    no_diffusion = DiffusionNet(12, 4, step_size=0.25, num_steps=0, dropout=0.9).train()
    assert torch.equal(no_diffusion(x, lap), no_diffusion(x, lap))  # T = 0: no dropout at all
    with_diffusion = DiffusionNet(12, 4, step_size=0.25, num_steps=2, dropout=0.9).train()
    assert not torch.equal(with_diffusion(x, lap), with_diffusion(x, lap))


@pytest.mark.parametrize("cls, kwargs", [
    (ToyNet, {"num_steps": 4}),
    (DiffusionNet, {"in_features": 12, "num_classes": 4, "step_size": 0.25, "num_steps": 3, "dropout": 0.25}),
])
def test_reset_parameters_is_the_only_initialisation(cls, kwargs):
    torch.manual_seed(7)
    model = cls(**kwargs)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(7)
    model.reset_parameters()
    assert_close_state_dicts(model.state_dict(), initial)
    assert cls(**model.config).config == model.config


def test_checkpoint_round_trip(tmp_path):
    x, lap = small_graph()
    model = DiffusionNet(12, 4, step_size=0.25, num_steps=3, dropout=0.25).eval()
    export_model(model, tmp_path / "graph", name="diff_resnet.DiffusionNet", config=model.config,
                 package="diff_resnet")
    loaded = load_pretrained(tmp_path / "graph").eval()
    assert isinstance(loaded, DiffusionNet) and loaded.config == model.config
    assert_close_state_dicts(loaded.state_dict(), model.state_dict())
    torch.testing.assert_close(loaded(x, lap), model(x, lap))

    toy = ToyNet(num_steps=6, fold_steps=True)
    export_model(toy, tmp_path / "toy", name="diff_resnet.ToyNet", config=toy.config, package="diff_resnet")
    points = torch.randn(20, 2)
    toy_operator = laplacian(toy_weights(points, 0.5, 5))
    torch.testing.assert_close(load_pretrained(tmp_path / "toy")(points, toy_operator), toy(points, toy_operator))
