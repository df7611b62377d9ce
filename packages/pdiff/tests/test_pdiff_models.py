"""Shapes, sizes and gradients of the hosts, autoencoders and denoisers (spec §6, §7, §17.2–3)."""

import pytest
import torch
from pdiff.models import (
    CNNMedium,
    LatentDenoiser1D,
    OldLatentDenoiser,
    OldParamAutoencoder,
    ParamAutoencoder,
    build_host,
)


def _count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("dim", "channels", "latent"), [
    (384, (16, 32, 32, 8), 32), (2048, (64, 128, 256, 256, 32), 128)])
def test_new_autoencoder_shapes_and_gradients(dim, channels, latent):
    ae = ParamAutoencoder(dim, channels, latent)
    v = torch.randn(3, dim)
    assert ae.encode(v).shape == (3, latent) and ae.eval()(v)[0].shape == (3, dim)
    ae.train()
    ae.loss(v).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in ae.parameters())
    if dim == 2048:
        assert 2.1e6 < _count(ae) < 2.3e6  # spec §6.1: ≈ 2.2 M


def test_old_autoencoder_has_a_12_number_latent_for_resnet18_bns():
    ae = OldParamAutoencoder(2048)
    assert ae.padded_dim == 2500 and (ae.latent_channels, ae.latent_len) == (4, 3)
    z = ae.encode(torch.randn(2, 2048))
    assert z.shape == (2, 12) and z.abs().max() < 1  # Tanh
    assert ae.eval()(torch.randn(2, 2048))[0].shape == (2, 2048)
    ae.train()
    assert 400 < _count(ae.encoder) < 700 and 0.9e6 < _count(ae.decoder) < 1.1e6  # spec §6.2
    ae.loss(torch.randn(4, 2048)).backward()


def test_denoisers_shapes_sizes_and_per_sample_time_embedding():
    new = LatentDenoiser1D(128)
    assert 2.4e6 < _count(new) < 2.5e6  # spec §7: ≈ 2.46 M
    t = torch.tensor([0, 1, 500, 999])
    emb = new.time_embedding(t)
    assert emb.shape == (4, 1, 128)
    assert all(not torch.allclose(emb[i], emb[j]) for i in range(4) for j in range(i))
    assert new(torch.randn(4, 128), t).shape == (4, 128)
    old = OldLatentDenoiser(12)
    assert 2.3e6 < _count(old) < 2.4e6  # spec §7: ≈ 2.36 M
    assert old(torch.randn(4, 12), t).shape == (4, 12)
    cpu = LatentDenoiser1D(32, (1, 32, 64, 32, 1))
    out = cpu(torch.randn(5, 32), torch.randint(0, 1000, (5,)))
    out.square().mean().backward()
    assert out.shape == (5, 32) and all(p.grad is not None for p in cpu.parameters())


def test_old_time_embedding_bug_uses_the_first_t_in_training_only():
    torch.manual_seed(0)
    model = OldLatentDenoiser(12, (8, 8, 8, 8), time_embed_bug=True)
    x = torch.randn(1, 12).expand(2, 12)
    t = torch.tensor([3, 700])
    out = model.train()(x, t)
    assert torch.allclose(out[0], out[1])  # both conditioned on t = 3
    out = model.eval()(x, t)
    assert not torch.allclose(out[0], out[1])


def test_hosts_forward_and_reset():
    assert _count(CNNMedium()) == 10853  # spec §12
    for arch, chans, size in [("mnist_mlp", 1, 28), ("mnist_cnn", 1, 28), ("cifar_cnn", 3, 32),
                              ("mnist_cnnmedium", 3, 32), ("cifar_resnet18", 3, 32)]:
        model = build_host(arch, 7, chans)
        assert model(torch.randn(2, chans, size, size)).shape == (2, 7), arch
    model = build_host("mnist_cnn", 10, 1)
    torch.manual_seed(1)
    model.reset_parameters()
    first = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    model.reset_parameters()
    assert all(torch.equal(first[k], v) for k, v in model.state_dict().items())
