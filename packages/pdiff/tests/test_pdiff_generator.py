"""The generator bundle: DDPM schedule and forward noising against the closed forms, the OLD clamping sampler,
the autoencoder round trip on a tiny parameter set, and save → load of every part (spec §7, §11, §17)."""

import pytest
import torch
from diffcore.runs import RunDir
from diffcore.testing import reset_accelerate_state
from pdiff.config import CPU_MNIST, with_designs
from pdiff.generator import Generator, make_ddpm, sample_old, train_generator
from pdiff.models import ParamAutoencoder, build_host
from pdiff.params import ParamSpec

pytestmark = pytest.mark.filterwarnings("ignore:generated models")


def test_schedule_and_forward_noising_match_the_closed_forms():
    ddpm = make_ddpm(CPU_MNIST.ddpm)
    betas = torch.linspace(1e-4, 2e-2, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    torch.testing.assert_close(ddpm.alphas_cumprod.double(), abar, atol=1e-6, rtol=0)
    x0, noise = torch.randn(4, 32), torch.randn(4, 32)
    t = torch.tensor([0, 10, 500, 999])
    expected = abar[t].sqrt()[:, None].float() * x0 + (1 - abar[t]).sqrt()[:, None].float() * noise
    torch.testing.assert_close(ddpm.add_noise(x0, noise, t), expected, atol=1e-5, rtol=1e-5)


def test_old_sampler_clamps_every_step():
    class Zero(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t):
            return torch.zeros_like(x) + 3.0  # a large ε̂ pushes x̂₀ out of [−1, 1]

    out = sample_old(make_ddpm(CPU_MNIST.ddpm), Zero(), (64, 12), torch.Generator().manual_seed(0))
    assert out.shape == (64, 12) and out.abs().max() <= 1.0


def test_autoencoder_round_trip_on_a_tiny_parameter_set():
    torch.manual_seed(0)
    data = torch.randn(8, 64) * torch.linspace(0.5, 2, 64)
    ae = ParamAutoencoder(64, (8, 8), latent_dim=16, input_noise=0.001, latent_noise=0.1)
    opt = torch.optim.AdamW(ae.parameters(), lr=3e-3)
    for _ in range(400):
        opt.zero_grad()
        ae.loss(data).backward()
        opt.step()
    recon = ae.eval()(data)[0]
    assert torch.nn.functional.mse_loss(recon, data) < 0.05 * data.var()


def test_train_save_load_generate_on_a_tiny_collection(tmp_path):
    reset_accelerate_state()
    torch.manual_seed(0)
    host = build_host("mnist_mlp", 10, 1)
    spec = ParamSpec.of(host, arch="mnist_mlp", dataset="digits", num_classes=10, in_chans=1, selector="last")
    checkpoints = spec.flatten(dict(host.named_parameters())).detach() + 0.01 * torch.randn(12, spec.dim)
    from dataclasses import replace

    config = replace(CPU_MNIST, ae=replace(CPU_MNIST.ae, steps=6, optim=replace(CPU_MNIST.ae.optim, batch_size=6)),
                     ddpm=replace(CPU_MNIST.ddpm, steps=6, optim=replace(CPU_MNIST.ddpm.optim, batch_size=6)))
    # the OLD autoencoder is built for ResNet-18's D = 2,048 (four stride-5 folds): a synthetic subset of that size
    old_spec = ParamSpec("cifar_resnet18", "digits", 10, 1, "synthetic", ("w",), ((2048,),), "0" * 64)
    old_checkpoints = torch.randn(12, 2048)
    for design in ("new", "old"):
        cfg = with_designs(config, "old-medium", "old-cnn") if design == "old" else config
        if design == "old":
            cfg = replace(cfg, generate=replace(cfg.generate, sampler="old", use_ema=True),
                          ddpm=replace(cfg.ddpm, timesteps=50))  # 50 denoiser passes of the 2.4 M-parameter net
            spec, checkpoints = old_spec, old_checkpoints
        run = RunDir(tmp_path / design)
        run.path.mkdir()
        gen = train_generator(spec, checkpoints, cfg, run)
        gen.save(tmp_path / design / "generator")
        again = Generator.load(tmp_path / design)
        assert again.normaliser == gen.normaliser and again.latent_scale == gen.latent_scale
        for name in ("ae", "denoiser", "ema"):
            a, b = getattr(gen, name).state_dict(), getattr(again, name).state_dict()
            assert all(torch.equal(a[k], b[k]) for k in a), name
        flats = again.generate(3, torch.Generator().manual_seed(0))
        assert flats.shape == (3, spec.dim) and torch.isfinite(flats).all()
        if design == "old":
            assert again.latent_dim == 12 and again.normaliser.mode == "none"  # (4, 3) latent, raw values
        reset_accelerate_state()
