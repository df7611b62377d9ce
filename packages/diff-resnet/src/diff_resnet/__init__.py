"""Diff-ResNet: diffusion mechanism in residual neural networks (Wang, Dou, Bao, Shi; TPAMI 2024).

The paper's layer works on any tensor whose rows are samples::

    from diff_resnet import Diffusion, laplacian, toy_weights
    L = laplacian(toy_weights(points, sigma=0.5, n_top=25))   # I − W
    h = Diffusion(step_size=1.0, num_steps=60)(h, L)          # 60 steps h ← h − γ L h

Names are loaded on first use (PEP 562), so ``diff-resnet --help`` does not pay for importing torch.
"""

from diffcore.lazy import lazy_exports

_EXPORTS = {
    "Diffusion": "diff_resnet.diffusion",
    "KNNDiffusion": "diff_resnet.diffusion",
    "check_stability": "diff_resnet.diffusion",
    "diffusion_matrix": "diff_resnet.diffusion",
    "diffusion_step": "diff_resnet.diffusion",
    "fewshot_weights": "diff_resnet.diffusion",
    "gcn_normalized_adjacency": "diff_resnet.diffusion",
    "graph_laplacian": "diff_resnet.diffusion",
    "laplacian": "diff_resnet.diffusion",
    "max_eigenvalue": "diff_resnet.diffusion",
    "propagate": "diff_resnet.diffusion",
    "propagation_matrix": "diff_resnet.diffusion",
    "require_finite": "diff_resnet.diffusion",
    "toy_weights": "diff_resnet.diffusion",
    "FastDropout": "diff_resnet.dropout",
    "dropout_bits": "diff_resnet.dropout",
    "dropout_keep_mask": "diff_resnet.dropout",
    "dropout_scale": "diff_resnet.dropout",
    "DiffusionNet": "diff_resnet.models",
    "ToyNet": "diff_resnet.models",
    "Conv4": "diff_resnet.backbones",
    "ResNet18": "diff_resnet.backbones",
    "WideResNet": "diff_resnet.backbones",
    "build_backbone": "diff_resnet.backbones",
    "EpisodeSampler": "diff_resnet.fewshot.episodes",
    "diffusion_episodes": "diff_resnet.fewshot.episodes",
    "laplacian_shot": "diff_resnet.fewshot.episodes",
    "nearest_prototype": "diff_resnet.fewshot.episodes",
    "rectified_prototypes": "diff_resnet.fewshot.episodes",
    "run_fewshot": "diff_resnet.fewshot.episodes",
    "FewShotConfig": "diff_resnet.fewshot.config",
    "FeatureSet": "diff_resnet.fewshot.data",
    "load_features": "diff_resnet.fewshot.data",
    "save_features": "diff_resnet.fewshot.data",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
