"""DIFFormerConv / DIFFormer against dense references written here, from the formulas of spec §2."""

import pytest
import torch
from difformer import DIFFormer, DIFFormerConv
from difformer.graph import normalized_adjacency, prepare_edges
from difformer.kernels import attention_weights, sigmoid_attention, simple_attention


@pytest.fixture(autouse=True)
def _float64():
    """The references are compared in float64; other test modules keep float32."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def dense_simple(q, k, v):
    """Σ_j (1 + q̃_iᵀk̃_j) v_j / Σ_j (1 + q̃_iᵀk̃_j) with one Frobenius norm over [N, H, M]."""
    q, k = q / q.norm(), k / k.norm()
    weights = 1 + torch.einsum("nhm,lhm->nlh", q, k)
    return torch.einsum("nlh,lhd->nhd", weights, v) / weights.sum(1)[..., None]


def dense_sigmoid(q, k, v):
    weights = torch.sigmoid(torch.einsum("nhm,lhm->nlh", q, k))
    weights = weights / weights.sum(1, keepdim=True)
    return torch.einsum("nlh,lhd->nhd", weights, v)


def dense_gcn(edge_index, n, edge_weight=None, degree="weighted"):
    """D^{-1/2} A D^{-1/2} built entry by entry: A[i, j] += w for an edge j → i."""
    src, dst = edge_index
    w = torch.ones(src.numel()) if edge_weight is None else edge_weight
    a = torch.zeros(n, n)
    a.index_put_((dst, src), w, accumulate=True)
    deg = a.sum(1) if degree == "weighted" else torch.bincount(dst, minlength=n).double()
    inv = deg.pow(-0.5)
    inv[torch.isinf(inv)] = 0
    return inv[:, None] * a * inv[None, :]


def random_graph(n, e, seed=0):
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, n, (2, e), generator=g)
    return prepare_edges(edge_index, n)[0]


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("n,l", [(7, 7), (5, 9)])
def test_simple_kernel_equals_dense(heads, n, l):
    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(n, heads, 4, generator=g), torch.randn(l, heads, 4, generator=g), torch.randn(l, heads, 3,
                                                                                                       generator=g)
    torch.testing.assert_close(simple_attention(q, k, v), dense_simple(q, k, v))


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("block", [None, 1, 3, 100])
def test_sigmoid_kernel_equals_dense_forward_and_backward(heads, block):
    g = torch.Generator().manual_seed(2)
    q = torch.randn(8, heads, 4, generator=g, requires_grad=True)
    k = torch.randn(6, heads, 4, generator=g, requires_grad=True)
    v = torch.randn(6, heads, 3, generator=g, requires_grad=True)
    out = sigmoid_attention(q, k, v, block)
    ref = dense_sigmoid(q, k, v)
    torch.testing.assert_close(out, ref)
    upstream = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), upstream)
    ref_grads = torch.autograd.grad(ref, (q, k, v), upstream)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_sigmoid_gradcheck():
    g = torch.Generator().manual_seed(3)
    args = [torch.randn(5, 2, 3, generator=g, requires_grad=True) for _ in range(3)]
    assert torch.autograd.gradcheck(lambda q, k, v: sigmoid_attention(q, k, v, block_size=2), args)


@pytest.mark.parametrize("kernel", ["simple", "sigmoid"])
def test_batched_equals_looped(kernel):
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(3, 6, 2, 4, generator=g) for _ in range(3))
    fn = simple_attention if kernel == "simple" else lambda a, b, c: sigmoid_attention(a, b, c, 4)
    torch.testing.assert_close(fn(q, k, v), torch.stack([fn(q[i], k[i], v[i]) for i in range(3)]))


@pytest.mark.parametrize("kernel", ["simple", "sigmoid"])
def test_attention_weights_rows_sum_to_one_and_reproduce_output(kernel):
    g = torch.Generator().manual_seed(5)
    q, k, v = torch.randn(6, 2, 4, generator=g), torch.randn(6, 2, 4, generator=g), torch.randn(6, 2, 3, generator=g)
    weights = attention_weights(q, k, kernel)
    torch.testing.assert_close(weights.sum(1), torch.ones(6, 2))
    assert (weights >= 0).all()
    out = simple_attention(q, k, v) if kernel == "simple" else sigmoid_attention(q, k, v)
    torch.testing.assert_close(torch.einsum("nlh,lhd->nhd", weights, v), out)


def test_row_norm_variant():
    g = torch.Generator().manual_seed(6)
    q, k, v = torch.randn(5, 1, 4, generator=g), torch.randn(5, 1, 4, generator=g), torch.randn(5, 1, 3, generator=g)
    qn, kn = q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)
    weights = 1 + torch.einsum("nhm,lhm->nlh", qn, kn)
    ref = torch.einsum("nlh,lhd->nhd", weights, v) / weights.sum(1)[..., None]
    torch.testing.assert_close(simple_attention(q, k, v, qk_norm="row"), ref)


@pytest.mark.parametrize("degree", ["weighted", "count"])
def test_graph_branch_equals_dense_normalised_adjacency(degree):
    n = 9
    edge_index = random_graph(n, 20)
    weight = torch.rand(edge_index.shape[1], generator=torch.Generator().manual_seed(7)) + 0.5
    adj = normalized_adjacency(edge_index, n, weight, degree)
    torch.testing.assert_close(adj.to_dense(), dense_gcn(edge_index, n, weight, degree))
    x = torch.randn(n, 5, requires_grad=True)
    upstream = torch.randn(n, 5)
    (grad,) = torch.autograd.grad(adj @ x, x, upstream)
    torch.testing.assert_close(grad, dense_gcn(edge_index, n, weight, degree).T @ upstream)


def test_count_and_weighted_degree_agree_without_weights():
    edge_index = random_graph(10, 25)
    torch.testing.assert_close(normalized_adjacency(edge_index, 10, degree="count").to_dense(),
                               normalized_adjacency(edge_index, 10).to_dense())


def conv_reference(conv, x, edge_index, edge_weight=None, source=None):
    """The layer from its parameters with dense matrices only."""
    n, h, d = x.shape[0], conv.num_heads, conv.out_channels
    q = conv.Wq(x).reshape(n, h, d)
    k = conv.Wk(x).reshape(n, h, d)
    v = conv.Wv(x).reshape(n, h, d) if conv.use_weight else x[:, None, :].expand(n, h, d)
    attn = dense_simple(q, k, v) if conv.kernel == "simple" else dense_sigmoid(q, k, v)
    if conv.use_graph:
        g = torch.einsum("ij,jhd->ihd", dense_gcn(edge_index, n, edge_weight, conv.degree_norm), v)
        attn = attn + g if conv.graph_weight == -1 else (1 - conv.graph_weight) * attn + conv.graph_weight * g
    out = attn.mean(1)
    return out + source if conv.use_source else out


@pytest.mark.parametrize("kernel", ["simple", "sigmoid"])
@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("use_weight", [True, False])
@pytest.mark.parametrize("graph_weight", [None, -1.0, 0.8])
def test_conv_equals_dense_reference(kernel, heads, use_weight, graph_weight):
    n, c = 10, 6
    edge_index = random_graph(n, 30)
    conv = DIFFormerConv(c, c, num_heads=heads, kernel=kernel, use_graph=graph_weight is not None,
                         use_weight=use_weight, graph_weight=graph_weight or -1.0, use_source=True, block_size=3)
    x, source = torch.randn(n, c), torch.randn(n, c)
    torch.testing.assert_close(conv(x, edge_index, source=source), conv_reference(conv, x, edge_index, source=source))


def test_conv_cross_attention_adds_number_of_keys():
    conv = DIFFormerConv(4, 4, num_heads=2, use_graph=False)
    xs, xt = torch.randn(9, 4), torch.randn(5, 4)
    q = conv.Wq(xt).reshape(5, 2, 4)
    k, v = conv.Wk(xs).reshape(9, 2, 4), conv.Wv(xs).reshape(9, 2, 4)
    torch.testing.assert_close(conv((xs, xt)), dense_simple(q, k, v).mean(1))


def test_conv_batched_with_shared_and_blockdiagonal_graph():
    n, c, b = 6, 4, 3
    edge_index = random_graph(n, 12)
    conv = DIFFormerConv(c, c, num_heads=2, kernel="sigmoid")
    x = torch.randn(b, n, c)
    looped = torch.stack([conv(x[i], edge_index) for i in range(b)])
    torch.testing.assert_close(conv(x, edge_index), looped)
    # one graph per sample: PyG-style batch offsets, prebuilt as one block-diagonal Â
    graphs = [random_graph(n, 12, seed=s) for s in range(b)]
    block = torch.cat([g + i * n for i, g in enumerate(graphs)], dim=1)
    adj = normalized_adjacency(block, b * n)
    looped = torch.stack([conv(x[i], graphs[i]) for i in range(b)])
    torch.testing.assert_close(conv(x, adj), looped)


def test_conv_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kernel"):
        DIFFormerConv(4, 4, kernel="softmax")
    with pytest.raises(ValueError, match="graph_weight"):
        DIFFormerConv(4, 4, graph_weight=0.0)
    with pytest.raises(ValueError, match="in_channels"):
        DIFFormerConv(4, 8, use_weight=False)
    conv = DIFFormerConv(4, 4)
    with pytest.raises(ValueError, match="node ids"):
        conv(torch.randn(5, 4), torch.tensor([[0, 1], [1, 7]]))
    with pytest.raises(ValueError, match="edge_index"):
        conv(torch.randn(5, 4))


def cora_s(**kw):
    args = dict(num_layers=8, kernel="simple", alpha=0.5, dropout=0.2, use_bn=True, use_residual=True,
                use_weight=False, use_graph=True)
    args.update(kw)
    return DIFFormer(1433, 64, 7, **args)


def test_cora_s_parameter_count_and_official_keys():
    model = cora_s()
    assert sum(p.numel() for p in model.parameters()) == 159_943
    keys = set(model.state_dict())
    expected = {f"fcs.{i}.{p}" for i in (0, 1) for p in ("weight", "bias")}
    expected |= {f"bns.{i}.{p}" for i in range(9) for p in ("weight", "bias")}
    expected |= {f"convs.{i}.{w}.{p}" for i in range(8) for w in ("Wq", "Wk") for p in ("weight", "bias")}
    assert keys == expected
    assert {"convs.0.Wv.weight"} <= set(cora_s(use_weight=True).state_dict())


def model_reference(model, x, edge_index):
    """Spec §2.1 step by step, eval mode, every conv through the dense conv reference."""
    h = torch.relu(model.bns[0](model.fcs[0](x)) if model.use_bn else model.fcs[0](x))
    source = h
    for i, conv in enumerate(model.convs):
        c = conv_reference(conv, h, edge_index, source=source)
        h = model.alpha * c + (1 - model.alpha) * h if model.use_residual else c
        h = model.bns[i + 1](h) if model.use_bn else h
    return model.fcs[1](h)


@pytest.mark.parametrize("kernel", ["simple", "sigmoid"])
@pytest.mark.parametrize("flags", [dict(), dict(use_bn=False, use_residual=False), dict(use_source=True),
                                   dict(use_graph=False, use_weight=True, num_heads=2)])
def test_model_equals_reference(kernel, flags):
    edge_index = random_graph(12, 30)
    model = DIFFormer(5, 8, 3, num_layers=3, kernel=kernel, **{"use_weight": False, **flags}).eval()
    x = torch.randn(12, 5)
    torch.testing.assert_close(model(x, edge_index), model_reference(model, x, edge_index))


@pytest.mark.parametrize("kernel", ["simple", "sigmoid"])
@pytest.mark.parametrize("flags", [dict(use_graph=False), dict(use_graph=True), dict(use_graph=True, use_source=True),
                                   dict(use_graph=True, graph_weight=0.7, num_heads=2)])
def test_get_attentions(kernel, flags):
    edge_index = random_graph(7, 15)
    model = DIFFormer(3, 4, 2, num_layers=2, kernel=kernel, dropout=0.5, **flags)
    x = torch.randn(7, 3)
    maps = model.get_attentions(x, edge_index)
    heads = flags.get("num_heads", 1)
    assert maps.shape == (2, 7, 7, heads)
    torch.testing.assert_close(maps.sum(2), torch.ones(2, 7, heads))
    assert model.training  # mode restored
    # the whole operator of layer 1 reproduces its output: mean_h(P_h V_h) (+ h⁰)
    full = model.get_attentions(x, edge_index, include_graph=True)
    model.eval()
    h0 = torch.relu(model.bns[0](model.fcs[0](x)))
    conv = model.convs[0]
    _, _, v = conv.project(h0)
    expected = torch.einsum("nlh,lhd->nhd", full[0], v).mean(1) + (h0 if conv.use_source else 0)
    torch.testing.assert_close(conv(h0, edge_index, source=h0), expected)


def test_adjacency_is_cached_per_edge_tensor():
    model = cora_s(num_layers=2)
    x = torch.randn(20, 1433)
    edge_index = random_graph(20, 40)
    model(x, edge_index)
    first = model._adjacency._value
    model(x, edge_index)
    assert model._adjacency._value is first
    edge_index.add_(0)  # in-place change bumps the version: recomputed
    model(x, edge_index)
    assert model._adjacency._value is not first


def test_simple_kernel_never_materialises_n_by_n():
    """A 200,000-node forward+backward in float32: an N × N float tensor would need 160 GB."""
    torch.set_default_dtype(torch.float32)
    n = 200_000
    conv = DIFFormerConv(8, 8, use_graph=True)
    x = torch.randn(n, 8, requires_grad=True)
    edge_index = prepare_edges(torch.randint(0, n, (2, 4 * n)), n)[0]
    conv(x, edge_index).sum().backward()
    assert x.grad.shape == (n, 8)
