"""One intra-op thread for dianet's tests: their tensors are tiny, and on a shared 2-core machine OpenMP
barriers between two threads made them several times slower (16.5 s → 2.8 s for one CLI training run)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
