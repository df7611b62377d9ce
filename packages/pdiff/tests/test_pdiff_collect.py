"""Collection (spec §4): only S changes, one vector per iteration or per epoch, the host keeps its statistics."""

from dataclasses import replace

import pytest
import torch
from diffcore.testing import reset_accelerate_state
from pdiff.collect import collect_checkpoints
from pdiff.config import MNIST_CNN
from pdiff.data import HostData, random_crop_flip
from pdiff.models import build_host
from pdiff.params import ParamSpec


def _data(n: int = 40) -> HostData:
    g = torch.Generator().manual_seed(0)
    split = (torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8),
             torch.randint(0, 10, (n,), generator=g))
    return HostData(split, split, split, 10, 1, 28, torch.tensor([0.5]), torch.tensor([0.25]))


@pytest.mark.parametrize(("save_every", "bn_mode", "k", "steps"),
                         [("iteration", "eval", 5, 5), ("epoch", "train", 3, 9)])
def test_only_s_changes_and_the_host_keeps_its_statistics(save_every, bn_mode, k, steps):
    reset_accelerate_state()
    torch.manual_seed(0)
    host = build_host("mnist_cnn", 10, 1)
    with torch.no_grad():
        for name, buffer in host.named_buffers():
            if name.endswith("running_var"):
                buffer.fill_(2.0)
    spec = ParamSpec.of(host, arch="mnist_cnn", dataset="x", num_classes=10, in_chans=1, selector="norm:2")
    before = {k_: v.clone() for k_, v in host.state_dict().items()}
    config = replace(MNIST_CNN, collect=replace(MNIST_CNN.collect, k=k, save_every=save_every, bn_mode=bn_mode,
                                                optim=replace(MNIST_CNN.collect.optim, batch_size=16)))
    checkpoints, info = collect_checkpoints(host, spec, _data(), config)
    assert checkpoints.shape == (k, spec.dim) and info["steps"] == steps  # 40 images at batch 16: 3 steps/epoch
    assert len({tuple(row.tolist()) for row in checkpoints}) == k  # every save differs
    after = host.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == set(spec.names)  # frozen parameters and BN statistics untouched
    assert torch.equal(spec.flatten(dict(host.named_parameters())).detach(), checkpoints[-1])
    reset_accelerate_state()


def test_random_crop_flip_keeps_shapes_and_pixels():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape
    assert set(out.unique().tolist()) <= set(x.unique().tolist()) | {0.0}
