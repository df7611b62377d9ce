"""Noise schedule and forward noising against closed forms (issue 9 point 3, spec §3.2, §4, §15.2)."""

import itertools

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


@pytest.mark.parametrize("variance", ["standard", "original"])
@pytest.mark.parametrize("conditional", [False, True])
def test_loss_is_the_epsilon_mse_of_each_forward_process(schedule, variance, conditional):
    """t ~ U{0…T−1}, ε ~ N(0, I), loss = mean (ε̂(x_t, t) − ε)² with x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, or with the
    original's variance 1 − √ᾱ_t (spec §3.2); the labels reach a label-conditioned model. The draws are replayed."""
    model = MyUNet(image_size=8, widths=(4, 8, 16), num_classes=10 if conditional else None)
    labels = torch.tensor([0, 1, 2, 3, 4, 5]) if conditional else None
    x0 = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    torch.manual_seed(0)
    loss = DiscreteProcess(schedule, variance).loss(model, x0, labels)
    torch.manual_seed(0)
    t = torch.randint(0, 1000, (6,))
    eps = torch.randn_like(x0)
    abar = schedule.alphas_cumprod.double()[t].view(-1, 1, 1, 1)
    var = 1 - abar if variance == "standard" else 1 - abar.sqrt()
    x_t = (abar.sqrt() * x0 + var.sqrt() * eps).float()
    extra = () if labels is None else (labels,)
    torch.testing.assert_close(loss, torch.nn.functional.mse_loss(model(x_t, t, *extra), eps), atol=1e-6, rtol=1e-5)


def test_unet_trains_and_samples_with_the_core(schedule):
    model = MyUNet(image_size=8, widths=(4, 8, 16))
    process = DiscreteProcess(schedule)
    process.loss(model, torch.rand(4, 1, 8, 8) * 2 - 1).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    out = process.sample(model, (2, 1, 8, 8), sampler="ddim", steps=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 8, 8) and out.isfinite().all()


def test_vdiffusion_schedule():
    vd = VDiffusionProcess()
    t = torch.linspace(0, 1, 101)
    lam = vd.log_snr(t)
    assert torch.all(lam[1:] < lam[:-1])  # SNR falls with t
    alpha, sigma = vd.alpha_sigma(lam)
    torch.testing.assert_close(alpha.square() + sigma.square(), torch.ones(101))
    # empirical std of x_t − α x₀ equals σ (the same q(x_t|x_0) form, with ᾱ = α²)
    x0, noise = torch.rand(20000) * 2 - 1, torch.randn(20000)
    x_t, lam = vd.noise(x0[:, None], 50, noise[:, None])
    torch.testing.assert_close(lam, log_snr(torch.full((20000,), 0.05)).float())  # step 50 of 1000 = t 0.05
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


def log_snr(t: torch.Tensor) -> torch.Tensor:
    """Crowson's CIFAR-10 schedule, spec §4: λ(t) = −log(expm1(1e-4 + 10 t²))."""
    return -torch.log(torch.expm1(1e-4 + 10 * t.double() ** 2))


def test_vdiffusion_loss_is_the_weighted_v_mse():
    """loss = mean over samples of sigmoid(λ) · mean over pixels of (v̂ − v)², v = α ε − σ x_0, with t drawn one
    per stratum of [0, 1] (the same draws replayed from the seed)."""
    model = VDiffUNet(base_width=4).eval()  # no dropout: both evaluations see the same network
    x0 = torch.rand(4, 3, 32, 32) * 2 - 1
    torch.manual_seed(3)
    loss = VDiffusionProcess().loss(model, x0)
    torch.manual_seed(3)
    t = ((torch.arange(4) + torch.rand(4)) / 4)[torch.randperm(4)]
    eps = torch.randn_like(x0)
    lam = log_snr(t).float()
    alpha, sigma = torch.sigmoid(lam).sqrt().view(-1, 1, 1, 1), torch.sigmoid(-lam).sqrt().view(-1, 1, 1, 1)
    with torch.no_grad():
        per_sample = (model(alpha * x0 + sigma * eps, lam) - (alpha * eps - sigma * x0)).square().mean((1, 2, 3))
    torch.testing.assert_close(loss.detach(), (torch.sigmoid(lam) * per_sample).mean())
    assert sorted((t * 4).floor().long().tolist()) == [0, 1, 2, 3]


class Oracle:
    """The exact v-prediction when the data is the single point x*: v = α ε − σ x*, ε = (x_t − α x*) / σ;
    records every x_t it is given."""

    def __init__(self, target: torch.Tensor):
        self.target, self.seen = target, []

    def __call__(self, x: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        self.seen.append((x.clone(), lam[0].double()))
        alpha, sigma = torch.sigmoid(lam[0]).sqrt(), torch.sigmoid(-lam[0]).sqrt()
        return alpha * (x - alpha * self.target) / sigma - sigma * self.target


def test_vdiffusion_sampler_follows_the_ddim_update():
    """η = 0 keeps one ε along the whole path, x_t = α_t x* + σ_t ε, and ends on x*; η = 1 keeps the marginal
    noise std σ_t while renewing the fraction c/σ' of it: c = η (σ'/σ) √(1 − α²/α'²) (spec §4, DDIM)."""
    target = torch.full((20000, 1), 0.3)
    oracle = Oracle(target)
    out = VDiffusionProcess().sample(oracle, tuple(target.shape), steps=8, eta=0.0,
                                     generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, target, atol=1e-4, rtol=0)
    x, lam = oracle.seen[0]
    eps = (x - torch.sigmoid(lam).sqrt() * target) / torch.sigmoid(-lam).sqrt()
    for x, lam in oracle.seen[1:]:
        expected = torch.sigmoid(lam).sqrt() * target + torch.sigmoid(-lam).sqrt() * eps
        torch.testing.assert_close(x, expected.to(x.dtype), atol=1e-4, rtol=0)

    oracle = Oracle(target)
    VDiffusionProcess().sample(oracle, tuple(target.shape), steps=8, eta=1.0,
                               generator=torch.Generator().manual_seed(1))
    noise = [((x - torch.sigmoid(lam).sqrt() * target) / torch.sigmoid(-lam).sqrt(), lam) for x, lam in oracle.seen]
    for (e, lam), (e_next, lam_next) in itertools.pairwise(noise):
        a, s = torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()
        a_next, s_next = torch.sigmoid(lam_next).sqrt(), torch.sigmoid(-lam_next).sqrt()
        c = (s_next / s) * (1 - a ** 2 / a_next ** 2).clamp(min=0).sqrt()
        assert e_next.std().item() == pytest.approx(1.0, abs=0.03)
        kept = torch.corrcoef(torch.stack([e[:, 0], e_next[:, 0]]).double())[0, 1]
        assert kept.item() == pytest.approx((1 - (c / s_next) ** 2).sqrt().item(), abs=0.03)
