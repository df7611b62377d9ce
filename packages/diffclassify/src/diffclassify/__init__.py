"""diffclassify: few-shot classification on the features of generative models (DiffClassification, 2024).

Train a DDPM (or a VAE) on unlabelled images, noise each labelled image to a timestep t, pool chosen
U-Net activations into a feature vector and train a tiny head on a handful of labels per class.

    from diffclassify import MyUNet, extract_features, ExtractionPlan, train_heads

Names load on first use, so ``diffclassify --help`` never imports torch.
"""

from diffcore.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "MyUNet": "diffclassify.models",
    "VDiffUNet": "diffclassify.models",
    "MnistConvVAE": "diffclassify.models",
    "CifarConvVAE": "diffclassify.models",
    "DiscreteProcess": "diffclassify.diffusion",
    "VDiffusionProcess": "diffclassify.diffusion",
    "ExtractionPlan": "diffclassify.features",
    "FeatureSet": "diffclassify.features",
    "extract_features": "diffclassify.features",
    "HeadRun": "diffclassify.heads",
    "train_heads": "diffclassify.heads",
    "head_accuracy": "diffclassify.heads",
    "fit_heads": "diffclassify.fewshot",
    "load_generative": "diffclassify.extract",
})
