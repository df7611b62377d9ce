"""The one image-folder loader (``DIR/train/<class>/*.png|jpg``) on generated folders: greyscale and colour, PNG
and JPEG, the channel rules, the file order, and a one-line error naming the file or folder for each bad layout."""

import numpy as np
import pytest
import torch
from diffcore.data import check_image_folder, load_digits, load_image_folder, load_image_splits
from diffcore.errors import DataError
from PIL import Image
from torchvision.io import write_jpeg, write_png


def _pixels(seed: int, channels: int, size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (channels, size, size), dtype=torch.uint8, generator=generator)


def _write(path, image: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    (write_png if path.suffix.lower() == ".png" else write_jpeg)(image, str(path))


def _folder(root, channels: int, size: int, per_class: int = 2, classes=("cat", "dog")) -> dict:
    """PNG and JPEG images in both splits; returns the PNGs' pixels by path (JPEG is lossy)."""
    written = {}
    for split in ("train", "test"):
        for c, name in enumerate(classes):
            for i in range(per_class):
                path = root / split / name / f"{i}.{'png' if i % 2 == 0 else 'jpg'}"
                image = _pixels(100 * c + 10 * i + (split == "test"), channels, size)
                _write(path, image)
                written[path] = image
    return written


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_grey_and_colour_png_and_jpeg(tmp_path, channels, size):
    written = _folder(tmp_path, channels, size)
    train, test = load_image_folder(tmp_path)
    for arrays, split in ((train, "train"), (test, "test")):
        assert arrays.images.shape == (4, size, size, channels) and arrays.images.dtype == torch.uint8
        assert arrays.labels.tolist() == [0, 0, 1, 1] and arrays.classes == ["cat", "dog"]
        # order: class by class, files by name; 0.png first in each class
        assert torch.equal(arrays.images[0].permute(2, 0, 1), written[tmp_path / split / "cat" / "0.png"])
        assert torch.equal(arrays.images[2].permute(2, 0, 1), written[tmp_path / split / "dog" / "0.png"])
    assert check_image_folder(tmp_path) == ["cat", "dog"]


def test_grey_among_colour_becomes_rgb_with_the_grey_repeated(tmp_path):
    grey, colour = _pixels(0, 1, 8), _pixels(1, 3, 8)
    _write(tmp_path / "train" / "a" / "grey.png", grey)
    _write(tmp_path / "test" / "a" / "colour.png", colour)
    train, test = load_image_folder(tmp_path)
    assert train.images.shape == test.images.shape == (1, 8, 8, 3)
    assert torch.equal(train.images[0].permute(2, 0, 1), grey.expand(3, -1, -1))
    assert torch.equal(test.images[0].permute(2, 0, 1), colour)
    (only_train,) = load_image_folder(tmp_path, ("train",))  # read alone, the grey split stays one channel
    assert only_train.images.shape == (1, 8, 8, 1)


def test_palette_alpha_and_16_bit_files(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).convert("P")
    (tmp_path / "train" / "a").mkdir(parents=True)
    palette.save(tmp_path / "train" / "a" / "0.png")
    Image.fromarray(np.dstack([rgb, np.full((6, 6), 7, np.uint8)])).save(tmp_path / "train" / "a" / "1.png")
    (train,) = load_image_folder(tmp_path, ("train",))
    assert train.images.shape == (2, 6, 6, 3)
    assert np.array_equal(train.images[0].numpy(), np.asarray(palette.convert("RGB")))  # colours, not indices
    assert np.array_equal(train.images[1].numpy(), rgb)  # alpha dropped
    deep = np.arange(36, dtype=np.uint16).reshape(6, 6) * 1800
    (tmp_path / "grey" / "train" / "a").mkdir(parents=True)
    Image.fromarray(deep).save(tmp_path / "grey" / "train" / "a" / "0.png")
    (grey,) = load_image_folder(tmp_path / "grey", ("train",))
    assert grey.images.dtype == torch.uint8 and np.array_equal(grey.images[0, ..., 0].numpy(), deep >> 8)


def test_file_order_nesting_and_skipped_files(tmp_path):
    images = {name: _pixels(i, 1, 4) for i, name in enumerate(["b.PNG", "a.jpeg", "sub/c.png"])}
    for name, image in images.items():
        _write(tmp_path / "train" / "x" / name, image)
    (tmp_path / "train" / "x" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "x" / ".hidden.png").write_bytes(b"junk")
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()
    (train,) = load_image_folder(tmp_path, ("train",))
    # torchvision ImageFolder's order: the class folder's files by name, then its subfolders'
    assert len(train) == 3 and train.classes == ["x"]
    assert torch.equal(train.images[1, ..., 0], images["b.PNG"][0])
    assert torch.equal(train.images[2, ..., 0], images["sub/c.png"][0])


def _mixed_sizes(root):
    _folder(root, 1, 8)
    _write(root / "train" / "dog" / "9.png", _pixels(9, 1, 10))


def _test_of_another_size(root):
    _folder(root, 3, 8)
    _write(root / "test" / "cat" / "0.png", _pixels(9, 3, 9))


def _unreadable(root):
    _folder(root, 1, 8)
    (root / "test" / "dog" / "broken.png").write_bytes(b"not a png")


def _empty_class(root):
    _folder(root, 1, 8)
    (root / "train" / "bird").mkdir()
    (root / "test" / "bird").mkdir()
    (root / "train" / "bird" / "readme.txt").write_text("no images here")


def _classes_differ(root):
    _folder(root, 1, 8, classes=("cat", "dog"))
    (root / "test" / "dog").rename(root / "test" / "wolf")


def _no_test(root):
    _folder(root, 1, 8)
    for path in sorted((root / "test").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (root / "test").rmdir()


def _no_classes(root):
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    (root / "train" / "stray.png").write_bytes(b"")


@pytest.mark.parametrize(("setup", "expected", "action", "checked"), [
    (_mixed_sizes, "dog/9.png is 10×10 but", "resize them", False),
    (_test_of_another_size, "test/cat/0.png is 9×9 but", "resize them", False),
    (_unreadable, "cannot read image", "re-save it as PNG or JPEG", False),
    (_empty_class, "class folder", "add images or remove the folder", True),
    (_classes_differ, "only in train: dog; only in test: wolf", "same class folders", True),
    (_no_test, "has no test/ subfolder", "expected", True),
    (_no_classes, "has no class folders", "put the images of each class in", True),
    (lambda root: None, "does not exist", "expected", True),
], ids=["mixed-sizes", "test-size", "unreadable", "empty-class", "classes-differ", "no-test", "no-classes",
        "no-folder"])
def test_bad_folders_are_one_line_naming_the_place(tmp_path, setup, expected, action, checked):
    root = tmp_path / "images"
    setup(root)
    with pytest.raises(DataError) as err:
        load_image_folder(root)
    message = str(err.value)
    assert expected in message and action in message and str(root) in message and "\n" not in message
    if checked:  # a layout error is found without decoding an image
        with pytest.raises(DataError, match=expected.split(":")[0]):
            check_image_folder(root)
    else:
        assert check_image_folder(root) == ["cat", "dog"]


def test_a_split_can_be_read_alone(tmp_path):
    _no_test(tmp_path)
    (train,) = load_image_folder(tmp_path, ("train",))
    assert len(train) == 4 and check_image_folder(tmp_path, ("train",)) == ["cat", "dog"]


def test_a_dataset_option_takes_a_name_or_a_folder(tmp_path):
    train, test = load_image_splits("digits")
    assert torch.equal(train.images, load_digits(train=True).images) and len(test) == len(load_digits(train=False))
    _folder(tmp_path, 1, 8)
    (folder_test,) = load_image_splits(str(tmp_path), splits=("test",))
    assert torch.equal(folder_test.images, load_image_folder(tmp_path)[1].images)
    with pytest.raises(DataError, match=r"'mnsit' is neither one of mnist, cifar10.* nor an image folder"):
        load_image_splits("mnsit")
