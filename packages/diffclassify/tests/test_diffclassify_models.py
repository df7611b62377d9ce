"""Shapes, feature dimensions (spec §15.1), time tables, gradients and save/load of every model."""

import math

import pytest
import torch
from diffclassify.models import (
    CifarConvVAE,
    MnistConvVAE,
    MyUNet,
    VDiffUNet,
    count_parameters,
    gaussian_kl,
    original_time_table,
    sinusoid_table,
)
from diffcore.checkpoint import export_model, load_pretrained
from diffcore.testing import assert_close_state_dicts


def pooled_dim(acts: dict) -> int:
    return sum(a.shape[1] for a in acts.values())


def test_mnist_unet_output_and_80d_features():
    torch.manual_seed(0)
    model = MyUNet()
    x, t = torch.randn(3, 1, 28, 28), torch.tensor([0, 100, 999])
    assert model(x, t).shape == (3, 1, 28, 28)
    acts = model.features(x, t)
    assert list(acts) == ["b_mid", "b4", "b5", "b_out"]
    assert [tuple(a.shape[1:]) for a in acts.values()] == [(40, 3, 3), (20, 7, 7), (10, 14, 14), (10, 28, 28)]
    assert pooled_dim(acts) == 80
    # The original's 0.51 M counts an unused LayerNorm (15,680) and a 1,280-row label table; ours has neither.
    assert count_parameters(model) == 497_080


@pytest.mark.parametrize("taps", [("b1",), ("b3", "b_mid"), ("b1", "b2", "b3", "b_mid", "b4", "b5", "b_out")])
def test_mnist_unet_block_selection(taps):
    model = MyUNet(widths=(4, 8, 16))
    acts = model.features(torch.randn(2, 1, 28, 28), torch.tensor([5, 6]), taps)
    assert list(acts) == list(taps)
    assert pooled_dim(acts) == sum(model.feature_dims()[t] for t in taps)


def test_unknown_block_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid blocks: b1, b2, b3, b_mid, b4, b5, b_out"):
        MyUNet(widths=(4, 8, 16)).features(torch.randn(1, 1, 28, 28), torch.tensor([1]), ("b9",))


@pytest.mark.parametrize(("size", "channels"), [(8, 1), (32, 3)])
def test_mnist_unet_other_sizes(size, channels):
    model = MyUNet(image_size=size, in_channels=channels, widths=(4, 8, 16))
    assert model(torch.randn(2, channels, size, size), torch.tensor([1, 2])).shape == (2, channels, size, size)


def test_label_path_only_when_conditioned():
    plain, conditioned = MyUNet(widths=(4, 8, 16)), MyUNet(widths=(4, 8, 16), num_classes=10)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3, 4])
    assert plain.y_embed is None and not plain.label_conditioned
    with pytest.raises(ValueError, match="unconditional"):
        plain(x, t, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="label-conditioned"):
        conditioned(x, t)
    assert conditioned.y_embed.num_embeddings == 11  # 10 classes + null
    assert not torch.equal(conditioned(x, t, torch.tensor([1, 1])), conditioned(x, t, torch.tensor([2, 2])))


def test_sinusoid_table_closed_form():
    table = sinusoid_table(1000, 128)
    t, k = 37, 5
    assert table[t, k] == pytest.approx(math.sin(t * 10000 ** (-k / 64)), abs=1e-6)
    assert table[t, 64 + k] == pytest.approx(math.cos(t * 10000 ** (-k / 64)), abs=1e-6)


def test_original_time_table_quirk():
    table = original_time_table(1000, 128)
    theta = lambda t, j: t / 10000 ** (2 * j / 128)  # noqa: E731
    assert torch.all(table[1] == 1.0)
    assert table[0].abs().max() == 0.0
    assert table[40, 7] == pytest.approx(math.sin(theta(40, 7)), abs=1e-6)  # even rows: sin θ(t, ·)
    assert table[3, 7] == pytest.approx(math.cos(math.sin(theta(998, 7))), abs=1e-6)  # odd t ≥ 3: cos sin θ(1001 − t)
    assert table[999, 100] == pytest.approx(math.cos(math.sin(theta(2, 100))), abs=1e-6)


def test_time_table_is_frozen_and_reset_is_idempotent():
    model = MyUNet(widths=(4, 8, 16), time_table="original")
    assert not model.time_embed.weight.requires_grad
    torch.manual_seed(1)
    model.reset_parameters()
    first = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    model.reset_parameters()
    assert_close_state_dicts(first, model.state_dict())
    torch.testing.assert_close(model.time_embed.weight, original_time_table(1000, 128))


def test_vdiff_unet_shapes_and_512d_features():
    model = VDiffUNet(base_width=8)
    x, lam = torch.randn(2, 3, 32, 32), torch.tensor([-2.0, 5.0])
    assert model(x, lam).shape == (2, 3, 32, 32)
    acts = model.features(x, lam)
    assert [tuple(a.shape[1:]) for a in acts.values()] == [(32, 4, 4), (16, 8, 8), (8, 16, 16), (8, 32, 32)]
    assert model.feature_dims() == {"enc32": 8, "enc16": 16, "enc8": 32, "mid": 32, "dec8": 16, "dec16": 8,
                                    "dec32": 8}
    full = VDiffUNet()
    assert sum(full.feature_dims()[t] for t in full.DEFAULT_TAPS) == 512
    # spec §4's layout, block by block: R(i, m, o) = Conv3×3(i→m) + Conv3×3(m→o) (+ a bias-free 1×1 skip if i ≠ o)
    layout = [(23, 64, 64), (64, 64, 64), (64, 128, 128), (128, 128, 128), (128, 256, 256), (256, 256, 256),
              (256, 512, 512), (512, 512, 512), (512, 512, 512), (512, 512, 256), (512, 256, 256), (256, 256, 128),
              (256, 128, 128), (128, 128, 64), (128, 64, 64), (64, 64, 3)]
    expected = sum(9 * i * m + m + 9 * m * o + o + (i * o if i != o else 0) for i, m, o in layout)
    assert count_parameters(full) == expected  # ≈ 23 M


def test_mnist_vae_feature_dims():
    model = MnistConvVAE()
    x = torch.rand(2, 1, 28, 28)
    enc = model.features(x, model.ENCODER_TAPS)
    dec = model.features(x, model.DECODER_TAPS)
    assert pooled_dim({k: v.mean((2, 3)) if v.dim() == 4 else v for k, v in enc.items()}) == 236
    assert sum(a.shape[1] for a in dec.values()) == 230
    assert sum(model.feature_dims().values()) == 466


def test_gaussian_kl_is_the_closed_form():
    g = torch.Generator().manual_seed(0)
    mu, log_var = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g,
                                                                                  dtype=torch.float64)
    posterior = torch.distributions.Normal(mu, (0.5 * log_var).exp())
    prior = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(gaussian_kl(mu, log_var), torch.distributions.kl_divergence(posterior, prior).sum(1))


def test_vae_losses_are_the_negative_elbo():
    """MNIST: Bernoulli likelihood (BCE on logits) + KL; CIFAR: unit-variance Gaussian likelihood + β·KL, with
    log σ² = 2 × the encoder's log σ; both summed per image and averaged over the batch (spec §5)."""
    torch.manual_seed(0)
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    mnist = MnistConvVAE(image_size=8, latent_dim=4).double()
    torch.manual_seed(1)
    losses = mnist.loss(x)
    torch.manual_seed(1)
    logits, mu, log_var = mnist(x)
    nll = -torch.distributions.Bernoulli(logits=logits, validate_args=False).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(losses["recon"], nll.mean())
    torch.testing.assert_close(losses["kl"], gaussian_kl(mu, log_var).mean())
    torch.testing.assert_close(losses["loss"], losses["recon"] + losses["kl"])

    cifar = CifarConvVAE(latent_dim=4, width=4, beta=2.5).double().eval()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 2 - 1
    stats = cifar.features(x, ("stats",))["stats"]
    mu, log_var = cifar.encode(x)
    torch.testing.assert_close(mu, stats[:, :4])
    torch.testing.assert_close(log_var, 2 * stats[:, 4:])  # the encoder outputs log σ
    torch.manual_seed(2)
    losses = cifar.loss(x)
    torch.manual_seed(2)
    recon_x, _, _ = cifar(x)
    nll = -torch.distributions.Normal(recon_x, 1.0).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(losses["recon"], nll.mean())
    torch.testing.assert_close(losses["loss"], losses["recon"] + 2.5 * gaussian_kl(mu, log_var).mean())


def test_cifar_vae_feature_dims():
    model = CifarConvVAE()
    dims = model.feature_dims()
    assert sum(dims[t] for t in model.ENCODER_TAPS) == 1504
    assert sum(dims[t] for t in model.DECODER_TAPS) == 992
    assert sum(dims.values()) == 2496
    small = CifarConvVAE(latent_dim=8, width=4)
    acts = small.features(torch.randn(2, 3, 32, 32), small.ENCODER_TAPS + small.DECODER_TAPS)
    assert {k: a.shape[1] for k, a in acts.items()} == small.feature_dims()
    assert small(torch.randn(2, 3, 32, 32))[0].shape == (2, 3, 32, 32)


def test_decoder_features_use_the_mean_unless_sampling():
    model = MnistConvVAE(image_size=8)
    x = torch.rand(4, 1, 8, 8)
    a = model.features(x, ("z",))["z"]
    torch.testing.assert_close(a, model.encode(x)[0])
    g = torch.Generator().manual_seed(0)
    assert not torch.allclose(model.features(x, ("z",), sample_z=True, generator=g)["z"], a)


@pytest.mark.parametrize("build", [lambda: MyUNet(widths=(4, 8, 16)), lambda: VDiffUNet(base_width=4),
                                   lambda: MnistConvVAE(image_size=8), lambda: CifarConvVAE(latent_dim=4, width=4)])
def test_gradients_reach_every_trainable_parameter(build):
    model = build()
    if isinstance(model, MyUNet):
        out = model(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]))
    elif isinstance(model, VDiffUNet):
        model.eval()  # no dropout, so no channel is zeroed by chance
        out = model(torch.randn(2, 3, 32, 32), torch.tensor([0.0, 1.0]))
    else:
        out = model.loss(torch.rand(2, model.config["in_channels"], model.config["image_size"],
                                    model.config["image_size"]))["loss"]
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing, missing


def test_export_and_load_round_trip(tmp_path):
    model = MyUNet(widths=(4, 8, 16), time_table="original", num_classes=10)
    export_model(model, tmp_path / "m", name="diffclassify.myunet", config=model.config, package="diffclassify")
    loaded = load_pretrained(tmp_path / "m")
    assert isinstance(loaded, MyUNet) and loaded.label_conditioned
    assert_close_state_dicts(model.state_dict(), loaded.state_dict())
    assert "time_table='original'" in repr(loaded)
