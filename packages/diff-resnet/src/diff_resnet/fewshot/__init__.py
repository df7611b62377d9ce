"""Diff-ResNet for transductive few-shot classification (§4.3): backbone → features → episodes.

* :mod:`~diff_resnet.fewshot.config` — datasets, :class:`ExtractConfig`, :class:`FewShotConfig` and the presets
  (no torch: the CLI reads it);
* :mod:`~diff_resnet.fewshot.data` — image folders with CSV splits, the stand-ins, transforms, feature files
  and feature extraction;
* :mod:`~diff_resnet.fewshot.backbone` — backbone pre-training on the base classes and the legacy converter
  (the architectures are :mod:`diff_resnet.backbones`);
* :mod:`~diff_resnet.fewshot.episodes` — episode sampling, SimpleShot / LaplacianShot / Diff-ResNet heads,
  many episodes trained at once, and the evaluation protocol;
* :mod:`~diff_resnet.fewshot.cli` — the ``diff-resnet fewshot`` group.

Importing this package imports nothing.
"""
