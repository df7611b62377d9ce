import json

import pytest
import torch
from diffcore.errors import ConfigError
from diffcore.runs import RunDir
from diffcore.testing import assert_close_state_dicts, reset_accelerate_state
from diffcore.train import FullBatch, TrainConfig, Trainer, TrainingError, steps_per_epoch
from torch.utils.data import TensorDataset


@pytest.fixture(autouse=True)
def _fresh_accelerate():
    reset_accelerate_state()
    yield
    reset_accelerate_state()


def blobs(n=96, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, d, generator=g) + 4.0 * torch.nn.functional.one_hot(y, d).float()
    return TensorDataset(x, y)


def mlp(dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(dropout),
                               torch.nn.Linear(16, 3))


def make_trainer(tmp_path=None, *, model=None, data=None, optim="adam", lr=0.01, mode="new", loss_fn=None,
                 **overrides):
    model = model or mlp()
    data = data or blobs()
    config = TrainConfig(**{"epochs": 4, "batch_size": 16, "cpu": True, "progress": False, "seed": 1,
                            **overrides})
    opt = (torch.optim.Adam(model.parameters(), lr=lr) if optim == "adam"
           else torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9))
    run = None if tmp_path is None else RunDir.create(tmp_path, config, package="diffcore", command="test", mode=mode)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return Trainer(model, opt, config, data, {"val": data}, run=run, scheduler=scheduler,
                   **({"loss_fn": loss_fn} if loss_fn else {}))


class Interrupted(Exception):
    pass


def crash_at_step(step):
    """A classification loss that raises on optimiser step ``step`` (0-based), like a killed job."""
    calls = iter(range(10**6))

    def loss(model, batch):
        if next(calls) == step:
            raise Interrupted
        return torch.nn.functional.cross_entropy(model(batch[0]), batch[1])

    return loss


def test_minibatch_training_learns_and_logs(tmp_path):
    trainer = make_trainer(tmp_path, epochs=6)
    summary = trainer.fit()
    records = trainer.run.read_metrics()
    assert [r["epoch"] for r in records] == list(range(1, 7))
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert records[-1]["val_acc"] > 90.0 and summary["final_metrics"]["val_acc"] == records[-1]["val_acc"]
    assert records[-1]["step"] == 6 * steps_per_epoch(96, trainer.config) == 36
    assert records[2]["lr"] == pytest.approx(0.005)  # StepLR halves after 2 epochs


def test_resume_from_mid_run_state_matches_uninterrupted_run(tmp_path):
    """Dropout + shuffling + Adam + scheduler: RNG, sampler order and optimiser state must all resume."""
    full = make_trainer(tmp_path / "full", model=mlp(0.3), epochs=6)
    full.fit()
    reset_accelerate_state()
    part = make_trainer(tmp_path / "cut", model=mlp(0.3), epochs=6, loss_fn=crash_at_step(3 * 6 + 2))
    with pytest.raises(Interrupted):  # killed in epoch 4, after epoch 3 was saved
        part.fit()
    assert json.loads((tmp_path / "cut" / "state" / "trainer_state.json").read_text())["epoch"] == 3
    reset_accelerate_state()
    resumed = make_trainer(tmp_path / "cut", model=mlp(0.3), epochs=6, mode="resume")
    summary = resumed.fit(resume=True)
    assert summary["epochs"] == 6
    assert_close_state_dicts(full.unwrapped_model().state_dict(), resumed.unwrapped_model().state_dict())
    assert [r["epoch"] for r in resumed.run.read_metrics()] == [1, 2, 3, 4, 5, 6]


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    one = make_trainer(epochs=2, optim="sgd")
    one.fit()
    reset_accelerate_state()
    accum = make_trainer(epochs=2, optim="sgd", grad_accum_steps=4)
    accum.fit()
    assert accum.global_step == one.global_step == 12
    assert_close_state_dicts(one.unwrapped_model().state_dict(), accum.unwrapped_model().state_dict(),
                             atol=1e-6, rtol=1e-5)


def test_full_batch_and_early_stopping():
    data = blobs()
    model = mlp()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), TrainConfig(
        epochs=20, cpu=True, progress=False, early_stopping_patience=3), FullBatch(data.tensors),
        {"val": FullBatch(data.tensors)})
    summary = trainer.fit()
    # lr = 0: the first evaluation is the best, three more without improvement stop the run.
    assert summary["stopped_early"] and summary["epochs"] == 4 and summary["best_epoch"] == 1


@pytest.mark.parametrize("restore_best", [True, False])
def test_restore_best_weights(restore_best):
    """With ``restore_best`` the model ends with the weights of its best epoch, not of its last one."""
    settings = dict(optim="sgd", lr=1.0, epochs=6, monitor="val_loss", monitor_mode="min")
    trainer = make_trainer(restore_best=restore_best, **settings)
    trainer.fit()
    best = trainer.best_epoch
    assert best is not None and best < 6, "the setting must make an earlier epoch the best one"
    reset_accelerate_state()
    reference = make_trainer(**{**settings, "epochs": best})  # the same run stopped at its best epoch
    reference.fit()
    final = trainer.unwrapped_model().state_dict()
    if restore_best:
        assert_close_state_dicts(final, reference.unwrapped_model().state_dict())
    else:  # the last weights, which differ from the best epoch's
        assert any(not torch.equal(final[k], v) for k, v in reference.unwrapped_model().state_dict().items())


def test_clipping_bounds_the_update():
    model = mlp()
    before = torch.nn.utils.parameters_to_vector(model.parameters()).clone()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=1.0), TrainConfig(
        epochs=1, cpu=True, progress=False, max_grad_norm=1e-3), FullBatch(blobs().tensors))
    trainer.fit()
    after = torch.nn.utils.parameters_to_vector(trainer.unwrapped_model().parameters())
    assert (after - before).norm() <= 1e-3 + 1e-7


def test_bf16_mixed_precision_runs_on_cpu():
    trainer = make_trainer(epochs=2, mixed_precision="bf16")
    summary = trainer.fit()
    assert torch.isfinite(torch.tensor(summary["final_metrics"]["val_loss"]))


def test_bad_batch_size_and_nan_loss_are_clear_errors():
    with pytest.raises(ConfigError, match=r"batch_size=10 \(the global batch\) must be divisible"):
        make_trainer(batch_size=10, grad_accum_steps=3)
    reset_accelerate_state()
    model = mlp()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), TrainConfig(cpu=True, progress=False),
                      FullBatch(blobs().tensors), loss_fn=lambda m, b: m(b[0]).sum() * float("nan"))
    with pytest.raises(TrainingError, match="loss became nan at epoch 1"):
        trainer.fit()


def test_resume_without_state_or_with_a_truncated_file_is_a_clear_error(tmp_path):
    run_dir = tmp_path / "run"
    trainer = make_trainer(run_dir, epochs=1)
    with pytest.raises(TrainingError, match="has no saved training state"):
        trainer.fit(resume=True)
    reset_accelerate_state()
    make_trainer(tmp_path / "done", epochs=1).fit()
    weights = tmp_path / "done" / "state" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    reset_accelerate_state()
    with pytest.raises(TrainingError, match=r"model\.safetensors is truncated or corrupt"):
        make_trainer(tmp_path / "done", epochs=1, mode="resume").fit(resume=True)


@pytest.mark.parametrize("field, value", [("epochs", 0), ("batch_size", 0), ("eval_every", 0),
                                          ("max_grad_norm", -1.0), ("early_stopping_patience", 0)])
def test_train_config_rejects_out_of_range_values(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value}).check()


def test_resume_from_foreign_state_is_a_clear_error(tmp_path):
    make_trainer(tmp_path, epochs=1).fit()
    reset_accelerate_state()
    model = torch.nn.Sequential(torch.nn.Linear(6, 3))
    config = TrainConfig(epochs=2, batch_size=16, cpu=True, progress=False)
    other = Trainer(model, torch.optim.Adam(model.parameters()), config, blobs(), run=RunDir(tmp_path))
    with pytest.raises(TrainingError, match="cannot resume from"):
        other.fit(resume=True)
