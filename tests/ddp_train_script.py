"""Train a tiny MLP with the core Trainer and save its final parameters (run by test_multiprocess.py).

Usage: ``python ddp_train_script.py OUT.safetensors`` or under
``ACCELERATE_USE_CPU=yes torchrun --standalone --nproc_per_node=2 ddp_train_script.py OUT.safetensors``.
No BatchNorm or dropout, 96 samples = 6 global batches of 16: every process count sees the same maths.
"""

import sys

import torch
from diffcore.train import TrainConfig, Trainer
from safetensors.torch import save_file
from torch.utils.data import TensorDataset


def main(out: str) -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(96) % 3
    x = torch.randn(96, 6, generator=g) + 2.0 * torch.nn.functional.one_hot(y, 6).float()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    config = TrainConfig(epochs=3, batch_size=16, cpu=True, progress=False, seed=5)
    trainer = Trainer(model, optimizer, config, TensorDataset(x, y), {"val": TensorDataset(x, y)})
    summary = trainer.fit()
    if trainer.accelerator.is_main_process:
        state = {k: v.contiguous() for k, v in trainer.unwrapped_model().state_dict().items()}
        save_file(state, out, metadata={"world_size": str(trainer.accelerator.num_processes),
                                        "val_acc": str(summary["final_metrics"]["val_acc"])})
    trainer.accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1])
