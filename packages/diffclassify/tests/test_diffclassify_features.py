"""Feature extraction: shapes per source and block selection (§15.1), no labels (§15.3), noise, the cache."""

import inspect

import pytest
import torch
from diffclassify.diffusion import DiscreteProcess, VDiffusionProcess, linear_schedule_kwargs
from diffclassify.features import (
    ExtractionPlan,
    FeatureSet,
    cached_extraction,
    extract_features,
    extract_leaky_features,
    resolve_blocks,
    select_rows,
)
from diffclassify.models import CifarConvVAE, MnistConvVAE, MyUNet, VDiffUNet
from diffcore.ddpm import DDPM
from diffcore.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def process():
    return DiscreteProcess(DDPM(**linear_schedule_kwargs(1000)))


def images(n: int, size: int = 28, channels: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, size, size, channels), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("blocks", "dim"), [((), 80), (("b_mid",), 40), (("b1", "b_out"), 20),
                                             (("b1", "b2", "b3", "b_mid", "b4", "b5", "b_out"), 150)])
def test_ddpm_feature_shapes_per_block_selection(process, blocks, dim):
    model = MyUNet()
    blocks = resolve_blocks(model, "ddpm", blocks)
    feats = extract_features(model, process, images(5), ExtractionPlan("ddpm", blocks, (100,), batch_size=2))
    assert feats.shape == (5, dim) and feats.dtype == torch.float32


def test_multi_timestep_features_concatenate(process):
    model = MyUNet(widths=(4, 8, 16))
    plan = ExtractionPlan("ddpm", model.DEFAULT_TAPS, (10, 500))
    both = extract_features(model, process, images(3), plan)
    assert both.shape == (3, 2 * 32)  # b_mid 16 + b4 8 + b5 4 + b_out 4, per timestep
    first = extract_features(model, process, images(3), ExtractionPlan("ddpm", model.DEFAULT_TAPS, (10,)))
    torch.testing.assert_close(both[:, :32], first)  # each timestep draws from its own noise stream


@pytest.mark.parametrize(("source", "dim"), [("vae-encoder", 236), ("vae-decoder", 230), ("vae-mix", 466)])
def test_mnist_vae_feature_shapes(source, dim):
    model = MnistConvVAE()
    feats = extract_features(model, None, images(4), ExtractionPlan(source, resolve_blocks(model, source, ())))
    assert feats.shape == (4, dim)


@pytest.mark.parametrize(("source", "dim"), [("vae-encoder", 1504), ("vae-decoder", 992), ("vae-mix", 2496)])
def test_cifar_vae_feature_shapes(source, dim):
    model = CifarConvVAE()
    blocks = resolve_blocks(model, source, ())
    assert sum(model.feature_dims()[b] for b in blocks) == dim
    small = CifarConvVAE(latent_dim=8, width=4)
    feats = extract_features(small, None, images(2, 32, 3), ExtractionPlan(source, resolve_blocks(small, source, ())))
    assert feats.shape == (2, sum(small.feature_dims()[b] for b in blocks))


def test_vdiff_and_pixel_features():
    model = VDiffUNet(base_width=4)
    feats = extract_features(model, VDiffusionProcess(), images(2, 32, 3),
                             ExtractionPlan("ddpm", model.DEFAULT_TAPS, (50,)))
    assert feats.shape == (2, 16 + 8 + 4 + 4)
    colour = images(3, 4, 3)
    pixels = extract_features(None, None, colour, ExtractionPlan("pixels"))
    # the image itself in [0, 1], channel-major as the models see it: [N, C·H·W]
    torch.testing.assert_close(pixels, colour.permute(0, 3, 1, 2).flatten(1).float() / 255, rtol=0, atol=0)


def test_block_errors_name_the_valid_blocks():
    with pytest.raises(ConfigError, match=r"valid blocks: conv1, conv2, conv3, stats$"):
        resolve_blocks(MnistConvVAE(), "vae-encoder", ("z",))
    with pytest.raises(ConfigError, match="does not apply to --source pixels"):
        resolve_blocks(None, "pixels", ("b1",))


def test_the_extractor_takes_no_labels():
    for fn in (extract_features, MyUNet.features, VDiffUNet.features):
        params = inspect.signature(fn).parameters
        assert not {"labels", "label", "targets"} & set(params), fn
    assert "y" not in inspect.signature(extract_features).parameters


def test_label_conditioned_model_is_refused_and_leaky_path_is_explicit(process):
    model = MyUNet(widths=(4, 8, 16), num_classes=10)
    plan = ExtractionPlan("ddpm", model.DEFAULT_TAPS, (100,))
    with pytest.raises(ConfigError, match="label-conditioned"):
        extract_features(model, process, images(2), plan)
    labels = torch.tensor([3, 7])
    leaky = extract_leaky_features(model, process, images(2), labels, plan)
    other = extract_leaky_features(model, process, images(2), torch.tensor([4, 8]), plan)
    assert leaky.shape == (2, 32) and not torch.allclose(leaky, other)  # the labels do reach the features
    with pytest.raises(ConfigError):
        extract_leaky_features(MyUNet(widths=(4, 8, 16)), process, images(2), labels, plan)


def test_noise_does_not_depend_on_the_batch_size(process):
    model = MyUNet(widths=(4, 8, 16))
    x = images(7)
    a = extract_features(model, process, x, ExtractionPlan("ddpm", model.DEFAULT_TAPS, (100,), noise_draws=3,
                                                           batch_size=7))
    b = extract_features(model, process, x, ExtractionPlan("ddpm", model.DEFAULT_TAPS, (100,), noise_draws=3,
                                                           batch_size=2))
    torch.testing.assert_close(a, b)
    c = extract_features(model, process, x, ExtractionPlan("ddpm", model.DEFAULT_TAPS, (100,), noise_draws=3,
                                                           seed=1))
    assert not torch.allclose(a, c)


def test_noise_draws_average(process):
    """K draws average the features: their spread across seeds shrinks roughly like 1/√K."""
    model = MyUNet(widths=(4, 8, 16))
    x = images(1).expand(1, 28, 28, 1)

    def spread(k: int) -> float:
        runs = torch.stack([extract_features(model, process, x, ExtractionPlan("ddpm", ("b_out",), (500,),
                                                                               noise_draws=k, seed=s))
                            for s in range(12)])
        return runs.std(0).mean().item()

    assert spread(16) < 0.5 * spread(1)


def _extract(tmp_path, model, process, **plan):
    train, test = images(12, seed=1), images(6, seed=2)
    train_labels, test_labels = torch.arange(12) // 4, torch.arange(6) % 3
    return cached_extraction(model, process, train, train_labels, select_rows(train_labels, 2), test, test_labels,
                             select_rows(test_labels, None), ExtractionPlan("ddpm", model.DEFAULT_TAPS, (100,), **plan),
                             {"num_classes": 3, "source": "ddpm", "dataset": "toy"},
                             {"checkpoint": "abc", "source": "ddpm", "timesteps": [100], **plan}, tmp_path)


def test_cache_is_reused_and_keyed(tmp_path, process, monkeypatch):
    model = MyUNet(widths=(4, 8, 16))
    first = _extract(tmp_path, model, process)
    assert not first.cached and first.path.exists()
    assert first.features.train_index.tolist() == [0, 1, 4, 5, 8, 9]  # first 2 per class, dataset order
    calls = []
    original = MyUNet.features
    monkeypatch.setattr(MyUNet, "features", lambda *a, **k: calls.append(1) or original(*a, **k))
    second = _extract(tmp_path, model, process)
    assert second.cached and not calls and second.path == first.path
    torch.testing.assert_close(second.features.train_features, first.features.train_features)
    third = _extract(tmp_path, model, process, seed=5)  # another key → computed
    assert not third.cached and calls and third.path != first.path


def test_feature_file_round_trip_and_errors(tmp_path):
    fs = FeatureSet(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), torch.arange(4), torch.randn(2, 3),
                    torch.tensor([0, 1]), torch.arange(2), {"source": "pixels", "dataset": "toy"})
    fs.save(tmp_path / "f.safetensors")
    back = FeatureSet.load(tmp_path / "f.safetensors")
    torch.testing.assert_close(back.train_features, fs.train_features)
    assert back.meta["dataset"] == "toy"
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(DataError, match="not a readable safetensors"):
        FeatureSet.load(tmp_path / "junk.safetensors")
    with pytest.raises(DataError, match="does not exist"):
        FeatureSet.load(tmp_path / "none.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(DataError, match="not a diffclassify features file"):
        FeatureSet.load(tmp_path / "other.safetensors")


def test_diffusers_unet_folder_as_feature_source(tmp_path, monkeypatch):
    """A user-supplied diffusers UNet2DModel (+ scheduler) folder works with `extract` (spec §4 optional backend)."""
    from click.testing import CliRunner
    from diffclassify.cli import main
    from diffusers import DDPMScheduler, UNet2DModel

    monkeypatch.setenv("DIFFNETS_CACHE", str(tmp_path / "cache"))
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    unet.save_pretrained(tmp_path / "pipe" / "unet")
    scheduler = DDPMScheduler(num_train_timesteps=500, beta_start=2e-4, beta_end=0.04)
    scheduler.save_pretrained(tmp_path / "pipe" / "scheduler")
    result = CliRunner().invoke(main, ["extract", "--model", str(tmp_path / "pipe" / "unet"), "--dataset", "digits",
                                       "--train-per-class", "3", "--timestep", "11", "--output-dir",
                                       str(tmp_path / "e")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    fs = FeatureSet.load(tmp_path / "e" / "features.safetensors")
    assert fs.dim == 16 + 8 and fs.meta["blocks"] == ["up0", "up1"] and fs.meta["process"]["num_steps"] == 500
    refused = CliRunner().invoke(main, ["extract", "--model", str(tmp_path / "pipe" / "unet"), "--dataset", "digits",
                                        "--blocks", "up7", "--output-dir", str(tmp_path / "x")])
    assert refused.exit_code == 1 and "valid blocks: up0, up1" in refused.output
