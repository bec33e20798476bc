"""Fixtures of the dashboard's view tests: a fresh queue per test, on every
backend, and the three kinds of users (acting staff, read-only staff, not
staff).

``qs`` is parametrized over the backends (issue 8: the dashboard works
unchanged on each): ``memory``, ``slab`` (a directory of this test alone) and
``redis`` (the server of tests/core, a key prefix of this test alone, every
key of it deleted afterwards; skipped when no server answers, failed instead
with DQ_REQUIRE_REDIS=1). A test that needs to know which backend it runs
on asks for ``backend_name``.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client, override_settings

from dqadmin import history
from dqadmin import queues as queues_module
from dqadmin.queues import close_queues, get_queues
from queuecore import Queues
from queuecore.memory import MemoryBackend
from tests.core.conftest import HAS_REDIS_BACKEND, REDIS_URL, skip_or_fail_without_redis

_names = itertools.count(1)

API_TOKEN = "s3cret-token"
# No fsync per put and small slabs keep the slab runs as fast as memory.
SLAB_OPTIONS: dict[str, Any] = {"fsync_put": False, "slab_size": 256 * 1024}

WEB_BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("slab", id="slab"),
]
if HAS_REDIS_BACKEND:
    WEB_BACKENDS.append(pytest.param("redis", id="redis", marks=pytest.mark.redis))


@pytest.fixture(params=WEB_BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _delete_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def dq_settings(backend_name: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The ``DQ`` setting of this test's own queue location on the backend.

    Afterwards every Queues the views opened (get_queues() caches one per
    location and options) is closed and dropped, the rate history forgotten,
    and what the test stored removed."""
    if backend_name == "memory":
        name = f"web-{next(_names)}-{uuid.uuid4().hex[:8]}"
        settings = {"LOCATION": f"memory://{name}", "API_TOKEN": API_TOKEN}
    elif backend_name == "slab":
        settings = {"LOCATION": str(tmp_path / "queues"), "OPTIONS": dict(SLAB_OPTIONS), "API_TOKEN": API_TOKEN}
    elif backend_name == "redis":
        skip_or_fail_without_redis()
        prefix = f"dqweb-{uuid.uuid4().hex}"
        settings = {"LOCATION": REDIS_URL, "OPTIONS": {"prefix": prefix}, "API_TOKEN": API_TOKEN}
    else:  # pragma: no cover - a new backend needs a branch here
        raise AssertionError(f"unknown backend {backend_name!r}")
    try:
        yield settings
    finally:
        close_queues()
        assert not queues_module._cache
        history.forget()
        if backend_name == "memory":
            MemoryBackend.reset(name)
        elif backend_name == "redis":
            _delete_redis_keys(prefix)


@pytest.fixture
def qs(dq_settings: dict[str, Any]) -> Iterator[Queues]:
    """The dashboard's Queues (what the views' get_queues() returns), on this
    test's own location; closed after the test (see ``dq_settings``)."""
    with override_settings(DQ=dq_settings):
        queues = get_queues()
        # A fresh object on this test's location, not one cached by an earlier test.
        assert not queues.closed and queues.location == dq_settings["LOCATION"]
        assert queues.topics() == []
        yield queues
    assert not queues.closed  # the views' Queues stays open until the test ends


@pytest.fixture
def operator(db: None) -> object:
    """Staff with the permission to act (not a superuser)."""
    user = get_user_model().objects.create_user("olga", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="change_queues", content_type__app_label="dqadmin"))
    return user


@pytest.fixture
def viewer(db: None) -> object:
    """Staff without the permission: read-only."""
    return get_user_model().objects.create_user("vera", password="pw", is_staff=True)


@pytest.fixture
def op_client(operator: object) -> Client:
    client = Client()
    client.force_login(operator)  # type: ignore[arg-type]
    return client


@pytest.fixture
def ro_client(viewer: object) -> Client:
    client = Client()
    client.force_login(viewer)  # type: ignore[arg-type]
    return client


HTMX = {"HX-Request": "true"}


def fail_one(queues: Queues, topic: str, reason: str = "ValueError: boom", traceback: str | None = None) -> int:
    """Put a message and fail it; returns its id."""
    mid = queues.put(topic, {"n": "to fail"})
    while True:
        task = queues.take(topic, timeout=0)
        assert task is not None
        if task.id == mid:
            task.fail(reason, traceback=traceback)
            return mid
        task.retry()
