"""Diff-ResNet on graphs: semi-supervised node classification with the gnn-benchmark protocol (§4.2).

* :mod:`~diff_resnet.graph.config` — :class:`GraphConfig` and the README presets (no torch: the CLI reads it);
* :mod:`~diff_resnet.graph.data` — standardised gnn-benchmark / Planetoid graphs and their tensors;
* :mod:`~diff_resnet.graph.protocol` — seed chain, splits, patience rule, one run as the original trains it;
* :mod:`~diff_resnet.graph.engine` — the runs of a split trained together as one stacked model (same results);
* :mod:`~diff_resnet.graph.run` — the ``splits × inits`` runs spread over processes, and their results;
* :mod:`~diff_resnet.graph.cli` — the ``diff-resnet graph`` command.

Importing this package imports nothing: the model, :class:`~diff_resnet.models.DiffusionNet`, is shared.
"""
