"""Against the official code's own outputs (``../shared/fixtures/dianet/``, gbup-group/DIANet at 51685ca).

Every stored case is run through the converter users run and compared with what the official
``models/cifar/dia_resnet.py`` computed from the same weights (float64, eval mode; README and json there):

* ``dia_lstm_cell`` — the DIA-LSTM unit ``LSTMCell(64, 64, 1)``: three depth steps from the zero state and one
  step from a random state, and d(sum of squares of the outputs)/d parameter, key by key;
* ``dia_resnet20_cifar10`` — ``dia_resnet(depth=20, num_classes=10, block_name='bottleneck')`` on two CIFAR-10 test
  images, converted with ``dianet convert`` from a checkpoint laid out as ``cifar.py`` saves it: logits, the
  pooled features and every block's gate.

Neither case has an intended difference (the official BasicBlock DIA, which gates the wrong tensor, is not a
fixture; spec §8). A difference fails with the case, the output, the largest difference and where it is.
"""

import pytest
import torch
from click.testing import CliRunner
from dianet.cli import main
from dianet.convert import official_cell_key
from dianet.layers import DIALSTMCell
from diffcore.checkpoint import load_pretrained
from diffcore.testing import OfficialCase, load_official_case, official_cases, shared_fixtures_root

#: Absolute tolerance per case (float64 throughout): about 10× the largest difference measured with the same
#: weights — cell outputs 2.2e-16 and gradients 1.8e-15 (the json's tolerance_seen), the ResNet's pooled features
#: 8.9e-16 (logits and gates ≤ 3.3e-16). A wrong equation, wire or key mapping moves them by far more.
ATOL = {"dia_lstm_cell": {"output": 3e-15, "grad": 2e-14}, "dia_resnet20_cifar10": {"output": 1e-14}}


def check_dia_lstm_cell(case: OfficialCase, tmp_path) -> None:
    """Our cell on the official weights: h_t and c_t of every step, and every parameter's gradient."""
    args = case.meta["constructor_args"]
    assert args["input_size"] == args["hidden_size"] and args["nlayers"] == 1
    cell = DIALSTMCell(args["hidden_size"], reduction=case.meta["flags"]["reduction"]).to(case.dtype)
    ours = {official_cell_key(key): key for key in case.state}  # our parameter name → official key
    cell.load_state_dict({name: case.state[key] for name, key in ours.items()}, strict=True)
    x_seq = case.inputs["x_seq"]
    state, hs, cs = None, [], []
    for x in x_seq:  # the official Attention.forward: h_0 = c_0 = 0, then (h, c) threaded over depth
        gate, state = cell(x, state)
        assert gate is state[0]  # the DIA gate is h_t itself
        hs.append(state[0])
        cs.append(state[1])
    # the official state carries a leading layer axis: [steps, layers = 1, B, C]
    outputs = {"h_seq": torch.stack(hs)[:, None], "c_seq": torch.stack(cs)[:, None]}
    _, (h, c) = cell(x_seq[0], (case.inputs["h_state"][0], case.inputs["c_state"][0]))
    outputs.update(h_from_state=h[None], c_from_state=c[None])
    assert outputs.keys() == case.outputs.keys()
    for name, value in outputs.items():
        case.assert_close(f"output.{name}", value, case.outputs[name], atol=ATOL[case.name]["output"])
    loss = sum(value.square().sum() for value in outputs.values())  # the json's grad_loss
    grads = torch.autograd.grad(loss, list(cell.parameters()))
    by_name = dict(zip((name for name, _ in cell.named_parameters()), grads, strict=True))
    assert {ours[name] for name in by_name} == case.grads.keys()
    for name, grad in by_name.items():
        case.assert_close(f"grad.{ours[name]}", grad, case.grads[ours[name]], atol=ATOL[case.name]["grad"])


def check_dia_resnet20_cifar10(case: OfficialCase, tmp_path) -> None:
    """``dianet convert`` of the official checkpoint, then logits, pooled features and gates, with the fused
    (training) and the plain (inference) gate paths."""
    checkpoint = {"epoch": 1, "state_dict": {f"module.{k}": v for k, v in case.state.items()}, "best_acc": 0.0}
    torch.save(checkpoint, tmp_path / "model_best.pth.tar")
    result = CliRunner().invoke(main, ["convert", str(tmp_path / "model_best.pth.tar"), str(tmp_path / "model")])
    assert result.exit_code == 0, result.output
    # load_pretrained builds float32; the stored weights are bfloat16 values, so float32 and then float64 hold
    # them exactly and the model computes as the official float64 run did
    model = load_pretrained(tmp_path / "model").to(case.dtype).eval()
    flags, args = case.meta["flags"], case.meta["constructor_args"]
    config = model.config
    assert (config["block"], config["layers"], config["widths"], config["stem_width"], config["num_classes"],
            config["reduction"]) == ("bottleneck", [flags["blocks_per_stage"]] * 3, flags["stage_widths"],
                                     flags["stem_width"], args["num_classes"], flags["reduction"])
    assert sum(p.numel() for p in model.parameters()) == flags["parameters"]
    images = case.inputs["images"]
    gates: dict[str, list[torch.Tensor]] = {}
    for k, stage in enumerate(model.stages, start=1):
        stage.attn[0].register_forward_hook(lambda m, args, out, k=k: gates.setdefault(f"gates_layer{k}", []).append(
            out[0]))
    with torch.no_grad():  # the plain ops (the unit's forward, hooked above)
        features = model.forward_features(images)
    outputs = {"logits": model.forward_head(features), "pooled": model.forward_head(features, pre_logits=True),
               **{name: torch.stack(g) for name, g in gates.items()}}
    assert outputs.keys() == case.outputs.keys()
    for name, value in outputs.items():
        case.assert_close(f"output.{name}", value, case.outputs[name], atol=ATOL[case.name]["output"])
    fused = model(images)  # with autograd on, the stages gate through the fused PoolGateAdd node
    case.assert_close("output.logits (fused gate)", fused, case.outputs["logits"], atol=ATOL[case.name]["output"])


CHECKS = {"dia_lstm_cell": check_dia_lstm_cell, "dia_resnet20_cifar10": check_dia_resnet20_cifar10}


def test_every_stored_case_is_checked():
    """A case added to the fixtures fails here until it gets a check (none is skipped silently)."""
    if shared_fixtures_root() is None:
        pytest.skip("official reference fixtures not available: set $DIFFNETS_FIXTURES or put them in "
                    "../shared/fixtures")
    assert set(official_cases("dianet")) == set(CHECKS)


@pytest.mark.parametrize("name", official_cases("dianet"))
def test_matches_the_official_code(name, tmp_path):
    CHECKS[name](load_official_case("dianet", name), tmp_path)
