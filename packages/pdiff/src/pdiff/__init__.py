"""p-diff: Neural Network (Parameter) Diffusion (Wang, Xu, Zhou, Liu, Shi, Yang, You; arXiv 2402.13144).

Generate the parameters of a trained network with a latent diffusion model, and test whether the generated
models are new or near-copies of the training checkpoints (arXiv 2506.07998)::

    from pdiff import ParamSpec, Normaliser, ParamAutoencoder, LatentDenoiser1D, predict_many

Names load on first use, so ``import pdiff`` (and ``pdiff --help``) never pays for torch.
"""

from diffcore.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "ParamSpec": "pdiff.params",
    "Normaliser": "pdiff.params",
    "select_parameters": "pdiff.params",
    "ParamAutoencoder": "pdiff.models",
    "OldParamAutoencoder": "pdiff.models",
    "LatentDenoiser1D": "pdiff.models",
    "OldLatentDenoiser": "pdiff.models",
    "build_host": "pdiff.models",
    "Generator": "pdiff.generator",
    "train_generator": "pdiff.generator",
    "predict_many": "pdiff.evaluate",
    "predict_looped": "pdiff.evaluate",
    "similarity": "pdiff.evaluate",
    "PDiffConfig": "pdiff.config",
    "PRESETS": "pdiff.config",
})
