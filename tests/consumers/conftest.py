"""Fixtures of the consumer tests: a fresh memory:// queue per test, wired
into the Django settings, and helpers to wait without fixed sleeps."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from django.test import override_settings

from dqadmin.consumers import ConsumerRegistry
from dqadmin.queues import close_queues
from queuecore import Queues
from queuecore.memory import MemoryBackend


def wait_for(
    condition: Callable[[], object], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def queues() -> Iterator[Queues]:
    """A memory:// Queues of its own, also what get_queues() returns."""
    name = f"consumers-{uuid.uuid4().hex}"
    location = f"memory://{name}"
    with override_settings(DQ={"LOCATION": location, "HEARTBEAT_INTERVAL": 0.05}):
        qs = Queues(location)
        try:
            yield qs
        finally:
            close_queues()
            qs.close()
            MemoryBackend.reset(name)


@pytest.fixture
def registry() -> ConsumerRegistry:
    return ConsumerRegistry()
