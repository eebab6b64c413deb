"""Analysis tests run tiny models on one intra-op thread (the hub is off suite-wide: tests/conftest.py)."""

from tests.threads import one_thread  # noqa: F401 - an autouse fixture, active by being imported
