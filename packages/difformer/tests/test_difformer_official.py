"""DIFFormer against the official code's own outputs (``../shared/fixtures/difformer``, qitianwu/DIFFormer 89af3b2).

Every case stores an official module's state dict (official keys), fixed inputs and what the official code computed
from them (README of the fixtures folder). Our model is built from that state dict by the converter users run
(:func:`difformer.convert.convert_official_state_dict`; the ``difformer convert`` command for one case) and must give
the same outputs, and gradients where stored, within the tolerance stated per case below (about 10× the difference
measured when the fixtures were made, ``tolerance_seen`` in each json). Intended differences are checked both ways:
the spatial-temporal case has weighted edges and the original's broadcast loss, so our default (weighted degrees,
per-node MSE) must differ from the official numbers and ``--reproduce-original`` must give them.
"""

import json

import pytest
import torch
from click.testing import CliRunner
from diffcore.checkpoint import load_pretrained
from diffcore.config import from_dict
from diffcore.testing import load_official_case, official_cases
from difformer import temporal
from difformer.cli import main
from difformer.config import ModelConfig, TemporalConfig
from difformer.convert import convert_official_state_dict
from difformer.datasets import TemporalSignal

PACKAGE = "difformer"

#: case → (atol of the outputs, atol of the gradients or None): ~10× ``tolerance_seen`` (max |diff|) of its json.
TOLERANCES = {
    "simple_graph": (1e-5, None),  # float32, seen 9.5e-7
    "simple_graph_wv": (1e-5, None),  # float32, seen 7.2e-7
    "simple_graph_gw08": (2e-6, None),  # float32, seen 1.8e-7
    "simple_nograph": (2e-14, None),  # float64, seen 1.3e-15
    "sigmoid_nograph": (2e-14, 3e-12),  # float64, seen 2.0e-15; gradients seen 2.3e-13 (rel 7.5e-16)
    "sigmoid_nograph_wv": (2e-14, None),  # float64, seen 2.2e-15
    "temporal_loss": (2e-6, None),  # float32, seen 1.8e-7 (y_hat), 6e-8 / 1.2e-7 (losses)
}
NODE_CASES = sorted(set(TOLERANCES) - {"temporal_loss"})


def test_every_stored_case_is_checked():
    """A new case in the fixtures folder must get a check here, not be ignored."""
    stored = official_cases(PACKAGE)
    if not stored:
        pytest.skip("official reference fixtures not available: set $DIFFNETS_FIXTURES or put them in "
                    "../shared/fixtures")
    assert set(stored) == set(TOLERANCES)


def model_config(meta: dict, **changes) -> ModelConfig:
    """The case's official constructor switches as our :class:`ModelConfig`; every field they do not name (qk_norm,
    degree_norm, block_size) keeps our default, unless ``changes`` sets it."""
    args = meta["constructor_args"]
    return ModelConfig(hidden_channels=args["hidden_channels"], num_layers=args["num_layers"],
                       num_heads=args["num_heads"], kernel=args["kernel"], alpha=args["alpha"],
                       dropout=args["dropout"], use_bn=args["use_bn"], use_residual=args["use_residual"],
                       use_graph=args["use_graph"], use_weight=args["use_weight"],
                       use_source=args.get("use_source", False),  # the spatial-temporal copy has neither switch
                       graph_weight=float(args.get("graph_weight", -1)), **changes)


@pytest.mark.parametrize("name", NODE_CASES)
@pytest.mark.parametrize("degree_norm", ["weighted", "count"])
def test_node_classification_model_equals_official(name, degree_norm):
    """``node classification/difformer.py``: logits (and d Σ logits² / dθ where stored). The graphs have unit
    edge weights, so our default weighted degree and the original's edge count (quirk 6) must both agree."""
    case = load_official_case(PACKAGE, name)
    atol, grad_atol = TOLERANCES[name]
    model = convert_official_state_dict(case.state, model_config(case.meta, degree_norm=degree_norm)).eval()
    x, edge_index = case.inputs["x"], case.inputs["edge_index"]
    logits = model(x, edge_index)
    case.assert_close("logits", logits, case.outputs["logits"], atol=atol)
    if case.grads:
        assert case.meta["grad_loss"] == "sum(output.logits**2)"
        params = dict(model.named_parameters())
        assert set(case.grads) == set(params), "every parameter's official gradient is stored under its own key"
        grads = torch.autograd.grad(logits.square().sum(), list(params.values()))
        for key, grad in zip(params, grads, strict=True):
            case.assert_close(f"grad.{key}", grad, case.grads[key], atol=grad_atol)


def test_convert_command_on_official_weights(tmp_path):
    """``difformer convert`` (the path users take for the released ``.pkl`` files, saved from ``nn.DataParallel``)
    on official weights: the proteins-s switches are those of ``simple_graph_wv`` (simple kernel, graph branch,
    LayerNorm, residual, W_V, plain sum), so the exported model gives the official logits."""
    case = load_official_case(PACKAGE, "simple_graph_wv")
    torch.save({f"module.{k}": v for k, v in case.state.items()}, tmp_path / "ogbn-proteins-difformer.pkl")
    result = CliRunner().invoke(main, ["convert", str(tmp_path / "ogbn-proteins-difformer.pkl"), str(tmp_path / "out"),
                                       "--preset", "proteins-s"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    model = load_pretrained(tmp_path / "out").eval()
    case.assert_close("logits (difformer convert)", model(case.inputs["x"], case.inputs["edge_index"]),
                      case.outputs["logits"], atol=TOLERANCES["simple_graph_wv"][0])


def resolved_temporal_config(tmp_path, *flags: str) -> TemporalConfig:
    """The config ``difformer temporal`` resolves for ``flags`` (``--dry-run`` on a small file of the chickenpox
    layout, which validation needs)."""
    path = tmp_path / "signal.json"
    if not path.exists():
        fx = torch.randn(30, 3, generator=torch.Generator().manual_seed(0)).tolist()
        path.write_text(json.dumps({"edges": [[0, 1], [1, 0], [0, 0], [1, 1], [2, 2]], "node_ids": {}, "FX": fx}))
    result = CliRunner().invoke(main, ["temporal", "--dataset", str(path), *flags, "--dry-run",
                                       "--output-dir", str(tmp_path / "out")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return from_dict(TemporalConfig, json.loads(result.output[result.output.index("{"):]))


def test_temporal_default_differs_and_reproduce_original_equals_official(tmp_path):
    """``spatial-temporal/{difformer,eval}.py`` on 5 snapshots of a weighted graph: the model output ``y_hat`` and
    the official ``evaluate`` (the [N, 1] − [N] broadcast MSE, quirk 1), through our snapshot batching, training
    loss and test metrics. Default: weighted GCN degrees and the per-node MSE, both different from the original;
    ``--reproduce-original``: edge-count degrees (quirk 6) and the broadcast MSE, equal to it."""
    case = load_official_case(PACKAGE, "temporal_loss")
    atol = TOLERANCES["temporal_loss"][0]
    x, y, edge_index, weight = (case.inputs[k] for k in ("x", "y", "edge_index", "edge_weight"))
    signal = TemporalSignal(x, y, (edge_index,), (weight,))
    steps = range(x.shape[0])

    def computed(config: TemporalConfig):
        """Output, training loss and test metrics on the 5 snapshots under ``config``'s degree and loss."""
        switches = model_config(case.meta, degree_norm=config.model.degree_norm)
        model = convert_official_state_dict(case.state, switches).eval()
        batch = temporal.snapshots(signal, steps, config)  # Â built with the config's degree normalisation
        with torch.no_grad():
            return (model(batch.x, batch.adj), temporal._loss_fn(config.legacy_broadcast_mse)(model, batch),
                    temporal.test_metrics(model, batch))

    legacy = resolved_temporal_config(tmp_path, "--reproduce-original")
    y_hat, loss, metrics = computed(legacy)
    case.assert_close("y_hat (--reproduce-original)", y_hat, case.outputs["y_hat"], atol=atol)
    case.assert_close("training loss (--reproduce-original)", loss, case.outputs["broadcast_mse"], atol=atol)
    case.assert_close("test_broadcast_mse", torch.tensor(metrics["test_broadcast_mse"]), case.outputs["broadcast_mse"],
                      atol=atol)
    # not official: the generator's per-node MSE of the official y_hat, the metric our default reports
    case.assert_close("test_mse", torch.tensor(metrics["test_mse"]), case.outputs["per_node_mse"], atol=atol)

    default_y_hat, default_loss, _ = computed(resolved_temporal_config(tmp_path))
    assert (default_y_hat - case.outputs["y_hat"]).abs().max() > 0.05, \
        "the default weighted degree should differ from the original's edge count on a weighted graph"
    assert (default_loss - case.outputs["broadcast_mse"]).abs() > 0.01, \
        "the default training loss should be the per-node MSE, not the original's broadcast"
