"""Selecting S, flatten → normalise → inverse → unflatten, strict load into the host, refusing other hosts."""

import pytest
import torch
from diffcore.errors import CheckpointError, ConfigError
from pdiff.models import build_host
from pdiff.params import Normaliser, ParamSpec, select_parameters


def _spec(model, selector="norm:2", dataset="mnist", arch="mnist_cnn"):
    return ParamSpec.of(model, arch=arch, dataset=dataset, num_classes=10, in_chans=1, selector=selector)


def test_default_selector_is_the_last_two_norm_layers_in_model_order():
    resnet = build_host("cifar_resnet18", 100, 3)
    assert select_parameters(resnet, "norm:2") == [
        "layer4.1.bn1.weight", "layer4.1.bn1.bias", "layer4.1.bn2.weight", "layer4.1.bn2.bias"]
    assert _spec(resnet, arch="cifar_resnet18").dim == 2048  # spec §4 table
    # names given in another order still flatten in named_parameters() order
    assert select_parameters(resnet, "layer4.1.bn2,layer4.1.bn1") == select_parameters(resnet, "norm:2")
    assert select_parameters(resnet, "re:^fc\\.") == ["fc.weight", "fc.bias"]
    assert select_parameters(resnet, "last") == ["fc.weight", "fc.bias"]
    assert len(select_parameters(resnet, "all")) == len(list(resnet.parameters()))


def test_timm_vit_norm_selector_matches_the_spec_table():
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=100)
    names = select_parameters(vit, "norm:2")
    assert names == ["blocks.11.norm2.weight", "blocks.11.norm2.bias", "norm.weight", "norm.bias"]
    assert sum(dict(vit.named_parameters())[n].numel() for n in names) == 768


@pytest.mark.parametrize("selector", ["nothing.here", "re:^zzz", "norm:0", "re:("])
def test_a_selector_matching_nothing_is_a_config_error(selector):
    with pytest.raises(ConfigError, match="selector"):
        select_parameters(build_host("mnist_cnn", 10, 1), selector)


def test_flatten_normalise_inverse_unflatten_round_trip_and_strict_load():
    torch.manual_seed(0)
    host = build_host("mnist_cnn", 10, 1)
    spec = _spec(host)
    params = dict(host.named_parameters())
    checkpoints = torch.stack([spec.flatten(params).detach() + 0.1 * torch.randn(spec.dim) for _ in range(7)])
    stacked = spec.unflatten(checkpoints)
    assert [tuple(v.shape[1:]) for v in stacked.values()] == list(spec.shapes)
    assert torch.equal(spec.flatten(stacked), checkpoints)  # exact, batched
    assert torch.equal(spec.flatten(spec.unflatten(checkpoints[3])), checkpoints[3])  # exact, one model
    norm = Normaliser.fit(spec, checkpoints, "zscore", pad_to=64)
    coded = norm.encode(checkpoints)
    assert spec.dim == 128 and coded.shape == (7, 128)
    for i, part in enumerate(spec.unflatten(coded[:, : spec.dim]).values()):  # standardised per tensor
        assert part.reshape(7, -1).mean().item() == pytest.approx(0.0, abs=1e-5), i
        assert part.reshape(7, -1).std(1, unbiased=False).mean().item() == pytest.approx(1.0, abs=1e-4), i
    torch.testing.assert_close(norm.decode(coded), checkpoints, atol=1e-6, rtol=0)
    raw = Normaliser.fit(spec, checkpoints, "none")
    assert torch.equal(raw.decode(raw.encode(checkpoints)), checkpoints)
    # JSON round trip of the statistics
    again = Normaliser.from_json(spec, norm.to_json())
    assert torch.equal(again.encode(checkpoints), coded)
    # strict load into the host: exactly the selected tensors change
    before = {k: v.clone() for k, v in host.state_dict().items()}
    spec.load_into(host, checkpoints[2])
    after = host.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == set(spec.names)
    assert torch.equal(spec.flatten(dict(host.named_parameters())).detach(), checkpoints[2])


def test_manifest_refuses_a_host_it_was_not_made_for():
    torch.manual_seed(0)
    host = build_host("mnist_cnn", 10, 1)
    spec = ParamSpec.from_json(_spec(host).to_json())
    spec.check_host(host, "mnist", "gen")  # the right host passes
    with pytest.raises(CheckpointError, match="dataset 'mnist', not 'digits'"):
        spec.check_host(host, "digits", "gen")
    other = build_host("mnist_cnn", 10, 1)  # same architecture, other frozen weights
    with pytest.raises(CheckpointError, match="frozen weights differ"):
        spec.check_host(other, "mnist", "gen")
    with pytest.raises(CheckpointError, match="shapes differ"):
        spec.check_host(build_host("cifar_cnn", 10, 1), "mnist", "gen")
    with pytest.raises(CheckpointError, match="no parameter"):
        spec.check_host(build_host("mnist_mlp", 10, 1), "mnist", "gen")
    with pytest.raises(CheckpointError, match="numbers"):
        spec.unflatten(torch.zeros(3, spec.dim + 1))
