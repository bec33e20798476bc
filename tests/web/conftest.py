"""Fixtures of the dashboard's view tests: a fresh memory queue per test and
the three kinds of users (acting staff, read-only staff, not staff)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client, override_settings

from dqadmin import history
from dqadmin.queues import get_queues
from queuecore import Queues
from queuecore.memory import MemoryBackend

_names = itertools.count(1)


@pytest.fixture
def qs() -> Iterator[Queues]:
    """The dashboard's Queues, on a memory location of this test alone."""
    name = f"web-{next(_names)}"
    with override_settings(DQ={"LOCATION": f"memory://{name}", "API_TOKEN": "s3cret-token"}):
        queues = get_queues()
        yield queues
    MemoryBackend.reset(name)
    history.forget(f"memory://{name}")


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
