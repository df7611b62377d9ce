"""Diff-ResNet against the official code's own outputs (``../shared/fixtures/diff-resnet``, README there).

Each case holds inputs, the official module's state dict under its official keys and the outputs the official
code (shwangtangjun/Diff-ResNet at 687f342) computed from them, in float64. Our models load that state dict
strictly (the official keys are ours), run the paths a user's command runs (the graph protocol's stacked engine,
the few-shot episodes' batched head) as well as the plain modules, and must give the official numbers. Neither
case's ``notes`` lists an intended difference, so every output is compared as it is.

Tolerances are about ten times the largest difference measured when the fixtures were made (each json's
``tolerance_seen``), per case and output, in :data:`TOLERANCES`.
"""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from diff_resnet.diffusion import (
    Diffusion,
    KNNDiffusion,
    diffusion_matrix,
    diffusion_step,
    fewshot_weights,
    gcn_normalized_adjacency,
    graph_laplacian,
    laplacian,
)
from diff_resnet.fewshot.episodes import head_logits, preprocess, rectified_prototypes
from diff_resnet.graph.data import GraphData, prepare_graph
from diff_resnet.graph.engine import GraphOperands, StackedDiffusionNet
from diff_resnet.models import DiffusionNet, ToyNet
from diffcore.data import SparseGraph
from diffcore.testing import OfficialCase, load_official_case, official_cases, shared_fixtures_root

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")

PACKAGE = "diff-resnet"

#: (atol, rtol) per case and output: about 10 × the json's ``tolerance_seen`` (float64 everywhere; the graph
#: pipeline's own float32 features and Laplacian are compared at float32 rounding).
TOLERANCES = {
    "graph_diffusion_net": {
        "adj_hat": (2e-15, 0.0),          # seen 2.2e-16
        "layer_once": (1e-15, 0.0),       # seen 1.1e-16
        "logits": (3e-15, 0.0),           # seen 2.8e-16
        "hidden": (3e-15, 0.0),           # not listed; as the logits it feeds
        "grad": (4e-14, 0.0),             # seen 3.6e-15
        "float32 pipeline": (1e-6, 0.0),  # prepare_graph stores features and L in float32 (rounding 6e-8 · |L|)
    },
    "fewshot_episode": {
        "inputs": (1e-15, 0.0),               # seen 0.0
        "weight": (2e-15, 0.0),               # seen 1.7e-16
        "laplacian": (2e-15, 0.0),            # seen 2.2e-16
        "diffused": (2e-15, 0.0),             # seen 1.7e-16
        "logits": (3e-15, 0.0),               # seen 3.3e-16
        "rectified_prototype": (1e-15, 0.0),  # seen 1.1e-16
    },
}


def _close(case: OfficialCase, what: str, actual: torch.Tensor, expected: torch.Tensor, key: str) -> None:
    atol, rtol = TOLERANCES[case.name][key]
    case.assert_close(what, actual, expected, atol=atol, rtol=rtol)


# ------------------------------------------------------------------------------------------- graph


def _adjacency(edge_index: torch.Tensor, n: int) -> torch.Tensor:
    """The raw A of the case (both directions listed, weight 1), float64 sparse (a scipy matrix would become the
    pipeline's float32)."""
    return torch.sparse_coo_tensor(edge_index, torch.ones(edge_index.shape[1], dtype=torch.float64), (n, n),
                                   check_invariants=True)


def check_graph_diffusion_net(case: OfficialCase) -> None:
    """``DiffusionNet(24, 4, step 0.25, 20 steps, dropout 0.25)`` in eval mode, its gradients, one diffusion layer.

    Our Laplacian is built from the raw edge list by the pipeline's functions (not taken from the case's Â):
    ``graph_laplacian(gcn_normalized_adjacency(A))`` must be the official ``diagonal − adj``.
    """
    args, flags = case.meta["constructor_args"], case.meta["flags"]
    step_size, num_steps = flags["step_size"], flags["num_steps"]
    x, n = case.inputs["features"], case.inputs["features"].shape[0]
    adj = _adjacency(case.inputs["edge_index"], n)
    adj_hat = gcn_normalized_adjacency(adj)
    _close(case, "Â = gcn_normalized_adjacency(A)", adj_hat.to_dense(), case.inputs["adj_hat"], "adj_hat")
    lap = graph_laplacian(adj_hat)
    for what, once in [("diffusion_step", diffusion_step(x, lap, step_size, 1)),
                       ("Diffusion module", Diffusion(step_size, 1)(x, lap))]:
        _close(case, f"layer_once ({what}, one step)", once, case.outputs["layer_once"], "layer_once")

    model = DiffusionNet(args["n_features"], args["num_classes"], step_size, num_steps, args["dropout"]).double()
    model.load_state_dict(case.state, strict=True)
    model.eval()
    seen = []  # the classifier's input: h after the diffusion steps
    model.classifier.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0].detach()))
    features = x.to_sparse_csr()  # the pipeline's features are sparse: linear(X) is a sparse matmul
    logits = model(features, lap)
    _close(case, "hidden (after the diffusion steps)", seen[0], case.outputs["hidden"], "hidden")
    _close(case, "logits (DiffusionNet)", logits, case.outputs["logits"], "logits")
    logits.square().sum().backward()  # grad_loss: sum(output.logits ** 2)
    assert set(case.grads) == {name for name, _ in model.named_parameters()}
    for name, parameter in model.named_parameters():
        _close(case, f"grad.{name} (DiffusionNet)", parameter.grad, case.grads[name], "grad")

    # The protocol's engine (graph/engine.py): stacked runs, scipy products, the custom autograd functions.
    data = GraphData(features=features, laplacian=lap, labels=torch.zeros(n, dtype=torch.long), num_edges=0)
    operands = GraphOperands.build(data, step_size, args["dropout"])
    stacked = StackedDiffusionNet([model])
    stacked.eval()  # evaluation: the classifier first, the steps on the logits
    with torch.no_grad():
        _close(case, "logits (StackedDiffusionNet, eval)", stacked(operands)[:, 0], case.outputs["logits"], "logits")
    stacked.train()  # training without dropout masks: the steps on the hidden state, the custom backward
    logits = stacked(operands, keep=None)[:, 0]
    _close(case, "logits (StackedDiffusionNet, train without masks)", logits, case.outputs["logits"], "logits")
    logits.square().sum().backward()
    stacked_grads = {"linear.weight": stacked.linear_weight.grad[:, 0].T, "linear.bias": stacked.linear_bias.grad[0],
                     "classifier.weight": stacked.classifier_weight.grad[0],
                     "classifier.bias": stacked.classifier_bias.grad[0]}
    for name, grad in stacked_grads.items():
        _close(case, f"grad.{name} (StackedDiffusionNet)", grad, case.grads[name], "grad")

    # The whole float32 pipeline of `diff-resnet graph`: binarise + row-normalise the features, Â, L.
    binary = sp.csr_matrix((x > 0).numpy().astype(np.float32))
    graph = SparseGraph(adj=sp.csr_matrix(adj.to_dense().numpy().astype(np.float32)), attr=binary,
                        labels=np.zeros(n, dtype=np.int64))
    prepared = prepare_graph(graph)
    _close(case, "features (prepare_graph, float32)", prepared.features.to_dense(), x, "float32 pipeline")
    _close(case, "Laplacian (prepare_graph, float32)", prepared.laplacian.to_dense(),
           case.inputs["diagonal"] - case.inputs["adj_hat"], "float32 pipeline")


# ----------------------------------------------------------------------------------------- few-shot


def check_fewshot_episode(case: OfficialCase) -> None:
    """One 5-way 1-shot episode: preprocessing, W′ (n_top 8, σ rank 4), L, 6 steps of 0.5, the head, prototypes.

    Every step starts from our own previous output, as in a run.
    """
    flags = case.meta["flags"]
    n_top, sigma, step_size, num_steps, way = (flags[k] for k in ("n_top", "sigma", "step_size", "num_steps", "way"))
    support, query = preprocess(case.inputs["support"][None], case.inputs["query"][None], case.inputs["base_mean"],
                                shift=True)
    x = torch.cat([support, query], dim=1)[0]
    _close(case, "inputs (preprocess, shift=True)", x, case.outputs["inputs"], "inputs")
    weights = fewshot_weights(x, n_top, sigma)
    _close(case, "weight (fewshot_weights)", weights, case.outputs["weight"], "weight")
    lap = laplacian(weights)
    _close(case, "laplacian", lap, case.outputs["laplacian"], "laplacian")
    folded = diffusion_matrix(lap, step_size, num_steps)
    for what, diffused in [("diffusion_step", diffusion_step(x, lap, step_size, num_steps)),
                           ("Diffusion module", Diffusion(step_size, num_steps)(x, lap)),
                           ("diffusion_matrix (folded)", folded @ x),
                           # the layer's default ranks are the paper's 8 and 4
                           ("KNNDiffusion(weights='fewshot')", KNNDiffusion(step_size, num_steps, "fewshot")(x))]:
        _close(case, f"diffused ({what})", diffused, case.outputs["diffused"], "diffused")

    head = ToyNet(x.shape[1], way, step_size, num_steps).double()
    head.load_state_dict(case.state, strict=True)
    _close(case, "logits (ToyNet head)", head(x, lap), case.outputs["logits"], "logits")
    # The batched episodes' head (fewshot eval): stacked parameters and the folded (I − γL)^T.
    stacked = {key: value[None] for key, value in case.state.items()}
    logits = head_logits(stacked, x[None], folded[None])[0]
    _close(case, "logits (head_logits, batched path)", logits, case.outputs["logits"], "logits")

    proto = rectified_prototypes(support, x[None], way)[0]
    _close(case, "rectified_prototype", proto, case.outputs["rectified_prototype"], "rectified_prototype")


CHECKS = {"graph_diffusion_net": check_graph_diffusion_net, "fewshot_episode": check_fewshot_episode}


def test_every_official_case_is_checked():
    """A case added to the fixtures without a check here fails this test instead of being ignored."""
    if shared_fixtures_root() is None:
        pytest.skip("official reference fixtures not available: set $DIFFNETS_FIXTURES or put them in "
                    "../shared/fixtures")
    assert set(official_cases(PACKAGE)) == set(CHECKS) == set(TOLERANCES)


@pytest.mark.parametrize("name", official_cases(PACKAGE))
def test_official_case(name):
    case = load_official_case(PACKAGE, name)
    assert case.dtype == torch.float64
    CHECKS[name](case)
