"""diffcore.ddpm against the closed forms of Ho et al. (2020): schedule, forward process, loss, samplers, EMA."""

import math

import pytest
import torch
from diffcore.ddpm import DDPM, EMA
from diffcore.errors import ConfigError
from diffcore.runs import RunDir
from diffcore.testing import assert_close_state_dicts, reset_accelerate_state
from diffcore.train import FullBatch, TrainConfig, Trainer


@pytest.fixture(scope="module")
def ddpm():
    return DDPM(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02)


def test_linear_schedule_and_cumulative_product(ddpm):
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1 - betas, dim=0)
    torch.testing.assert_close(ddpm.betas.double(), betas, rtol=0, atol=1e-8)
    torch.testing.assert_close(ddpm.alphas_cumprod.double(), alphas_cumprod, rtol=1e-5, atol=1e-7)
    assert ddpm.alphas_cumprod[-1] < 1e-4 < ddpm.alphas_cumprod[0]  # x_T is almost pure noise


def test_forward_noising_is_the_closed_form(ddpm):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    ab = ddpm.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(ddpm.add_noise(x0, noise, t), ab.sqrt() * x0 + (1 - ab).sqrt() * noise)


@pytest.mark.parametrize("t", [10, 100, 500])
def test_noise_std_matches_the_schedule(ddpm, t):
    g = torch.Generator().manual_seed(t)
    x0 = torch.randn(20_000, 16, generator=g)
    x_t = ddpm.add_noise(x0, torch.randn(x0.shape, generator=g), torch.full((20_000,), t))
    residual = x_t - ddpm.alphas_cumprod[t].sqrt() * x0
    assert residual.std().item() == pytest.approx(math.sqrt(1 - ddpm.alphas_cumprod[t].item()), rel=0.01)


def test_an_oracle_denoiser_has_zero_loss(ddpm):
    """For x_0 = 0, x_t = √(1 − ᾱ_t) ε, so ε = x_t / √(1 − ᾱ_t) exactly."""
    x0 = torch.zeros(64, 5)

    def oracle(x_t, t):
        return x_t / (1 - ddpm.alphas_cumprod[t]).sqrt().unsqueeze(-1)

    assert ddpm.loss(oracle, x0, generator=torch.Generator().manual_seed(0)).item() < 1e-8
    assert ddpm.loss(lambda x, t: torch.zeros_like(x), x0).item() == pytest.approx(1.0, rel=0.3)


def gaussian_denoiser(ddpm, mean, std):
    """The exact E[ε | x_t] for data x_0 ~ N(mean, std²): √(1 − ᾱ)(x_t − √ᾱ·mean) / (ᾱ·std² + 1 − ᾱ)."""

    def denoise(x_t, t):
        ab = ddpm.alphas_cumprod[t].unsqueeze(-1)
        return (1 - ab).sqrt() * (x_t - ab.sqrt() * mean) / (ab * std**2 + 1 - ab)

    return denoise


@pytest.mark.parametrize("sampler, steps", [("ddpm", None), ("ddim", 50), ("ddpm", 100)])
def test_samplers_reproduce_a_gaussian(ddpm, sampler, steps):
    samples = ddpm.sample(gaussian_denoiser(ddpm, 2.0, 0.5), (4000, 1), sampler=sampler, steps=steps,
                          generator=torch.Generator().manual_seed(1))
    assert samples.mean().item() == pytest.approx(2.0, abs=0.03)
    assert samples.std().item() == pytest.approx(0.5, abs=0.03)


def test_sampling_is_reproducible_and_refuses_bad_steps(ddpm):
    model = gaussian_denoiser(ddpm, 0.0, 1.0)
    a = ddpm.sample(model, (3, 2), steps=20, generator=torch.Generator().manual_seed(5))
    b = ddpm.sample(model, (3, 2), steps=20, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="sampling steps"):
        ddpm.sample(model, (3, 2), steps=0)
    with pytest.raises(FloatingPointError):
        ddpm.sample(lambda x, t: torch.full_like(x, float("nan")), (3, 2), steps=2)


def test_ema_starts_at_start_step_then_averages_with_decay():
    model = torch.nn.BatchNorm1d(2)
    ema = EMA(model, decay=0.9, start_step=2)
    with torch.no_grad():
        model.weight.fill_(5.0)
        model.running_mean.fill_(3.0)
    ema.update(model, step=1)  # before start_step: nothing
    assert torch.equal(ema.module.weight, torch.ones(2))
    ema.update(model, step=2)  # the first update copies
    assert torch.equal(ema.module.weight, torch.full((2,), 5.0))
    with torch.no_grad():
        model.weight.fill_(15.0)
        model.running_mean.fill_(13.0)
    ema.update(model, step=3)
    torch.testing.assert_close(ema.module.weight, torch.full((2,), 0.9 * 5 + 0.1 * 15))
    torch.testing.assert_close(ema.module.running_mean, torch.full((2,), 0.9 * 3 + 0.1 * 13))  # buffers too


class _Stop(Exception):
    pass


def _ema_trainer(path, mode="new", stop_after=None):
    reset_accelerate_state()
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(1))
    y = x.sum(dim=1, keepdim=True)
    config = TrainConfig(epochs=6, cpu=True, progress=False)
    run = RunDir.create(path, config, package="diffcore", command="test", mode=mode)
    calls = iter(range(100))

    def loss(m, batch):
        if stop_after is not None and next(calls) == stop_after:
            raise _Stop
        return torch.nn.functional.mse_loss(m(batch[0]), batch[1])

    ema = EMA(model, decay=0.5)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), config, FullBatch((x, y)), run=run,
                      loss_fn=loss, ema=ema)
    return trainer, ema


def test_trainer_updates_ema_and_resume_continues_it(tmp_path):
    full, full_ema = _ema_trainer(tmp_path / "full")
    full.fit()
    assert not torch.equal(full_ema.module.weight, full.unwrapped_model().weight)  # an average, not a copy
    cut, _ = _ema_trainer(tmp_path / "cut", stop_after=3)
    with pytest.raises(_Stop):
        cut.fit()
    resumed, resumed_ema = _ema_trainer(tmp_path / "cut", mode="resume")
    resumed.fit(resume=True)
    assert_close_state_dicts(full_ema.state_dict(), resumed_ema.state_dict())
    reset_accelerate_state()
