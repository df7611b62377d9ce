"""The paper's augmentation and the dataset choices (named CIFAR sets, image folders, limits)."""

import pytest
import torch
from dianet.data import NORM_STATS, check_dataset, load_splits, transforms
from diffcore.data import ImageArrays, ImageDataset
from diffcore.errors import DataError
from torchvision.io import write_png


def test_cifar_pipeline_crops_flips_and_normalises():
    torch.manual_seed(0)
    image = torch.full((3, 32, 32), 128, dtype=torch.uint8)
    mean, std = NORM_STATS["cifar10"]
    test = transforms("cifar10", train=False)(image)
    assert test.shape == (3, 32, 32) and test.dtype == torch.float32
    torch.testing.assert_close(test[:, 0, 0], (128 / 255 - torch.tensor(mean)) / torch.tensor(std))
    crops = torch.stack([transforms("cifar10", train=True)(image) for _ in range(20)])
    assert crops.shape == (20, 3, 32, 32)
    zero_fill = (0 - torch.tensor(mean)) / torch.tensor(std)
    assert any(torch.allclose(c[:, 0, 0], zero_fill) for c in crops)  # padding 4 with zeros shows up at corners
    assert NORM_STATS["cifar10"][1] == (0.2023, 0.1994, 0.2010)  # the statistics bearpaw's cifar.py uses


def test_imagenet_pipeline_gives_224_crops():
    image = torch.randint(0, 255, (3, 300, 260), dtype=torch.uint8)
    assert transforms("imagenet", True, 224)(image).shape == (3, 224, 224)
    assert transforms("imagenet", False, 224)(image).shape == (3, 224, 224)


def test_image_folder_with_limits_and_errors(tmp_path):
    import warnings

    warnings.filterwarnings("ignore", "The image decoding and encoding", DeprecationWarning)
    for split in ("train", "test"):
        for name in ("a", "b", "c"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(2):
                image = torch.randint(0, 255, (3, 40, 48), dtype=torch.uint8)
                write_png(image, str(tmp_path / split / name / f"{i}.png"))
    splits = load_splits(str(tmp_path), None, "cifar10", train_limit=4, test_limit=5)
    assert (len(splits.train), len(splits.test), splits.num_classes) == (4, 5, 3)
    image, label = splits.train[0]
    assert image.shape == (3, 32, 32) and int(label) == 0  # folder images are resized to the model's 32×32
    big = load_splits(str(tmp_path), None, "imagenet", image_size=224, need_train=False)
    assert big.test[0][0].shape == (3, 224, 224)
    with pytest.raises(DataError, match="neither one of"):
        check_dataset(str(tmp_path / "absent"))
    (tmp_path / "lonely" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="needs train/ and val/"):
        load_splits(str(tmp_path / "lonely"), None, "cifar10")


def test_named_dataset_limits_keep_the_first_images(monkeypatch):
    arrays = ImageArrays(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 32, 32, 3).contiguous(),
                         torch.arange(10) % 10, [str(i) for i in range(10)])
    monkeypatch.setattr("dianet.data.load_images", lambda name, root, train: arrays)
    splits = load_splits("cifar10", None, "cifar10", train_limit=3, test_limit=2)
    assert isinstance(splits.train, ImageDataset) and len(splits.train) == 3 and len(splits.test) == 2
    assert [int(splits.train[i][1]) for i in range(3)] == [0, 1, 2] and splits.num_classes == 10
    with pytest.raises(DataError, match="positive"):
        load_splits("cifar10", None, "cifar10", train_limit=0)


def test_validation_split_is_held_out_class_balanced_and_the_same_for_every_seed(monkeypatch):
    labels = torch.arange(40) % 4
    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1).expand(40, 32, 32, 3).contiguous()
    arrays = ImageArrays(images, labels, list("abcd"))
    monkeypatch.setattr("dianet.data.load_images", lambda name, root, train: arrays)
    monkeypatch.setattr("dianet.data.DATASETS", {"toy": 4})
    torch.manual_seed(1)
    splits = load_splits("toy", None, "cifar10", train_limit=36, val_split=8)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (28, 8, 40)
    val_ids = sorted(int(splits.val[i][0][0, 0, 0] * 0.2023 * 255 + 0.4914 * 255 + 0.5) for i in range(8))
    assert sorted(int(labels[i]) for i in val_ids) == [0, 0, 1, 1, 2, 2, 3, 3] and max(val_ids) < 36
    torch.manual_seed(2)  # the split does not depend on the run's seed
    again = load_splits("toy", None, "cifar10", train_limit=36, val_split=8)
    torch.testing.assert_close(torch.stack([again.val[i][0] for i in range(8)]),
                               torch.stack([splits.val[i][0] for i in range(8)]))  # and val images are not augmented
    with pytest.raises(DataError, match="multiple of the 4 classes"):
        load_splits("toy", None, "cifar10", val_split=6)
    with pytest.raises(DataError, match="holds out every training image"):
        load_splits("toy", None, "cifar10", train_limit=8, val_split=8)
