"""Batched evaluation equals one-at-a-time evaluation; IoU, similarity aggregates and baselines (spec §9, §17.4)."""

import pytest
import torch
from pdiff.evaluate import (
    accuracy_stats,
    average_of_random,
    gaussian_fit,
    iou_matrix,
    nearest_distance,
    predict_looped,
    predict_many,
    similarity,
    weight_average,
)
from pdiff.models import build_host
from pdiff.params import ParamSpec


@pytest.mark.parametrize(("arch", "chans", "size", "selector"), [
    ("mnist_cnn", 1, 28, "norm:2"), ("mnist_cnn", 1, 28, "bns.1,bn_fc"),
    ("mnist_mlp", 1, 28, "last"), ("mnist_cnnmedium", 3, 32, "all"),
    ("torchvision:resnet18", 3, 32, "norm:2")])
def test_batched_evaluation_equals_one_at_a_time(arch, chans, size, selector):
    torch.manual_seed(0)
    host = build_host(arch, 10, chans).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode matters
        for name, buf in host.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.2)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2)
    spec = ParamSpec.of(host, arch=arch, dataset="x", num_classes=10, in_chans=chans, selector=selector)
    base = spec.flatten(dict(host.named_parameters())).detach()
    flats = base + 0.3 * torch.randn(9, spec.dim)
    images = torch.randint(0, 256, (70 if "resnet" not in arch else 6, chans, size, size), dtype=torch.uint8)

    def prepare(x):
        return x.float() / 255 - 0.5

    batched = predict_many(host, spec, flats, images, prepare, batch_size=32, chunk=4)
    looped = predict_looped(host, spec, flats, images, prepare, batch_size=len(images))
    assert torch.equal(batched, looped)
    assert len(set(map(tuple, batched.tolist()))) > 1  # the models really differ
    # and equals writing each vector into the host
    for m in (0, 8):
        spec.load_into(host, flats[m])
        with torch.no_grad():
            assert torch.equal(host(prepare(images)).argmax(-1), batched[m])


def test_iou_is_one_for_identical_models_and_bounded():
    wrong = torch.rand(6, 200) < 0.2
    iou = iou_matrix(wrong, wrong)
    assert torch.allclose(iou.diagonal(), torch.ones(6, dtype=iou.dtype))
    assert (iou >= 0).all() and (iou <= 1).all()
    none = torch.zeros(2, 200, dtype=torch.bool)
    assert torch.equal(iou_matrix(none, none), torch.ones(2, 2, dtype=iou.dtype))  # both empty → 1
    a = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)
    b = torch.tensor([[0, 1, 1, 0]], dtype=torch.bool)
    assert iou_matrix(a, b).item() == pytest.approx(1 / 3)


def test_similarity_aggregates():
    torch.manual_seed(0)
    originals = torch.rand(8, 300) < 0.1
    generated = originals[torch.randint(8, (5,))] ^ (torch.rand(5, 300) < 0.02)
    sim = similarity(originals, generated)
    assert sim["og_max"] >= sim["og_mean"]
    assert 0 <= sim["oo"] <= 1 and 0 <= sim["gg"] <= 1
    assert sim["max_iou"].shape == (5,)
    same = similarity(originals, originals)
    assert same["og_max"] == pytest.approx(1.0)


def test_baselines():
    g = torch.Generator().manual_seed(0)
    one = torch.randn(1, 50)
    same = one.expand(12, 50)
    assert torch.equal(weight_average(same), one)  # weight average of identical checkpoints = the checkpoint
    assert torch.allclose(average_of_random(same, 4, 5, g), one.expand(4, 50))
    assert torch.allclose(gaussian_fit(same, 3, g), one.expand(3, 50))
    many = torch.randn(40, 50)
    draws = gaussian_fit(many, 20000, g)
    torch.testing.assert_close(draws.mean(0), many.mean(0), atol=0.05, rtol=0)
    dist = nearest_distance(many[:3], many)
    assert torch.equal(dist, torch.zeros(3, dtype=dist.dtype))
    assert (nearest_distance(many, many, exclude_self=True) > 0).all()


def test_best_is_selected_on_validation_not_test():
    test = torch.tensor([90.0, 95.0, 91.0])
    val = torch.tensor([99.0, 80.0, 85.0])
    assert accuracy_stats(test, val, "val")["best"] == 90.0
    assert accuracy_stats(test, val, "test")["best"] == 95.0
    stats = accuracy_stats(test, val)
    assert stats["median"] == 91.0 and stats["min"] == 90.0 and stats["mean"] == pytest.approx(92.0)
