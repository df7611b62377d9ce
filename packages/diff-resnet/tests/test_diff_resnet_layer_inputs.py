"""The public layer API refuses bad inputs with one clear error (a ConfigError, i.e. a ValueError) instead of
NaN features, an index error deep in topk, or a crash inside LAPACK. One row per case."""

import math

import pytest
import torch
from diff_resnet import (
    Diffusion,
    KNNDiffusion,
    check_stability,
    diffusion_matrix,
    diffusion_step,
    fewshot_weights,
    laplacian,
    max_eigenvalue,
    propagation_matrix,
    toy_weights,
)
from diffcore.errors import ConfigError

POINTS = torch.randn(30, 2, generator=torch.Generator().manual_seed(0))
EPISODE = torch.randn(20, 8, generator=torch.Generator().manual_seed(1))
GOOD_L = laplacian(toy_weights(POINTS, 0.5, 5))
NAN_W = torch.ones(4, 4).fill_diagonal_(float("nan"))
INF_L = GOOD_L.clone().index_put_((torch.tensor([0]), torch.tensor([1])), torch.tensor(math.inf))
DUPLICATES = torch.cat([EPISODE[:16], EPISODE[:1].expand(4, 8)])  # row 0 and three copies of it


CASES = [
    # (id, call, expected message fragment)
    ("fewshot-sigma-is-a-rank-from-2", lambda: fewshot_weights(EPISODE, 8, sigma=1), "sigma=1 must lie in [2, 20]"),
    ("fewshot-n-top-above-points", lambda: fewshot_weights(EPISODE, n_top=21, sigma=4), "n_top=21 must lie in [2, 20]"),
    ("fewshot-sigma-not-an-integer", lambda: fewshot_weights(EPISODE, n_top=8, sigma=0.5), "sigma is a rank"),
    ("fewshot-duplicate-points", lambda: fewshot_weights(DUPLICATES, n_top=8, sigma=4), "exact duplicates"),
    ("fewshot-nan-features", lambda: fewshot_weights(EPISODE.clone().fill_(math.nan)), "non-finite"),
    ("toy-n-top-above-points", lambda: toy_weights(POINTS, 0.5, n_top=31), "n_top=31 must lie in [1, 30]"),
    ("toy-sigma-zero", lambda: toy_weights(POINTS, sigma=0.0), "sigma is the Gaussian length scale"),
    ("toy-sigma-underflows", lambda: toy_weights(POINTS, sigma=1e-30), "σ² underflows"),
    ("knn-fewshot-sigma-as-length", lambda: KNNDiffusion(0.5, 2, weights="fewshot", sigma=0.5), "sigma is a rank"),
    ("knn-n-top-above-batch", lambda: KNNDiffusion(0.5, 2, weights="fewshot", n_top=40)(EPISODE), "n_top=40"),
    ("knn-unknown-weights", lambda: KNNDiffusion(0.5, 2, weights="gaussian"), "weights must be 'toy' or 'fewshot'"),
    ("laplacian-of-nan-weights", lambda: laplacian(NAN_W), "the weight matrix W has 4 non-finite"),
    ("laplacian-of-sparse-nan-weights", lambda: laplacian(NAN_W.to_sparse_csr()), "non-finite"),
    ("steps-on-inf-laplacian", lambda: diffusion_step(POINTS, INF_L, 0.5, 3), "the Laplacian L has 1 non-finite"),
    ("stability-of-nan-laplacian", lambda: check_stability(laplacian(torch.ones(4, 4)) * math.nan, 1.0),
     "non-finite"),
    ("eigenvalue-of-nan-matrix", lambda: max_eigenvalue(torch.full((4, 4), math.nan)), "non-finite"),
    ("layer-on-inf-laplacian", lambda: Diffusion(0.5, 3)(POINTS, INF_L), "non-finite"),
    ("negative-step-size", lambda: Diffusion(-1.0, 3), "step size must be a finite number > 0"),
    ("nan-step-size", lambda: propagation_matrix(GOOD_L, math.nan), "step size must be a finite number > 0"),
    ("negative-steps", lambda: Diffusion(0.5, -1), "num_steps must be ≥ 0"),
    ("folded-negative-steps", lambda: diffusion_matrix(GOOD_L, 0.5, -2), "num_steps must be ≥ 0"),
    ("fold-with-dropout", lambda: Diffusion(0.5, 3, dropout=0.2, fold_steps=True), "fold_steps needs dropout = 0"),
]


@pytest.mark.parametrize(("call", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_layer_input_is_one_clear_error(call, message):
    with pytest.raises(ConfigError) as error:
        call()
    assert message in str(error.value) and "\n" not in str(error.value)
    assert isinstance(error.value, ValueError)  # library users can catch the standard exception


def test_knn_diffusion_fewshot_defaults_are_the_papers_ranks():
    """KNNDiffusion(weights="fewshot") used to take the toy's σ = 0.5 as a rank (int 0); its defaults are now
    the few-shot pipeline's n_top 8, σ 4, equal to passing them."""
    layer = KNNDiffusion(0.5, 3, weights="fewshot")
    assert (layer.n_top, layer.sigma) == (8, 4)
    torch.testing.assert_close(layer(EPISODE), KNNDiffusion(0.5, 3, weights="fewshot", n_top=8, sigma=4)(EPISODE))
    assert torch.isfinite(layer(EPISODE)).all()
    assert (KNNDiffusion(1.0, 2).n_top, KNNDiffusion(1.0, 2).sigma) == (25, 0.5)
