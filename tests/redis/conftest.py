"""Fixtures of the Redis backend's own tests: a real server, a fresh prefix
per test, every key of that prefix deleted afterwards.

Skipped when no server answers, unless DQ_REQUIRE_REDIS=1 (CI), then failed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from queuecore import Queues

REDIS_URL = os.environ.get("DQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _client() -> Any:
    import redis

    return redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=1)


def _answers() -> bool:
    try:
        return bool(_client().ping())
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    mine = [i for i in items if str(i.path).startswith(here)]
    if not mine:
        return
    for item in mine:
        item.add_marker(pytest.mark.redis)
    if _answers():
        return
    message = f"no Redis server answers at {REDIS_URL}"
    if os.environ.get("DQ_REQUIRE_REDIS") == "1":
        fail = pytest.mark.usefixtures("_redis_required")
        for item in mine:
            item.add_marker(fail)
        return
    for item in mine:
        item.add_marker(pytest.mark.skip(reason=message))


@pytest.fixture
def _redis_required() -> None:
    pytest.fail(f"no Redis server answers at {REDIS_URL} and DQ_REQUIRE_REDIS=1")


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def rclient() -> Iterator[Any]:
    """A plain redis-py client on the test database, to look behind the backend."""
    client = _client()
    yield client
    client.close()


@pytest.fixture
def prefix(rclient: Any) -> Iterator[str]:
    name = f"dqtest-{uuid.uuid4().hex[:12]}"
    yield name
    keys = list(rclient.scan_iter(match=f"{name}:*", count=1000))
    if keys:
        rclient.delete(*keys)


@pytest.fixture
def open_queues(redis_url: str, prefix: str) -> Iterator[Any]:
    """``open_queues(**options)`` -> a Queues on the test's prefix (closed at the end)."""
    opened: list[Queues] = []

    def factory(**options: Any) -> Queues:
        qs = Queues(redis_url, **{"prefix": prefix, **options})
        opened.append(qs)
        return qs

    yield factory
    for qs in opened:
        qs.close()


@pytest.fixture
def qs(open_queues: Any) -> Queues:
    return open_queues()  # type: ignore[no-any-return]
