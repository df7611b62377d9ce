"""The diffusion layer and the three weight constructions (spec §2, §3.4, §11)."""

import copy
import math
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from diff_resnet import (
    Diffusion,
    FastDropout,
    KNNDiffusion,
    check_stability,
    diffusion_matrix,
    diffusion_step,
    dropout_bits,
    dropout_keep_mask,
    dropout_scale,
    fewshot_weights,
    gcn_normalized_adjacency,
    graph_laplacian,
    laplacian,
    max_eigenvalue,
    propagate,
    propagation_matrix,
    toy_weights,
)

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")


def random_graph(n: int, density: float = 0.02, seed: int = 0) -> sp.csr_matrix:
    """Unweighted, symmetric, loop-free adjacency (like the graph task's standardised A)."""
    a = sp.random(n, n, density=density, random_state=seed, format="csr")
    a = ((a + a.T) > 0).astype(np.float64).tolil()
    a.setdiag(0)
    return a.tocsr()


def three_laplacians() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    points = torch.randn(60, 2)
    adj_hat = gcn_normalized_adjacency(random_graph(60, 0.08))
    return {
        "toy": laplacian(toy_weights(points, sigma=0.5, n_top=10)),
        "fewshot": laplacian(fewshot_weights(torch.randn(60, 16), n_top=8, sigma=4)),
        "graph": graph_laplacian(adj_hat).to_dense(),
    }


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_dense_and_sparse_diffusion_agree(layout):
    for name, dense in three_laplacians().items():
        sparse = dense.to_sparse_coo() if layout == torch.sparse_coo else dense.to_sparse_csr()
        x = torch.randn(dense.shape[0], 5)
        torch.testing.assert_close(diffusion_step(x, sparse, 0.3, 7), diffusion_step(x, dense, 0.3, 7),
                                   msg=lambda m, n=name: f"{n}: {m}")
        torch.testing.assert_close(laplacian(dense.neg().fill_diagonal_(0).to_sparse(layout=layout)).to_dense(),
                                   laplacian(dense.neg().fill_diagonal_(0)))


def test_zero_steps_is_identity():
    x = torch.randn(60, 3)
    for lap in three_laplacians().values():
        assert torch.equal(diffusion_step(x, lap, 0.5, 0), x)
        assert torch.equal(Diffusion(0.5, 0)(x, lap), x)


def test_constant_columns_are_fixed_points():
    for name, lap in three_laplacians().items():
        ones = torch.ones(lap.shape[0], 1)
        torch.testing.assert_close(lap @ ones, torch.zeros_like(ones), atol=1e-6, rtol=0, msg=name)
        constant = torch.full((lap.shape[0], 3), 2.5)
        torch.testing.assert_close(diffusion_step(constant, lap, 0.5, 10), constant, msg=name)


def test_symmetric_weights_preserve_column_sums():
    laplacians = three_laplacians()
    for name in ("fewshot", "graph"):
        lap = laplacians[name]
        torch.testing.assert_close(lap, lap.T, msg=name)
        x = torch.randn(lap.shape[0], 4)
        out = diffusion_step(x, lap, 0.3, 25)
        torch.testing.assert_close(out.sum(dim=0), x.sum(dim=0), atol=1e-4, rtol=1e-5, msg=name)


def test_toy_weights_rows_sum_to_one_with_n_top_entries():
    points = torch.randn(200, 2, generator=torch.Generator().manual_seed(1))
    weights = toy_weights(points, sigma=0.5, n_top=25)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(200))
    assert ((weights > 0).sum(dim=1) == 25).all()
    assert (weights.diagonal() == weights.max(dim=1).values).all()  # self (distance 0) is the largest
    torch.testing.assert_close(laplacian(weights), torch.eye(200) - weights)


def test_toy_weights_use_sigma_squared():
    points = torch.tensor([[0.0, 0.0], [0.3, 0.4]])  # distance 0.5
    weights = toy_weights(points, sigma=0.5, n_top=2)
    expected = math.exp(-0.25 / 0.25)  # exp(−d²/σ²), not exp(−d²/2σ²)
    torch.testing.assert_close(weights[0, 1] / weights[0, 0], torch.tensor(expected))


def test_fewshot_weights_hand_computed():
    """Five points on a line, n_top = 3, sigma = 2: every row keeps itself (weight 1) and exactly one
    neighbour at weight e^{-1}, because the local scale is the distance to the nearest other point and
    the strict cut at the 3rd smallest distance drops the tie in row 2 (distance 3 to points 0 and 3)."""
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]])
    e = math.exp(-1.0)
    raw = torch.zeros(5, 5)
    raw.fill_diagonal_(1.0)
    for i, j in [(0, 1), (1, 0), (2, 1), (3, 2), (4, 3)]:
        raw[i, j] = e
    degree = 1 + e  # every row: 1 + e^{-1}
    normalised = fewshot_weights(x, n_top=3, sigma=2, symmetrize=False)
    torch.testing.assert_close(normalised, raw / degree)
    assert ((normalised > 0).sum(dim=1) == 3 - 1).all()
    torch.testing.assert_close(normalised.diagonal(), torch.full((5,), 1 / degree))
    symmetric = fewshot_weights(x, n_top=3, sigma=2)
    torch.testing.assert_close(symmetric, (raw + raw.T) / (2 * degree))
    assert symmetric[1, 2] == pytest.approx(e / 2 / degree)


def test_fewshot_weights_rank_properties_on_random_features():
    features = torch.randn(80, 32, generator=torch.Generator().manual_seed(3))
    normalised = fewshot_weights(features, n_top=8, sigma=4, symmetrize=False)
    assert ((normalised > 0).sum(dim=1) == 7).all()
    degree = 1 / normalised.diagonal()  # W_ii = 1 before normalisation → 1/D_ii after it
    raw = normalised * degree.sqrt()[:, None] * degree.sqrt()[None, :]
    torch.testing.assert_close(raw.sum(dim=1), degree)
    symmetric = fewshot_weights(features, n_top=8, sigma=4)
    torch.testing.assert_close(symmetric, symmetric.T)


def test_batched_fewshot_weights_equal_per_episode():
    episodes = torch.randn(4, 30, 16, generator=torch.Generator().manual_seed(4))
    batched = fewshot_weights(episodes, n_top=8, sigma=4)
    for b in range(4):
        torch.testing.assert_close(batched[b], fewshot_weights(episodes[b], n_top=8, sigma=4))
    x = torch.randn(4, 30, 3)
    stepped = diffusion_step(x, laplacian(batched), 0.5, 3)
    for b in range(4):
        torch.testing.assert_close(stepped[b], diffusion_step(x[b], laplacian(batched[b]), 0.5, 3))


def test_propagation_matrix_and_folded_matrix_equal_the_steps():
    for name, dense in three_laplacians().items():
        x = torch.randn(dense.shape[0], 4)
        reference = diffusion_step(x, dense, 0.4, 9)
        for lap in (dense, dense.to_sparse_csr(), dense.to_sparse_coo()):
            propagator = propagation_matrix(lap, 0.4)
            assert propagator.layout == lap.layout
            torch.testing.assert_close(propagate(x, propagator, 9), reference, msg=lambda m, n=name: f"{n}: {m}")
        torch.testing.assert_close(diffusion_matrix(dense, 0.4, 9) @ x, reference, msg=name)
        torch.testing.assert_close(Diffusion(0.4, 9)(x, dense), reference)
        torch.testing.assert_close(Diffusion(0.4, 9, fold_steps=True)(x, dense), reference)


def test_gcn_normalisation_and_graph_laplacians():
    adj = random_graph(40, 0.1, seed=2)
    dense = torch.as_tensor(adj.toarray(), dtype=torch.float32) + torch.eye(40)
    inv_sqrt = dense.sum(dim=1).rsqrt()
    expected = inv_sqrt[:, None] * dense * inv_sqrt[None, :]
    for source in (adj, torch.as_tensor(adj.toarray(), dtype=torch.float32).to_sparse_csr()):
        adj_hat = gcn_normalized_adjacency(source)
        assert adj_hat.layout == torch.sparse_csr
        torch.testing.assert_close(adj_hat.to_dense(), expected)
    adj_hat = gcn_normalized_adjacency(adj)
    renormalized = graph_laplacian(adj_hat)
    identity = graph_laplacian(adj_hat, kind="identity")
    assert renormalized.layout == identity.layout == torch.sparse_csr
    torch.testing.assert_close(renormalized.to_dense(), torch.diag(expected.sum(dim=1)) - expected)
    torch.testing.assert_close(identity.to_dense(), torch.eye(40) - expected)
    with pytest.raises(ValueError, match="renormalized"):
        graph_laplacian(adj_hat, kind="random-walk")


def test_max_eigenvalue_sparse_matches_dense():
    lap = graph_laplacian(gcn_normalized_adjacency(random_graph(600, 0.01, seed=5)))  # ARPACK path
    dense = lap.to_dense()
    assert max_eigenvalue(lap) == pytest.approx(float(torch.linalg.eigvalsh(dense.double()).max()), rel=1e-5)
    toy = laplacian(toy_weights(torch.randn(50, 2), 0.5, 10))  # non-symmetric: the spectral radius of I − W
    assert max_eigenvalue(toy) == pytest.approx(float(np.abs(np.linalg.eigvals(toy.double().numpy())).max()), rel=1e-6)
    assert max_eigenvalue(torch.tensor([[1.0, -2.0], [2.0, 1.0]])) == pytest.approx(5**0.5)  # |1 ± 2i|, not Re = 1


def test_stability_warning():
    complete = laplacian(torch.ones(5, 5))  # λ_max = 5
    with pytest.warns(RuntimeWarning, match="unstable"):
        assert check_stability(complete, 1.0) == pytest.approx(5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_stability(complete, 0.3)
        check_stability(three_laplacians()["toy"], 1.0)  # row-normalised W: always stable at γ = 1
    with pytest.warns(RuntimeWarning):
        out = Diffusion(1.0, 3)(torch.randn(5, 2), complete)  # warns, never refuses
    assert out.shape == (5, 2)


def test_diffusion_module_caches_reuses_and_copies():
    lap = three_laplacians()["graph"].to_sparse_csr()
    layer = Diffusion(0.25, 4, dropout=0.5)
    assert "step_size=0.25, num_steps=4" in repr(layer)
    x = torch.randn(60, 3)
    layer.eval()
    first = layer(x, lap)
    cached = layer.propagator(lap)
    assert layer.propagator(lap) is cached
    copied = copy.deepcopy(layer)  # sparse CSR tensors cannot be deep-copied: the cache is dropped
    torch.testing.assert_close(copied(x, lap), first)
    layer.train()
    assert not torch.equal(layer(x, lap), first)  # dropout before the steps in training mode
    with pytest.raises(ValueError, match="fold_steps"):
        Diffusion(0.5, 3, dropout=0.1, fold_steps=True)


def test_knn_diffusion_builds_constant_weights_from_the_batch():
    x = torch.randn(50, 2, requires_grad=True)
    layer = KNNDiffusion(1.0, 5, weights="toy", n_top=10, sigma=0.5)
    out = layer(x)
    expected = diffusion_step(x, laplacian(toy_weights(x.detach(), 0.5, 10)), 1.0, 5)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    episodes = torch.randn(3, 20, 8)
    batched = KNNDiffusion(0.5, 2, weights="fewshot", n_top=8, sigma=4)(episodes)
    torch.testing.assert_close(batched[1], diffusion_step(
        episodes[1], laplacian(fewshot_weights(episodes[1], 8, 4)), 0.5, 2))


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.9])
def test_dropout_keep_mask_rate_stream_and_strided_out(p):
    shape = (301, 257)  # an odd entry count: the last 64-bit word is only partly used
    mask = dropout_keep_mask(shape, p, generator=torch.Generator().manual_seed(3))
    assert mask.dtype == torch.bool and mask.shape == shape
    n = mask.numel()
    assert abs(mask.double().mean().item() - (1 - p)) < 4 * math.sqrt(p * (1 - p) / n)  # 4 sigma
    again = dropout_keep_mask(shape, p, generator=torch.Generator().manual_seed(3))
    assert torch.equal(mask, again)  # same generator state, same mask
    out = torch.zeros(2, 301, 3, 257, dtype=torch.bool)  # the batched graph path writes into such views
    dropout_keep_mask(shape, p, generator=torch.Generator().manual_seed(3), out=out[1, :, 2])
    assert torch.equal(out[1, :, 2], mask) and not out[0].any() and not out[1, :, :2].any()
    assert dropout_scale(p) == pytest.approx(1 / (1 - p), rel=1e-4)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        dropout_keep_mask(shape, 1.0)


def test_dropout_bits_are_exact_for_multiples_of_one_256th():
    """p = 0.25 and 0.5 (the paper's settings) take 8 bits per entry and are exact; 0.1 takes 16 bits."""
    assert [dropout_bits(p) for p in (0.0, 0.25, 0.5, 3 / 256, 0.1, 0.3)] == [8, 8, 8, 8, 16, 16]
    assert dropout_scale(0.25) == 4 / 3 and dropout_scale(0.5) == 2.0
    words = torch.Generator().manual_seed(5)
    mask = dropout_keep_mask((64,), 0.25, generator=words)  # one 64-bit word per 8 entries: 8 words
    raw = torch.empty(8, dtype=torch.int64).random_(-(2**63), None, generator=torch.Generator().manual_seed(5))
    assert torch.equal(mask, raw.view(torch.int8) >= 64 - 128)  # keep when the byte ≥ p·2⁸ − 2⁷


def test_fast_dropout_is_unbiased_inverted_dropout():
    layer = FastDropout(0.25)
    x = torch.ones(200, 300, requires_grad=True)
    torch.manual_seed(0)
    y = layer(x)
    kept = y != 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.75))
    assert abs(y.mean().item() - 1.0) < 0.02
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept)  # gradients flow through the kept entries only
    assert torch.equal(layer.eval()(x), x) and "p=0.25" in repr(layer)
