"""The backend fixtures of the core tests.

``make_queues`` is the one seam the conformance suite runs through: it is
parametrized over every backend (memory, slab, and redis when its module
exists), and calling it opens a ``Queues`` on the test's own location, so two
calls give two ``Queues`` objects that share the same messages.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from queuecore import Queues
from queuecore.memory import MemoryBackend

QUEUECORE = Path(__file__).resolve().parents[2] / "queuecore"
HAS_SLAB = (QUEUECORE / "slab" / "__init__.py").exists()
HAS_REDIS_BACKEND = (QUEUECORE / "redis_backend.py").exists()
REDIS_URL = "redis://127.0.0.1:6379/15"
NO_SLAB = "queuecore/slab/ does not exist yet (the slab backend is being written)"

# Small slabs keep preallocation cheap and make the tests cross slab
# boundaries; no fsync per put keeps them fast. Tests override either.
FAST_OPTIONS: dict[str, Any] = {"fsync_put": False, "slab_size": 256 * 1024}


def redis_answers() -> bool:
    try:
        import redis
    except ImportError:
        return False
    try:
        return bool(
            redis.Redis.from_url(REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5).ping()
        )
    except Exception:
        return False


def skip_or_fail_without_redis() -> None:
    """Skip when no Redis server answers, unless DQ_REQUIRE_REDIS=1 (CI)."""
    if redis_answers():
        return
    message = f"no Redis server answers at {REDIS_URL}"
    if os.environ.get("DQ_REQUIRE_REDIS") == "1":
        pytest.fail(message + " and DQ_REQUIRE_REDIS=1")
    pytest.skip(message)


class QueuesFactory:
    """Opens ``Queues`` objects on one location; closes them all at the end.

    ``factory(**options)`` -> a new ``Queues``; ``factory.backend`` is the
    backend's name; ``factory.location`` the location string.
    """

    def __init__(self, backend: str, location: str, options: dict[str, Any]) -> None:
        self.backend = backend
        self.location = location
        self.options = options
        self.opened: list[Queues] = []

    def __call__(self, **options: Any) -> Queues:
        qs = Queues(self.location, **{**self.options, **options})
        self.opened.append(qs)
        return qs

    def close_all(self) -> None:
        for qs in self.opened:
            qs.close()


def _backend_params() -> list[Any]:
    params: list[Any] = [
        pytest.param("memory", id="memory"),
        pytest.param("slab", id="slab", marks=() if HAS_SLAB else pytest.mark.skip(reason=NO_SLAB)),
    ]
    if HAS_REDIS_BACKEND:
        params.append(pytest.param("redis", id="redis", marks=pytest.mark.redis))
    return params


BACKEND_PARAMS = _backend_params()


@pytest.fixture(params=BACKEND_PARAMS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_queues(backend_name: str, tmp_path: Path) -> Iterator[QueuesFactory]:
    """A factory of ``Queues`` on a fresh location of the parametrized backend."""
    if backend_name == "memory":
        name = f"test-{uuid.uuid4().hex}"
        factory = QueuesFactory("memory", f"memory://{name}", dict(FAST_OPTIONS))
        yield factory
        factory.close_all()
        MemoryBackend.reset(name)
    elif backend_name == "slab":
        factory = QueuesFactory("slab", str(tmp_path / "queues"), dict(FAST_OPTIONS))
        yield factory
        factory.close_all()
    elif backend_name == "redis":
        skip_or_fail_without_redis()
        prefix = f"dqtest-{uuid.uuid4().hex}"
        factory = QueuesFactory("redis", REDIS_URL, {**FAST_OPTIONS, "prefix": prefix})
        yield factory
        factory.close_all()
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    else:  # pragma: no cover - a new backend needs a branch here
        raise AssertionError(f"unknown backend {backend_name!r}")


@pytest.fixture
def qs(make_queues: QueuesFactory) -> Queues:
    """One open ``Queues`` on the parametrized backend."""
    return make_queues()
