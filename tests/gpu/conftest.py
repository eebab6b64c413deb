"""Tests of what only runs on a GPU. Each is marked `cuda` and skipped, with the reason,
where no CUDA device is present; on a GPU runtime `python -m pytest tests` runs them with the
rest (`-m cuda` runs only these)."""

from __future__ import annotations

import pytest
import torch

HERE = __file__.rsplit("/", 1)[0]


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if str(item.fspath).startswith(HERE):
            item.add_marker(pytest.mark.cuda)
            if not torch.cuda.is_available():
                item.add_marker(skip)


@pytest.fixture()
def cuda() -> torch.device:
    """The GPU, with its memory statistics and cache cleared so each test measures itself."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    yield torch.device("cuda")
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
