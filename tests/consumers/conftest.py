"""Fixtures of the consumer tests: a fresh queue location per test on each
backend, wired into the Django settings (in-process tests) or into the
environment of child processes (real-process tests), and helpers to wait
without fixed sleeps.

Issue 8: runconsumers works unchanged on every backend, so the tests run on
each of them.

- ``store`` (real processes): ``slab`` (a directory of this test alone) and
  ``redis`` (the server of tests/core, a key prefix of this test alone, every
  key of it deleted afterwards).
- ``queues`` (in process): ``memory``, ``slab`` and ``redis``.

The redis params are skipped when no server answers, and fail instead with
DQ_REQUIRE_REDIS=1 (CI). A test that must know which backend it runs on asks
``store.name`` (or ``backend_name``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from dqadmin.consumers import ConsumerRegistry
from dqadmin.queues import close_queues
from queuecore import Queues
from queuecore.memory import MemoryBackend
from tests.core.conftest import (
    FAST_OPTIONS,
    HAS_REDIS_BACKEND,
    REDIS_URL,
    skip_or_fail_without_redis,
)

# The test app is imported by the child processes only (through
# tests/consumers/settings.py): collecting it for doctests would register its
# consumers in this process's project-wide registry.
collect_ignore = ["testapp"]


def wait_for(
    condition: Callable[[], object], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def _redis_param() -> list[Any]:
    if not HAS_REDIS_BACKEND:
        return []
    return [pytest.param("redis", id="redis", marks=pytest.mark.redis)]


PROCESS_BACKENDS = [pytest.param("slab", id="slab"), *_redis_param()]
IN_PROCESS_BACKENDS = [pytest.param("memory", id="memory"), *PROCESS_BACKENDS]


@dataclass
class Store:
    """One test's queue location: ``name`` of the backend, ``location`` and
    the ``options`` every process opening it uses."""

    name: str
    location: str
    options: dict[str, Any] = field(default_factory=dict)

    def open(self, **options: Any) -> Queues:
        return Queues(self.location, **{**self.options, **options})

    def settings(self, **extra: Any) -> dict[str, Any]:
        """The ``DQ`` setting of this location."""
        return {"LOCATION": self.location, "OPTIONS": dict(self.options), **extra}

    def env(self, **options: Any) -> dict[str, str]:
        """What a child process needs to open it (read by tests/consumers/settings.py)."""
        return {
            "DQ_LOCATION": self.location,
            "DQ_OPTIONS": json.dumps({**self.options, **options}),
        }


def _delete_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@contextmanager
def new_store(name: str, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty location on backend ``name``; removed afterwards."""
    if name == "memory":
        memory_name = f"consumers-{uuid.uuid4().hex}"
        try:
            yield Store("memory", f"memory://{memory_name}")
        finally:
            MemoryBackend.reset(memory_name)
    elif name == "slab":
        yield Store("slab", str(tmp_path / "queues"), dict(FAST_OPTIONS))
    elif name == "redis":
        skip_or_fail_without_redis()
        prefix = f"dqcons-{uuid.uuid4().hex}"
        try:
            yield Store("redis", REDIS_URL, {"prefix": prefix})
        finally:
            _delete_redis_keys(prefix)
    else:  # pragma: no cover - a new backend needs a branch here
        raise AssertionError(f"unknown backend {name!r}")


@pytest.fixture(params=PROCESS_BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A location for real processes: slab or redis."""
    with new_store(str(request.param), tmp_path) as s:
        yield s


@pytest.fixture(params=IN_PROCESS_BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def queues(backend_name: str, tmp_path: Path) -> Iterator[Queues]:
    """A Queues on this test's own location (memory, slab or redis), also
    what get_queues() returns."""
    with new_store(backend_name, tmp_path) as s:
        with override_settings(DQ=s.settings(HEARTBEAT_INTERVAL=0.05)):
            qs = s.open()
            try:
                yield qs
            finally:
                close_queues()
                qs.close()


@pytest.fixture
def registry() -> ConsumerRegistry:
    return ConsumerRegistry()
