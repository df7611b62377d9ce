"""The DIA-LSTM unit and the stage: equations, parameter formula, state handling, fused = plain autograd."""

import pytest
import torch
from dianet.layers import BottleneckMLP, DIALSTMCell, DIAStage, SEGate
from dianet.models import Bottleneck, PreActBottleneck


def unit_params(C: int, r: int) -> int:
    d = C // r
    return 2 * (C * d + d + 4 * C * d + 4 * C)  # spec §3.5


@pytest.mark.parametrize(("C", "r", "expected"), [(64, 4, 10_784), (128, 4, 42_048), (256, 4, 166_016),
                                                  (512, 4, 659_712), (256, 20, None), (100, 3, None), (16, 4, None)])
def test_unit_parameter_count_matches_the_formula(C, r, expected):
    count = sum(p.numel() for p in DIALSTMCell(C, r).parameters())
    assert count == unit_params(C, r)
    if expected is not None:
        assert count == expected


def test_cell_equations_and_gate_range():
    torch.manual_seed(0)
    C = 32
    cell = DIALSTMCell(C, 4)
    x, h0, c0 = torch.randn(5, C), torch.randn(5, C), torch.randn(5, C)
    gate, (h, c) = cell(x, (h0, c0))
    i, f, g, o = (cell.ih(x) + cell.hh(h0)).chunk(4, 1)
    c_ref = torch.sigmoid(f) * c0 + torch.sigmoid(i) * torch.tanh(g)
    torch.testing.assert_close(c, c_ref)
    torch.testing.assert_close(h, torch.sigmoid(o) * torch.sigmoid(c_ref))  # sigmoid, not tanh, on c
    assert gate is h and ((gate > 0) & (gate < 1)).all()
    # state None is h_0 = c_0 = 0, computed per sample
    gate0, (_, c1) = cell(x, None)
    gate_zero, (_, c_zero) = cell(x, (torch.zeros(5, C), torch.zeros(5, C)))
    torch.testing.assert_close(gate0, gate_zero)
    torch.testing.assert_close(c1, c_zero)


def test_lstm_ablation_is_a_standard_lstm_cell_with_a_sigmoid_readout():
    torch.manual_seed(0)
    cell = DIALSTMCell(16, cell="lstm")
    x = torch.randn(3, 16)
    gate, (h, c) = cell(x, None)
    h_ref, c_ref = cell.lstm(x)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c, c_ref)
    torch.testing.assert_close(gate, torch.sigmoid(cell.out(h_ref)))
    assert sum(p.numel() for p in cell.parameters()) == 2 * (4 * 16 * 16 + 4 * 16) + 16 * 16 + 16
    with pytest.raises(ValueError, match="cell must be"):
        DIALSTMCell(16, cell="gru")
    with pytest.raises(ValueError, match="no hidden units"):
        DIALSTMCell(8, reduction=16)


def test_stacked_cell_follows_the_official_multi_layer_equations():
    """num_layers = 2 (spec §3.6, the official LSTMCell(…, nlayers)): layer 2 has affine maps Linear(C, 4C) and
    reads Dropout(h of layer 1); the gate is the last layer's h; the state is [layers, B, C]."""
    torch.manual_seed(0)
    C = 16
    cell = DIALSTMCell(C, 4, num_layers=2).eval()  # eval: the dropout between layers is the identity
    assert sum(p.numel() for p in cell.parameters()) == unit_params(C, 4) + 2 * (C * 4 * C + 4 * C)

    def layer(gates, c_prev):
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.sigmoid(c), c

    x1, x2 = torch.randn(3, C), torch.randn(3, C)
    zero = torch.zeros(3, C)
    h1, c1 = layer(cell.ih(x1) + cell.hh(zero), zero)
    h2, c2 = layer(cell.ih_upper[0](h1) + cell.hh_upper[0](zero), zero)
    gate, (h, c) = cell(x1, None)
    torch.testing.assert_close(gate, h2)
    torch.testing.assert_close(h, torch.stack([h1, h2]))
    torch.testing.assert_close(c, torch.stack([c1, c2]))
    h1b, _ = layer(cell.ih(x2) + cell.hh(h1), c1)
    h2b, _ = layer(cell.ih_upper[0](h1b) + cell.hh_upper[0](h2), c2)
    torch.testing.assert_close(cell(x2, (h, c))[0], h2b)
    stage = DIAStage([Bottleneck(8 if i == 0 else C, C) for i in range(3)], C, num_layers=2)
    assert not stage.attn[0].supports_fused
    stage(torch.randn(2, 8, 4, 4)).sum().backward()
    assert all(p.grad is not None for p in stage.attn.parameters())
    with pytest.raises(ValueError, match="stacked layers"):
        DIALSTMCell(C, cell="lstm", num_layers=2)


def _stage(attn="dia", cell="dia_lstm", share=None, n=3, C=16, preact=False):
    block = PreActBottleneck if preact else Bottleneck
    blocks = [block(8 if i == 0 else C, C, stride=2 if i == 0 else 1) for i in range(n)]
    return DIAStage(blocks, C, attn, cell, share, reduction=4)


def test_one_unit_per_stage_is_shared_and_state_restarts_at_zero():
    torch.manual_seed(0)
    stage = _stage(n=4)
    assert len(stage.attn) == 1
    calls = []
    stage.attn[0].register_forward_hook(lambda m, args, out: calls.append(args[1]))
    x = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        out, gates = stage(x, return_attention=True)
        stage(x)
    assert out.shape == (2, 16, 4, 4) and len(gates) == 4
    assert all(((g > 0) & (g < 1)).all() for g in gates)
    # every forward of the stage starts from the zero state, then threads (h, c) block to block
    assert [s is None for s in calls] == [True, False, False, False] * 2
    assert calls[1][0] is not None and calls[1][0].shape == (2, 16)


def test_share_none_gives_one_unit_per_block_and_se_defaults_to_it():
    assert len(_stage(share="none", n=3).attn) == 3
    se = _stage(attn="se", n=3)
    assert se.share == "none" and len(se.attn) == 3 and isinstance(se.attn[0], SEGate)
    shared_se = _stage(cell="shared_se", n=3)
    assert len(shared_se.attn) == 1 and isinstance(shared_se.attn[0], SEGate)
    assert _stage(attn=None).attn is None
    with pytest.raises(ValueError, match="share must be"):
        _stage(share="block")


def test_state_is_per_sample_batch_order_does_not_matter():
    torch.manual_seed(0)
    stage = _stage(n=3).eval()
    x = torch.randn(6, 8, 8, 8)
    perm = torch.randperm(6)
    with torch.no_grad():
        torch.testing.assert_close(stage(x)[perm], stage(x[perm]))


@pytest.mark.parametrize(("attn", "cell", "share", "preact"), [
    ("dia", "dia_lstm", None, False), ("dia", "dia_lstm", "none", True), ("se", "dia_lstm", None, False),
    ("dia", "shared_se", None, True), ("dia", "lstm", None, False),
])
def test_fused_gate_equals_plain_autograd(attn, cell, share, preact):
    """PoolGateAdd's hand-written backward gives the gradients autograd gives for the plain ops."""
    torch.manual_seed(0)
    stage = _stage(attn, cell, share, n=3, preact=preact).double()
    x = torch.randn(3, 8, 8, 8, dtype=torch.double)
    target = torch.randn(3, 16, 4, 4, dtype=torch.double)
    results = []
    for fused in (True, False):
        stage.fused = fused
        stage.zero_grad()
        xi = x.clone().requires_grad_()
        loss = (stage(xi) * target).sum()
        loss.backward()
        results.append((loss.detach(), xi.grad, {k: p.grad.clone() for k, p in stage.named_parameters()}))
    (l1, gx1, g1), (l2, gx2, g2) = results
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(gx1, gx2)
    assert g1.keys() == g2.keys()
    for key in g1:
        torch.testing.assert_close(g1[key], g2[key], msg=key)


def test_fused_gate_under_bf16_autocast_keeps_the_cell_in_float32(monkeypatch):
    torch.manual_seed(0)
    stage = _stage(n=2)
    x = torch.randn(2, 8, 8, 8)
    seen = []
    unit = stage.attn[0]
    fused_forward = unit.fused_forward
    monkeypatch.setattr(unit, "fused_forward", lambda x, state: (seen.append(x.dtype), fused_forward(x, state))[1])
    unit.register_forward_hook(lambda m, args, out: seen.append(args[0].dtype))
    outs = []
    for fused in (True, False):
        stage.fused = fused
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = stage(x.requires_grad_())
        out.float().sum().backward()
        outs.append(out.float())
    assert seen == [torch.float32] * 4  # 2 blocks × (fused, plain), under bf16 autocast
    torch.testing.assert_close(outs[0], outs[1], atol=0.05, rtol=0.05)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in stage.attn.parameters())


def test_bottleneck_mlp_hand_backward_matches_autograd():
    torch.manual_seed(0)
    mlp = BottleneckMLP(12, 3, 20).double()
    u = torch.randn(4, 12, dtype=torch.double, requires_grad=True)
    grad = torch.randn(4, 20, dtype=torch.double)
    out, z = mlp.forward_cached(u.detach())
    torch.testing.assert_close(out, mlp(u))
    grad_u, grads = mlp.backward_cached(grad, u.detach(), z)
    expected = torch.autograd.grad(mlp(u), [u, *mlp.parameters()], grad)
    for got, ref in zip([grad_u, *grads], expected, strict=True):
        torch.testing.assert_close(got, ref)
