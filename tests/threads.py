"""One intra-op thread for tiny models: faster for them than two threads that compete with
other processes for the same cores, and it keeps timings steady."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
