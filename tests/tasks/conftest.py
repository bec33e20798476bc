"""Fixtures of the tasks tests: ``TASKS`` naming ``DQBackend`` at a queue
location of the test's own, on slab files, memory and Redis, and a worker to
run what was enqueued (``manage.py runconsumers --burst``, in this process or
in a real child process)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import override_settings

from dqadmin.queues import close_queues, get_queues
from queuecore import Queues
from tests import settings as test_settings
from tests.core.conftest import REDIS_URL, skip_or_fail_without_redis

ROOT = Path(__file__).resolve().parents[2]

TASKS_SETTING = test_settings.TASKS


@dataclass
class Where:
    name: str
    location: str
    options: dict[str, Any]

    def queues(self) -> Queues:
        return get_queues()

    def env(self) -> dict[str, str]:
        """The environment of a child process using the same location."""
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.tasks.settings",
            "DQ_LOCATION": self.location,
            "DQ_OPTIONS": json.dumps(self.options),
            "PYTHONPATH": str(ROOT),
        }


@pytest.fixture(params=["slab", "memory", "redis"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Where]:
    prefix = f"dqtasks-{uuid.uuid4().hex[:8]}"
    if request.param == "redis":
        skip_or_fail_without_redis()
        found = Where("redis", REDIS_URL, {"prefix": prefix, "fsync_put": False})
    elif request.param == "memory":
        found = Where("memory", f"memory://{prefix}", {})
    else:
        found = Where("slab", str(tmp_path / "queues"), {"fsync_put": False})
    with override_settings(DQ={"LOCATION": found.location, "OPTIONS": found.options}, TASKS=TASKS_SETTING):
        try:
            yield found
        finally:
            close_queues()
            if request.param == "redis":
                import redis

                client = redis.Redis.from_url(REDIS_URL)
                for key in client.scan_iter(f"{prefix}*"):
                    client.delete(key)
            elif request.param == "memory":
                from queuecore.memory import MemoryBackend

                MemoryBackend.reset(prefix)


@pytest.fixture
def slab(tmp_path: Path) -> Iterator[Where]:
    """A slab location only (for what needs another process)."""
    found = Where("slab", str(tmp_path / "queues"), {"fsync_put": False})
    with override_settings(DQ={"LOCATION": found.location, "OPTIONS": found.options}, TASKS=TASKS_SETTING):
        try:
            yield found
        finally:
            close_queues()


def work(*topics: str) -> str:
    """Run the worker until the task queues are drained, in this process."""
    out = io.StringIO()
    call_command("runconsumers", *topics, "--burst", stdout=out, stderr=io.StringIO())
    return out.getvalue()


def work_in_a_process(where: Where, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "runconsumers", "--burst", *args],
        env=where.env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )
