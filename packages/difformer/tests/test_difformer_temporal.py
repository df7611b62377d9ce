"""Spatial-temporal pieces: the two losses, batched snapshots = the per-snapshot loop, dynamic graphs,
the legacy early-stopping counter."""

import dataclasses

import pytest
import torch
from diffcore.testing import require_shared_data
from difformer.config import TEMPORAL_PRESETS
from difformer.datasets import TemporalSignal
from difformer.node import build_model
from difformer.temporal import (
    CumulativePatienceTrainer,
    knn_snapshot_edges,
    run_temporal,
    snapshot_mse,
    snapshots,
)


def test_legacy_broadcast_mse_is_the_n_by_n_broadcast():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    explicit = torch.stack([((pred[s][:, None] - target[s][None, :]) ** 2).mean() for s in range(3)])
    torch.testing.assert_close(snapshot_mse(pred, target, broadcast=True), explicit)
    torch.testing.assert_close(snapshot_mse(pred, target), ((pred - target) ** 2).mean(-1))
    # its minimiser is the snapshot mean, with the variance as floor
    mean = target.mean(-1, keepdim=True).expand_as(target)
    torch.testing.assert_close(snapshot_mse(mean, target, broadcast=True), target.var(-1, unbiased=False))


def signal(dynamic: bool, steps: int = 6, n: int = 5) -> TemporalSignal:
    g = torch.Generator().manual_seed(1)
    edges = [torch.randint(0, n, (2, 8), generator=g) for _ in range(steps if dynamic else 1)]
    return TemporalSignal(torch.randn(steps, n, 3, generator=g), torch.randn(steps, n, generator=g), tuple(edges),
                          tuple(torch.rand(8, generator=g) + 0.5 for _ in edges))


def test_batched_snapshots_equal_the_per_snapshot_loop():
    for dynamic in (False, True):
        data = signal(dynamic)
        config = dataclasses.replace(TEMPORAL_PRESETS["chickenpox-a-graph"], lags=3)
        model = build_model(config.model, 3, 1).eval()
        batch = snapshots(data, range(1, 5), config)
        batched = model(batch.x, batch.adj).squeeze(-1)
        for i, t in enumerate(range(1, 5)):
            edge_index, weight = data.graph(t)
            torch.testing.assert_close(batched[i], model(data.features[t], edge_index, weight).squeeze(-1))


def test_knn_snapshot_graph_includes_self_and_k_neighbours():
    x = torch.randn(2, 6, 3)
    edges = knn_snapshot_edges(x, 3)
    assert edges.shape == (2, 2 * 6 * 3)
    assert ((edges[0] // 6) == (edges[1] // 6)).all()  # never across snapshots
    loops = edges[:, edges[0] == edges[1]]
    assert loops.shape[1] == 12  # each node is its own nearest neighbour (cosine 1)


def test_legacy_patience_counter_is_never_reset():
    trainer = CumulativePatienceTrainer.__new__(CumulativePatienceTrainer)
    trainer.config = dataclasses.replace(TEMPORAL_PRESETS["chickenpox-s"].train, early_stopping_patience=3,
                                         restore_best=False)
    trainer.best_value, trainer.best_epoch, trainer.bad_evals, trainer.stopped_early = None, None, 0, False
    for epoch, value in enumerate([1.0, 2.0, 0.5, 3.0, 0.4, 5.0], start=1):
        trainer.epoch = epoch
        trainer._early_stopping({"val_loss": value})
        if trainer.stopped_early:
            break
    assert trainer.epoch == 6 and trainer.bad_evals == 3  # non-improving epochs 2, 4, 6; improvements 3, 5 kept count


def test_chickenpox_trains_on_the_loss_it_names(tmp_path):
    """Real chickenpox, one epoch from the same initial model: the logged training loss is the per-node MSE by
    default and the original's broadcast MSE (quirk 1) with ``legacy_broadcast_mse``, on the 103 training
    snapshots."""
    from accelerate.utils import set_seed
    from diffcore.runs import RunDir
    from difformer.datasets import load_temporal_json
    from difformer.models import DIFFormer

    root = require_shared_data("temporal/chickenpox.json")
    data = load_temporal_json("chickenpox", root, download=False)
    base = TEMPORAL_PRESETS["chickenpox-s-graph"]
    short = dataclasses.replace(base, runs=1, model=dataclasses.replace(base.model, dropout=0.0),
                                train=dataclasses.replace(base.train, epochs=1))
    set_seed(short.train.seed)
    initial = DIFFormer(in_channels=4, out_channels=1, **dataclasses.asdict(short.model))
    with torch.no_grad():
        pred = initial(data.features[:103], *data.graph(0)).squeeze(-1)
    y = data.targets[:103]
    per_node = (pred - y).square().mean().item()
    broadcast = (pred[:, :, None] - y[:, None, :]).square().mean((1, 2)).mean().item()
    assert abs(per_node - broadcast) > 1e-2
    for legacy, expected in ((False, per_node), (True, broadcast)):
        out = tmp_path / f"legacy-{legacy}"
        result = run_temporal(dataclasses.replace(short, legacy_broadcast_mse=legacy), RunDir(out), data)
        assert result["snapshots"] == [103, 103, 311]
        assert RunDir(out / "run-0").read_metrics()[0]["train_loss"] == pytest.approx(expected, rel=1e-5)


def test_cli_covid_and_wikimath_layouts(tmp_path):
    """The other two datasets of the paper work from files of their PyG-Temporal layout (not available offline):
    a dynamic weighted graph (covid) with cumulative updates, a static one (wikimath) with incremental updates."""
    import json

    import numpy as np
    from click.testing import CliRunner
    from difformer.cli import main

    rng = np.random.default_rng(0)
    y = (rng.random((40, 6)) * 10).tolist()
    covid = {"time_periods": 40, "y": y, "edge_mapping": {
        "edge_index": {str(t): [[0, 1], [1, 2], [t % 6, 5]] for t in range(40)},
        "edge_weight": {str(t): [1.0, 2.0, float(t)] for t in range(40)}}}
    wiki = {"time_periods": 40, "edges": [[0, 1], [1, 2], [3, 4]], "weights": [1.0, 3.0, 2.0],
            **{str(t): {"y": y[t]} for t in range(40)}}
    for name, data in (("covid", covid), ("wiki", wiki)):
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    runner = CliRunner()
    common = ["--runs", "1", "--epochs", "2", "--lags", "8"]
    result = runner.invoke(main, ["temporal", "--dataset", str(tmp_path / "covid.json"), *common, "--output-dir",
                                  str(tmp_path / "covid")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["temporal", "--dataset", str(tmp_path / "wiki.json"), *common, "--update",
                                  "incremental", "--output-dir", str(tmp_path / "wiki")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    covid_res = json.loads((tmp_path / "covid" / "results.json").read_text())
    assert covid_res["snapshots"] == [6, 6, 20] and covid_res["update"] == "cumulative"
    steps = [json.loads(line)["step"] for line in (tmp_path / "wiki" / "run-0" / "metrics.jsonl").open()]
    assert steps == [6, 12]  # incremental: one step per training snapshot
