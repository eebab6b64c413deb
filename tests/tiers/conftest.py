"""Tier tests run tiny models on one intra-op thread (the hub is off suite-wide: tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.threads import one_thread  # noqa: F401 - an autouse fixture, active by being imported


@pytest.fixture(scope="session")
def zoo():
    """Tiny Hugging Face models by family name (see tests/tiers/hf_zoo.py), built on first use."""
    from tests.tiers.hf_zoo import Zoo

    return Zoo()
