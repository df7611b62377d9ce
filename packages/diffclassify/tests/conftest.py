"""diffclassify tests run on one CPU thread: their tensors are tiny, and on a shared 2-core machine a second
intra-op thread mostly waits (restored afterwards for the other packages' tests)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
