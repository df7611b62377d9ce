"""Datasets two or more papers read, one module per modality; loaders one paper alone needs live in that paper.

* :mod:`diffcore.data.paths` — the data root (``--data-root`` → ``$DIFFNETS_DATA`` → ``~/.cache/diffnets``), the
  cache for processed files, file lookup, downloads, the one-line "not found" error;
* :mod:`diffcore.data.graphs` — PyG Planetoid, the gnn-benchmark ``.npz`` format, scipy → torch sparse;
* :mod:`diffcore.data.images` — MNIST, CIFAR-10/100, the CIFAR-10 subset, digits, and image folders
  (``DIR/train/<class>/*.png``), all as uint8 :class:`ImageArrays`;
* :mod:`diffcore.data.splits` — class-balanced splits.

Every name is also importable from ``diffcore.data`` itself; each is loaded on first use, so importing this
package (as every CLI does for ``--help``) costs nothing.
"""

from diffcore.lazy import lazy_exports

_MODULES = {
    "diffcore.data.paths": ("DEFAULT_ROOT", "cache_dir", "data_root", "download_file", "first_existing", "not_found",
                            "require_extra"),
    "diffcore.data.graphs": ("GNN_BENCHMARK_URL", "PLANETOID_NAMES", "PLANETOID_SUFFIXES", "SparseGraph",
                             "largest_connected_component", "load_npz_graph", "load_planetoid", "read_npz_graph",
                             "sparse_to_torch"),
    "diffcore.data.images": ("FOLDER_SPLITS", "IMAGE_DATASETS", "IMAGE_FILE_SUFFIXES", "MNIST_FILES", "ImageArrays",
                             "ImageDataset", "check_image_folder", "load_cifar", "load_cifar10_subset", "load_digits",
                             "load_image_folder", "load_image_splits", "load_images", "load_mnist", "read_idx"),
    "diffcore.data.splits": ("class_balanced_split",),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, {n: m for m, names in _MODULES.items() for n in names})
