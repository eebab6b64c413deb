"""Tier tests run tiny models: one intra-op thread is faster for them than two threads that
compete with other processes for the same cores, and keeps timings steady."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the Hugging Face models here are built, never fetched
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def zoo():
    """Tiny Hugging Face models by family name (see tests/tiers/hf_zoo.py), built on first use."""
    from tests.tiers.hf_zoo import Zoo

    return Zoo()
