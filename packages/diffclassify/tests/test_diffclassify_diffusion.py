"""Noise schedule and forward noising against closed forms (issue 9 point 3, spec §3.2, §4, §15.2)."""

import pytest
import torch
from diffclassify.diffusion import (
    DiscreteProcess,
    VDiffusionProcess,
    linear_schedule_kwargs,
    noise_std,
    snr_matched_step,
)
from diffclassify.models import MyUNet, VDiffUNet
from diffcore.ddpm import DDPM


@pytest.fixture(scope="module")
def schedule():
    return DDPM(**linear_schedule_kwargs(1000))


def test_schedule_is_the_specs_linear_betas(schedule):
    expected = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    torch.testing.assert_close(schedule.betas.double(), expected, atol=1e-7, rtol=0)
    abar = torch.cumprod(1 - expected, 0)
    torch.testing.assert_close(schedule.alphas_cumprod.double(), abar, atol=1e-5, rtol=1e-4)
    # s = 1000/T scales the betas for other lengths (β_T = 0.02·1000/T)
    short = DDPM(**linear_schedule_kwargs(250))
    assert float(short.betas[-1]) == pytest.approx(0.08, rel=1e-5)


@pytest.mark.parametrize("variance", ["standard", "original"])
@pytest.mark.parametrize("t", [10, 50, 100, 500, 900])
def test_empirical_noise_std_matches_the_closed_form(schedule, variance, t):
    process = DiscreteProcess(schedule, variance)
    g = torch.Generator().manual_seed(t)
    x0 = torch.rand(4000, 1, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    x_t, _ = process.noise(x0, t, noise)
    abar = schedule.alphas_cumprod[t].double()
    residual = x_t - abar.sqrt().float() * x0
    expected = (1 - abar).sqrt() if variance == "standard" else (1 - abar.sqrt()).sqrt()
    assert residual.std().item() == pytest.approx(expected.item(), rel=0.01)


def test_standard_noising_equals_the_cores(schedule):
    process = DiscreteProcess(schedule)
    x0, noise, t = torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4), torch.tensor([0, 1, 10, 100, 500, 999])
    torch.testing.assert_close(process.add_noise(x0, noise, t), schedule.add_noise(x0, noise, t), atol=1e-5, rtol=1e-5)


def test_spec_table_of_noise_stds_and_matched_steps(schedule):
    abar = schedule.alphas_cumprod
    original, standard = noise_std(abar, "original"), noise_std(abar, "standard")
    for t, o, s, matched in [(10, 0.033, 0.047, 6), (50, 0.123, 0.173, 34), (100, 0.232, 0.324, 71),
                             (500, 0.849, 0.960, 477)]:
        assert original[t].item() == pytest.approx(o, abs=1.5e-3)
        assert standard[t].item() == pytest.approx(s, abs=1.5e-3)
        assert snr_matched_step(abar, t) == matched


def test_legacy_loss_trains_on_legacy_noise(schedule, monkeypatch):
    """With variance="original" the model sees √ᾱ x₀ + √(1 − √ᾱ) ε and must predict that ε."""
    process = DiscreteProcess(schedule, "original")
    seen = {}

    def denoiser(x_t, t):
        seen["x_t"], seen["t"] = x_t, t
        return torch.zeros_like(x_t)

    torch.manual_seed(0)
    x0 = torch.zeros(8, 1, 4, 4)
    loss = process.loss(denoiser, x0)
    std = process.std[seen["t"]].view(-1, 1, 1, 1)
    eps = seen["x_t"] / std
    assert loss.item() == pytest.approx(eps.square().mean().item(), rel=1e-5)


def test_unet_trains_and_samples_with_the_core(schedule):
    model = MyUNet(image_size=8, widths=(4, 8, 16))
    process = DiscreteProcess(schedule)
    loss = process.loss(model, torch.rand(4, 1, 8, 8) * 2 - 1)
    loss.backward()
    assert loss.isfinite()
    out = process.sample(model, (2, 1, 8, 8), sampler="ddim", steps=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 8, 8) and out.isfinite().all()
    conditional = MyUNet(image_size=8, widths=(4, 8, 16), num_classes=10)
    assert process.loss(conditional, torch.zeros(3, 1, 8, 8), torch.tensor([0, 1, 2])).isfinite()


def test_vdiffusion_schedule():
    vd = VDiffusionProcess()
    t = torch.linspace(0, 1, 101)
    lam = vd.log_snr(t)
    assert torch.all(lam[1:] < lam[:-1])  # SNR falls with t
    alpha, sigma = vd.alpha_sigma(lam)
    torch.testing.assert_close(alpha.square() + sigma.square(), torch.ones(101))
    # empirical std of x_t − α x₀ equals σ (the same q(x_t|x_0) form, with ᾱ = α²)
    x0, noise = torch.rand(20000) * 2 - 1, torch.randn(20000)
    x_t, _ = vd.noise(x0[:, None], 50, noise[:, None])
    a, s = vd.alpha_sigma(vd.log_snr(torch.tensor(0.05)))
    assert (x_t[:, 0] - a * x0).std().item() == pytest.approx(s.item(), rel=0.02)


def test_vdiffusion_loss_and_sampler():
    model = VDiffUNet(base_width=4)
    vd = VDiffusionProcess()
    loss = vd.loss(model, torch.rand(2, 3, 32, 32) * 2 - 1)
    loss.backward()
    assert loss.isfinite()
    model.eval()
    x = vd.sample(model, (2, 3, 32, 32), steps=3, eta=1.0, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 32, 32) and x.isfinite().all()
