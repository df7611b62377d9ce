"""The DIA-LSTM unit and the stage module that shares one unit across the blocks of a stage.

Huang, Liang, Liang, Yang, "DIANet: Dense-and-Implicit Attention Network", AAAI 2020
(arXiv 1905.10671). A stage of n residual blocks owns **one** attention unit; at block t the unit
reads the pooled residual branch x_t = mean_{H,W}(F_t), updates its recurrent state (h, c) over
depth and returns a channel gate a_t ∈ (0, 1)^C that rescales the branch before the residual addition:

    [î, f̂, ĝ, ô] = M_x(x_t) + M_h(h_{t−1}),   M(u) = W₂ ReLU(W₁u + b₁) + b₂   (W₁: C→⌊C/r⌋, W₂: ⌊C/r⌋→4C)
    c_t = σ(f̂) ⊙ c_{t−1} + σ(î) ⊙ tanh(ĝ),    h_t = σ(ô) ⊙ σ(c_t),           a_t = h_t
    A_t = act(F_t ⊙ a_t + S_t(A_{t−1}))        (act = ReLU for post-activation blocks, identity otherwise)

with h_0 = c_0 = 0 at the first block of every stage. Every unit here has the signature
``unit(x, state) -> (gate, state)`` on pooled descriptors ``x: [B, C]`` (``state`` None at t = 1), so the
stage module gates with any of them: the DIA-LSTM cell, the standard-LSTM ablation and SE.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dianet.names import Attn, Cell, Share

State = tuple[torch.Tensor, torch.Tensor] | None


class BottleneckMLP(nn.Module):
    """M(u) = W₂ ReLU(W₁u + b₁) + b₂ with W₁: ``in_features → hidden``, W₂: ``hidden → out_features``.

    Shapes: ``u [B, in_features]`` → ``[B, out_features]``. ``forward_cached``/``backward_cached`` are the
    same map with a hand-written backward, for :class:`PoolGateAdd`.
    """

    def __init__(self, in_features: int, hidden: int, out_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(u)))

    def forward_cached(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(M(u), z = ReLU(W₁u + b₁)), without autograd."""
        z = torch.addmm(self.fc1.bias, u, self.fc1.weight.t()).relu_()
        return torch.addmm(self.fc2.bias, z, self.fc2.weight.t()), z

    def backward_cached(self, grad: torch.Tensor, u: torch.Tensor, z: torch.Tensor):
        """∂/∂u and the parameter gradients ``[W₁, b₁, W₂, b₂]`` (``parameters()`` order) of ⟨grad, M(u)⟩."""
        grad_z = (grad @ self.fc2.weight).mul_(z > 0)
        params = [grad_z.t() @ u, grad_z.sum(0), grad.t() @ z, grad.sum(0)]
        return grad_z @ self.fc1.weight, params


class SEGate(nn.Module):
    """Squeeze-and-excitation gate (Hu et al., CVPR 2018) on a pooled descriptor: a = σ(M(x)), no state.

    ``hidden`` is the reduced width (⌊C/16⌋ for SE-Net, ⌊C/r⌋ for the shared-SE ablation).
    Shapes: ``x [B, C]`` → ``(a [B, C], None)``.
    """

    supports_fused = True

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        if hidden < 1:
            raise ValueError(f"SE hidden width must be ≥ 1, got {hidden} for {channels} channels")
        self.channels, self.hidden = channels, hidden
        self.mlp = BottleneckMLP(channels, hidden, channels)

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, None]:
        return torch.sigmoid(self.mlp(x)), None

    def fused_forward(self, x: torch.Tensor, state: State = None):
        pre, z = self.mlp.forward_cached(x)
        gate = pre.sigmoid_()
        return gate, None, (x, z, gate)

    def fused_backward(self, cache, grad_gate: torch.Tensor, grad_state=()):
        x, z, gate = cache
        grad_x, grads = self.mlp.backward_cached(grad_gate * gate * (1 - gate), x, z)
        return grad_x, None, grads

    def extra_repr(self) -> str:
        return f"channels={self.channels}, hidden={self.hidden}"


class DIALSTMCell(nn.Module):
    """The DIA-LSTM unit: an LSTM cell over depth whose gate maps are bottleneck MLPs (module docstring).

    Args:
        channels: C, the stage width (input and hidden size).
        reduction: r; both MLPs of the first layer are C → ⌊C/r⌋ → 4C (with biases).
        cell: ``"dia_lstm"`` (the paper) or ``"lstm"`` — the ablation left commented out in the official
            files: a standard ``nn.LSTMCell(C, C)`` (tanh on c_t) followed by a = σ(Linear(C, C)(h_t)).
        num_layers: stacked ``dia_lstm`` layers (spec §3.6; the official ``LSTMCell(…, nlayers)``): layer ℓ > 1
            has plain affine gate maps Linear(C, 4C) for its input — Dropout(``dropout``)(h_t of layer ℓ − 1) —
            and for its own h_{t−1}; the gate is h_t of the last layer. (The official files build it but always
            use one layer: their zero state has one layer, so more would crash.)
        dropout: between stacked layers, training only (the official 0.1; unused with one layer).

    Shapes: ``x [B, C]``, ``state`` None (h_0 = c_0 = 0) or ``(h, c)``, each ``[B, C]`` for one layer and
    ``[num_layers, B, C]`` for a stack → ``(a [B, C] in (0, 1), (h, c))``. For ``dia_lstm`` the gate is h_t itself.
    """

    def __init__(self, channels: int, reduction: int = 4, cell: Literal["dia_lstm", "lstm"] = "dia_lstm",
                 num_layers: int = 1, dropout: float = 0.1):
        super().__init__()
        if cell not in ("dia_lstm", "lstm"):
            raise ValueError(f"cell must be 'dia_lstm' or 'lstm', got {cell!r}")
        if num_layers < 1 or (num_layers > 1 and cell != "dia_lstm"):
            raise ValueError(f"num_layers={num_layers}: stacked layers (num_layers > 1) exist for cell='dia_lstm' "
                             "only, and num_layers must be ≥ 1")
        hidden = channels // reduction
        if cell == "dia_lstm" and hidden < 1:
            raise ValueError(f"reduction {reduction} leaves no hidden units for {channels} channels")
        self.channels, self.reduction, self.cell, self.num_layers = channels, reduction, cell, num_layers
        self.supports_fused = cell == "dia_lstm" and num_layers == 1
        if cell == "dia_lstm":
            self.ih = BottleneckMLP(channels, hidden, 4 * channels)
            self.hh = BottleneckMLP(channels, hidden, 4 * channels)
            self.ih_upper = nn.ModuleList(nn.Linear(channels, 4 * channels) for _ in range(num_layers - 1))
            self.hh_upper = nn.ModuleList(nn.Linear(channels, 4 * channels) for _ in range(num_layers - 1))
            self.dropout = nn.Dropout(dropout) if num_layers > 1 else None
        else:
            self.lstm = nn.LSTMCell(channels, channels)
            self.out = nn.Linear(channels, channels)

    @staticmethod
    def _step(gates: torch.Tensor, c_prev: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(h_t, c_t) from the pre-activations [î, f̂, ĝ, ô]; ``c_prev`` None is c_{t−1} = 0 (no forget term)."""
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(i) * torch.tanh(g)
        if c_prev is not None:
            c = torch.sigmoid(f) * c_prev + c
        return torch.sigmoid(o) * torch.sigmoid(c), c

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if self.cell == "lstm":
            h, c = self.lstm(x, state)
            return torch.sigmoid(self.out(h)), (h, c)
        if self.num_layers > 1:
            return self._forward_stack(x, state)
        if state is None:
            # h_0 = 0 for every sample: M_h(0) is one row, broadcast over the batch; c_0 = 0 drops the forget term.
            h, c = self._step(self.ih(x) + self.hh(x.new_zeros(1, self.channels)), None)
        else:
            h_prev, c_prev = state
            h, c = self._step(self.ih(x) + self.hh(h_prev), c_prev)
        return h, (h, c)

    def _forward_stack(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        hs, cs = [], []
        inputs = x
        for layer in range(self.num_layers):
            w_ih, w_hh = (self.ih, self.hh) if layer == 0 else (self.ih_upper[layer - 1], self.hh_upper[layer - 1])
            if state is None:  # h_0 = 0: the hidden map of a zero row, broadcast
                h, c = self._step(w_ih(inputs) + w_hh(x.new_zeros(1, self.channels)), None)
            else:
                h, c = self._step(w_ih(inputs) + w_hh(state[0][layer]), state[1][layer])
            hs.append(h)
            cs.append(c)
            inputs = self.dropout(h)
        return hs[-1], (torch.stack(hs), torch.stack(cs))

    def fused_forward(self, x: torch.Tensor, state: State = None):
        """:meth:`forward` without autograd, plus what :meth:`fused_backward` needs (``dia_lstm`` only)."""
        C = self.channels
        gates, z_x = self.ih.forward_cached(x)
        if state is None:
            h_prev = c_prev = z_h = None
            gates.add_(torch.addmv(self.hh.fc2.bias, self.hh.fc2.weight, F.relu(self.hh.fc1.bias)))
        else:
            h_prev, c_prev = state
            gates_h, z_h = self.hh.forward_cached(h_prev)
            gates.add_(gates_h)
        sig = torch.sigmoid(gates)
        i, f, o = sig[:, :C], sig[:, C:2 * C], sig[:, 3 * C:]
        tanh_g = torch.tanh(gates[:, 2 * C:3 * C])
        c = i * tanh_g
        if c_prev is not None:
            c.addcmul_(f, c_prev)
        sig_c = torch.sigmoid(c)
        h = o * sig_c
        return h, (h, c), (x, z_x, h_prev, c_prev, z_h, sig, tanh_g, sig_c)

    def fused_backward(self, cache, grad_gate: torch.Tensor, grad_state=()):
        """Gradients of :meth:`fused_forward`: ``(∂x, (∂h_prev, ∂c_prev) or None, parameter grads)``.

        With s = σ(gates) and ∂c = ∂c_next + ∂h ⊙ o ⊙ σ'(c): ∂gates = s(1 − s) ⊙ [∂c ⊙ tanh g, ∂c ⊙ c_prev, ·,
        ∂h ⊙ σ(c)] for (i, f, ·, o) and ∂c ⊙ i ⊙ (1 − tanh² g) for g; then both MLPs' backward.
        """
        x, z_x, h_prev, c_prev, z_h, sig, tanh_g, sig_c = cache
        C = self.channels
        grad_h, grad_c = grad_state if grad_state else (None, None)
        grad_h = grad_gate if grad_h is None else grad_gate + grad_h  # the gate is h itself
        i, f, o = sig[:, :C], sig[:, C:2 * C], sig[:, 3 * C:]
        d_c = grad_h * o * sig_c * (1 - sig_c)
        if grad_c is not None:
            d_c += grad_c
        upstream = torch.zeros_like(sig)
        torch.mul(d_c, tanh_g, out=upstream[:, :C])
        if c_prev is not None:
            torch.mul(d_c, c_prev, out=upstream[:, C:2 * C])
        torch.mul(grad_h, sig_c, out=upstream[:, 3 * C:])
        d_gates = upstream.mul_(sig * (1 - sig))
        torch.mul(d_c * i, 1 - tanh_g * tanh_g, out=d_gates[:, 2 * C:3 * C])
        grad_x, grads_ih = self.ih.backward_cached(d_gates, x, z_x)
        if h_prev is None:  # M_h(0): one row broadcast over the batch; W₁ʰ multiplies zeros
            total = d_gates.sum(0)
            b1 = self.hh.fc1.bias
            grad_z0 = (self.hh.fc2.weight.t() @ total).mul_(b1 > 0)
            grads_hh = [torch.zeros_like(self.hh.fc1.weight), grad_z0, torch.outer(total, F.relu(b1)), total]
            return grad_x, None, grads_ih + grads_hh
        grad_h_prev, grads_hh = self.hh.backward_cached(d_gates, h_prev, z_h)
        return grad_x, (grad_h_prev, d_c * f), grads_ih + grads_hh

    def extra_repr(self) -> str:
        hidden = f", hidden={self.channels // self.reduction}" if self.cell == "dia_lstm" else ""
        layers = f", num_layers={self.num_layers}" if self.num_layers > 1 else ""
        return f"channels={self.channels}, cell={self.cell!r}, reduction={self.reduction}{hidden}{layers}"


class PoolGateAdd(torch.autograd.Function):
    """``S + F ⊙ a`` with ``(a, state') = unit(mean_{H,W}(F), state)``, as one autograd node.

    Same values and gradients as the plain ops (a test checks it), with less work per block: plain autograd
    materialises ∂mean/∂F as a full tensor, multiplies twice, adds the two gradients of F and records ~40
    small nodes for the cell; here backward makes one product for ∂a = Σ_{H,W} ∂out ⊙ F, runs the unit's
    hand-written backward on [B, C] tensors and writes ∂F = ∂out ⊙ a + ∂x / HW with one ``addcmul`` into the
    same buffer. The unit's parameters are inputs of the node, so their gradients accumulate as usual (DDP
    included). Units provide ``fused_forward``/``fused_backward``; they run in their parameters' dtype, so under
    autocast the cell stays in float32 (its tensors are [B, C]: this costs nothing).
    """

    @staticmethod
    def forward(ctx, unit: nn.Module, branch: torch.Tensor, shortcut: torch.Tensor, h, c, *params):
        with torch.autocast(branch.device.type, enabled=False):
            pooled = branch.mean((2, 3), dtype=params[0].dtype)
            gate, state_out, cache = unit.fused_forward(pooled, None if h is None else (h, c))
        gate4 = gate.to(branch.dtype)[:, :, None, None]
        ctx.save_for_backward(branch, gate4)
        ctx.unit, ctx.cache, ctx.unit_dtype = unit, cache, params[0].dtype
        out = torch.addcmul(shortcut, branch, gate4)
        return out if state_out is None else (out, *state_out)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor, *grad_state: torch.Tensor):
        branch, gate4 = ctx.saved_tensors
        buffer = grad_out * branch
        with torch.autocast(branch.device.type, enabled=False):
            grad_gate = buffer.sum((2, 3), dtype=ctx.unit_dtype)
            grad_x, grad_state_in, grad_params = ctx.unit.fused_backward(ctx.cache, grad_gate, grad_state)
        del ctx.cache
        scale = (grad_x / (branch.shape[2] * branch.shape[3])).to(buffer.dtype)[:, :, None, None]
        grad_branch = torch.addcmul(scale, grad_out, gate4, out=buffer)
        grad_h, grad_c = grad_state_in if grad_state_in is not None else (None, None)
        return None, grad_branch, grad_out, grad_h, grad_c, *grad_params


def gate_residual(unit: nn.Module, branch: torch.Tensor, shortcut: torch.Tensor, state: State, fused: bool):
    """``(S + F ⊙ a, a, state')`` of one block; the unit computes in its parameters' dtype (float32 under autocast).

    ``fused`` uses :class:`PoolGateAdd` (then ``a`` is returned detached); otherwise plain autograd ops.
    """
    if fused and getattr(unit, "supports_fused", False):
        h, c = state if state is not None else (None, None)
        result = PoolGateAdd.apply(unit, branch, shortcut, h, c, *unit.parameters())
        if isinstance(result, torch.Tensor):
            return result, None, None
        out, h, c = result
        return out, h, (h, c)
    with torch.autocast(branch.device.type, enabled=False):
        gate, state = unit(branch.mean((2, 3), dtype=next(unit.parameters()).dtype), state)
    return torch.addcmul(shortcut, branch, gate.to(branch.dtype)[:, :, None, None]), gate, state


def make_unit(channels: int, attn: Attn, cell: Cell = "dia_lstm", reduction: int = 4,
              num_layers: int = 1) -> nn.Module:
    """One attention unit for a stage of width ``channels``: SE (``attn="se"``) or a DIA cell."""
    if attn not in ("dia", "se"):
        raise ValueError(f"attn must be 'dia', 'se' or None, got {attn!r}")
    if attn == "se" or cell == "shared_se":
        if num_layers != 1:
            raise ValueError(f"num_layers={num_layers}: stacked layers exist for the DIA-LSTM cell only")
        return SEGate(channels, channels // reduction)
    return DIALSTMCell(channels, reduction, cell, num_layers)


class DIAStage(nn.Module):
    """A stage of residual blocks gated by shared (``share="stage"``) or per-block attention units.

    Each block returns ``(branch, shortcut)`` — the residual branch F_t after its last BatchNorm and the
    shortcut S_t — and has a boolean ``post_act`` (ReLU after the addition, as in ResNet/ResNeXt). The stage
    computes ``A_t = act(S_t + F_t ⊙ a_t)`` with a_t from its unit (``attn=None``: no gate, the plain net).

    Args:
        blocks: the blocks in order; all produce ``channels`` channels.
        attn: ``"dia"`` (recurrent unit threaded over the blocks), ``"se"`` (SE-Net) or None.
        cell: for ``attn="dia"``: ``"dia_lstm"``, ``"lstm"`` or ``"shared_se"`` (SE MLP, no recurrence).
        share: ``"stage"`` — one unit for all blocks (the paper; the default for DIA); ``"none"`` — one unit per
            block, the recurrent state still threaded from block to block (the default for SE: SE-Net).
        reduction: r of the unit's bottleneck MLPs.
        num_layers: stacked DIA-LSTM layers in the unit (see :class:`DIALSTMCell`).

    Shapes: ``x [B, C_in, H, W]`` → ``[B, channels, H/s, W/s]``; with ``return_attention=True`` also the
    list of the n gates ``[B, channels]``.
    """

    def __init__(self, blocks: Sequence[nn.Module], channels: int, attn: Attn | None = "dia",
                 cell: Cell = "dia_lstm", share: Share | None = None, reduction: int = 4, num_layers: int = 1):
        super().__init__()
        share = share or ("none" if attn == "se" else "stage")
        if share not in ("stage", "none"):
            raise ValueError(f"share must be 'stage' or 'none', got {share!r}")
        self.channels, self.attn_type, self.cell, self.share, self.reduction = channels, attn, cell, share, reduction
        self.blocks = nn.ModuleList(blocks)
        if attn is None:
            self.attn = None
        else:
            count = 1 if share == "stage" else len(self.blocks)
            self.attn = nn.ModuleList(make_unit(channels, attn, cell, reduction, num_layers) for _ in range(count))
        self.fused = True  # implementation switch (same maths): False uses plain autograd ops throughout

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        gates: list[torch.Tensor] = []
        state: State = None
        # The fused gate (one autograd node per block, see PoolGateAdd) is for eager training; the plain ops
        # serve torch.compile (inductor fuses them itself), inference and return_attention (differentiable gates).
        fused = self.fused and torch.is_grad_enabled() and not return_attention and not torch.compiler.is_compiling()
        for t, block in enumerate(self.blocks):
            branch, shortcut = block(x)
            if self.attn is None:
                x = branch.add_(shortcut)
            else:
                unit = self.attn[0 if self.share == "stage" else t]
                x, gate, state = gate_residual(unit, branch, shortcut, state, fused)
                gates.append(gate)
            if block.post_act:
                x = x.relu_()
        return (x, gates) if return_attention else x

    def extra_repr(self) -> str:
        if self.attn is None:
            return f"channels={self.channels}, attn=None"
        cell = f", cell={self.cell!r}" if self.attn_type == "dia" else ""
        return (f"channels={self.channels}, attn={self.attn_type!r}{cell}, share={self.share!r}, "
                f"reduction={self.reduction}")
