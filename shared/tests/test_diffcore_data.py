import gzip
import shutil
import struct

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from diffcore import data
from diffcore.errors import DataError
from diffcore.testing import require_shared_data


def test_data_root_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("DIFFNETS_DATA", raising=False)
    assert data.data_root().as_posix().endswith(".cache/diffnets")
    monkeypatch.setenv("DIFFNETS_DATA", str(tmp_path / "env"))
    assert data.data_root() == tmp_path / "env"
    assert data.data_root(tmp_path / "given") == tmp_path / "given"


def _write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize(("folder", "suffix"), [("MNIST/raw", ""), ("images/mnist", ".gz")])
def test_mnist_both_layouts(tmp_path, folder, suffix):
    (tmp_path / folder).mkdir(parents=True)
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _write_idx(tmp_path / folder / f"t10k-images-idx3-ubyte{suffix}", images)
    _write_idx(tmp_path / folder / f"t10k-labels-idx1-ubyte{suffix}", np.array([7, 2, 1]))
    arrays = data.load_mnist(tmp_path, train=False, download=False)
    assert arrays.images.shape == (3, 28, 28, 1) and arrays.labels.tolist() == [7, 2, 1]
    assert torch.equal(arrays.images[..., 0], torch.from_numpy(images.astype(np.uint8)))


def test_truncated_idx_is_an_error(tmp_path):
    _write_idx(tmp_path / "x", np.zeros((4, 2, 2)))
    (tmp_path / "x").write_bytes((tmp_path / "x").read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated"):
        data.read_idx(tmp_path / "x")


@pytest.mark.parametrize("loader", [
    lambda root: data.load_mnist(root, download=False),
    lambda root: data.load_cifar10_subset(root),
    lambda root: data.load_npz_graph("cora", root, download=False),
    lambda root: data.load_planetoid("cora", root, download=False),
    lambda root: data.load_cifar("cifar100", root, download=False),
])
def test_missing_data_names_files_and_data_root(tmp_path, loader):
    with pytest.raises(DataError) as err:
        loader(tmp_path)
    message = str(err.value)
    assert "--data-root" in message and str(tmp_path) in message and "\n" not in message


def test_unknown_dataset_names():
    with pytest.raises(DataError, match="choose one of mnist, cifar10"):
        data.load_images("imagenet")


def test_digits_are_embedded():
    train, test = data.load_digits(train=True), data.load_digits(train=False)
    assert len(train) + len(test) == 1797 and train.images.shape[1:] == (8, 8, 1)
    assert train.images.dtype == torch.uint8 and int(train.images.max()) == 255


def test_select_classes_relabels():
    arrays = data.ImageArrays(torch.zeros(6, 2, 2, 1, dtype=torch.uint8), torch.tensor([0, 1, 2, 3, 2, 1]),
                              list("abcd"))
    picked = arrays.select_classes([2, 1])
    assert picked.labels.tolist() == [1, 0, 0, 1] and picked.classes == ["c", "b"]
    sample, label = data.ImageDataset(picked)[0]
    assert sample.shape == (1, 2, 2) and label == 1


def test_class_balanced_split_is_disjoint_and_seeded():
    labels = np.repeat(np.arange(3), 40)
    train, val, test = data.class_balanced_split(labels, [5, 10], np.random.RandomState(0))
    assert len(train) == 15 and len(val) == 30 and len(test) == 75
    assert len(np.unique(np.concatenate([train, val, test]))) == 120
    assert np.bincount(labels[train]).tolist() == [5, 5, 5]
    again = data.class_balanced_split(labels, [5, 10], np.random.RandomState(0))
    assert all(np.array_equal(a, b) for a, b in zip([train, val, test], again, strict=True))
    with pytest.raises(DataError, match="fewer than the 50 requested"):
        data.class_balanced_split(labels, [50], np.random.RandomState(0))


def test_standardize_keeps_largest_component_undirected():
    # nodes 0-1-2 (directed edges, a self-loop, a weight) and a separate pair 3-4
    adj = sp.csr_matrix(([2.0, 1.0, 1.0, 1.0], ([0, 1, 2, 3], [1, 2, 2, 4])), shape=(5, 5))
    graph = data.SparseGraph(adj, sp.identity(5, format="csr"), np.array([0, 1, 0, 1, 1]))
    std = graph.standardize()
    assert std.num_nodes == 3 and std.num_edges == 2 and std.node_index.tolist() == [0, 1, 2]
    assert (std.adj != std.adj.T).nnz == 0 and set(std.adj.data) == {1.0} and std.adj.diagonal().sum() == 0


def test_sparse_to_torch_matches_dense():
    matrix = sp.random(7, 5, density=0.3, random_state=0, format="coo")
    tensor = data.sparse_to_torch(matrix)
    assert tensor.layout == torch.sparse_csr
    torch.testing.assert_close(tensor.to_dense(), torch.from_numpy(matrix.toarray()).float())


def test_real_cora_both_formats_and_root_stays_read_only(tmp_path):
    root = require_shared_data("gnn_benchmark_npz/cora.npz", "planetoid/Cora/raw/ind.cora.x")
    graph = data.load_npz_graph("cora", root, download=False).standardize()
    assert (graph.num_nodes, graph.num_edges, graph.attr.shape[1]) == (2485, 5069, 1433)
    assert np.bincount(graph.labels).tolist() == [285, 406, 726, 379, 214, 131, 344]
    copy = tmp_path / "root"
    shutil.copytree(root / "planetoid", copy / "planetoid")
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    pyg = data.load_planetoid("cora", copy, download=False)
    assert pyg.num_nodes == 2708 and int(pyg.train_mask.sum()) == 140
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before


def test_real_images():
    root = require_shared_data("images/mnist", "images/cifar10/cifar10_subset.npz")
    mnist = data.load_images("mnist", root, train=False, download=False)
    assert mnist.images.shape == (10000, 28, 28, 1) and mnist.labels[:5].tolist() == [7, 2, 1, 0, 4]
    subset = data.load_images("cifar10-subset", root, train=False)
    assert subset.images.shape == (1000, 32, 32, 3) and subset.classes[0] == "airplane"
    assert np.bincount(subset.labels.numpy()).tolist() == [103, 89, 100, 103, 90, 86, 112, 102, 106, 109]
