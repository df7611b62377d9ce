"""Shared test setup for diff-resnet."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run each test on one intra-op thread, then restore the setting.

    The tests check numbers, not speed, and their tensors are small: on a shared 2-core machine a second
    OpenMP thread that is not scheduled makes every tiny matmul wait for it (measured: a 30-point episode
    head trained 13× slower with two threads than with one under load).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
