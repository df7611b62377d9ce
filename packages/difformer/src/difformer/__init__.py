"""DIFFormer: scalable (graph) Transformers induced by energy-constrained diffusion (Wu et al., ICLR 2023).

    from difformer import DIFFormerConv, DIFFormer

    conv = DIFFormerConv(64, 64, kernel="simple")          # O(N) all-pair attention + optional GCN branch
    out = conv(data.x, data.edge_index)                     # any PyG graph
    model = DIFFormer(1433, 64, 7, num_layers=8, use_weight=False)

Not to be confused with the unrelated PyPI package ``difformer-pytorch`` (a diffusion language model).
Public names load on first use, so ``import difformer`` (and ``difformer --help``) does not import torch.
"""

from diffcore.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "DIFFormerConv": "difformer.models",
    "DIFFormer": "difformer.models",
    "simple_attention": "difformer.kernels",
    "sigmoid_attention": "difformer.kernels",
    "attention_weights": "difformer.kernels",
    "NormalizedAdjacency": "difformer.graph",
    "normalized_adjacency": "difformer.graph",
    "convert_official_state_dict": "difformer.convert",
})
