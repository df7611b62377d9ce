"""pdiff and diffclassify read a ``--dataset DIR`` image folder through the core's one loader: the same images,
labels and channel count as :func:`diffcore.data.load_image_folder`."""

import pytest
import torch
from diffcore.data import load_image_folder
from torchvision.io import write_png


@pytest.fixture
def grey_folder(tmp_path):
    """Three classes of 8×8 greyscale PNGs: 4 training and 2 test images each."""
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 4), ("test", 2)):
        for name in ("a", "b", "c"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(count):
                image = torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8, generator=generator)
                write_png(image, str(tmp_path / split / name / f"{i}.png"))
    return tmp_path


def test_pdiff_host_data_from_a_folder(grey_folder):
    pytest.importorskip("pdiff")
    from pdiff.config import HostConfig
    from pdiff.data import load_host_data

    train, test = load_image_folder(grey_folder)
    data = load_host_data(HostConfig(arch="mnist_mlp", dataset=str(grey_folder), val_size=3))
    assert (data.in_chans, data.num_classes) == (1, 3)
    assert torch.equal(data.test[0], test.images.permute(0, 3, 1, 2)) and torch.equal(data.test[1], test.labels)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))  # pdiff's fixed hold-out
    images = train.images.permute(0, 3, 1, 2)
    assert torch.equal(data.val[0], images[order[:3]]) and torch.equal(data.train[0], images[order[3:]])
    assert torch.equal(data.train[1], train.labels[order[3:]])


def test_diffclassify_splits_from_a_folder(grey_folder):
    pytest.importorskip("diffclassify")
    from diffclassify.config import VAEConfig
    from diffclassify.data import image_spec
    from diffclassify.train import validate_vae

    train, test = load_image_folder(grey_folder)
    got_train, got_test = validate_vae(VAEConfig(dataset=str(grey_folder)), None)
    assert torch.equal(got_train.images, train.images) and torch.equal(got_test.images, test.images)
    assert torch.equal(got_test.labels, test.labels) and got_train.classes == ["a", "b", "c"]
    assert image_spec(got_train).channels == 1
