"""Tasks of the tasks tests, written against Django's public API only."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from dqadmin.tasks.compat import FRAMEWORK

if FRAMEWORK == "django.tasks":
    from django.tasks import task
else:
    from django_tasks import task


@task()
def add(a: int, b: int) -> int:
    return a + b


@task(queue_name="emails")
def send(to: str, subject: str = "") -> dict[str, Any]:
    return {"to": to, "subject": subject}


@task()
def explode(message: str) -> None:
    raise ValueError(message)


@task()
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@task(takes_context=True)
def with_context(context: Any, label: str) -> dict[str, Any]:
    return {"attempt": context.attempt, "id": context.task_result.id, "label": label}


@task()
def returns_a_set() -> Any:
    return {1, 2}


@task()
def flaky(marker: str) -> str:
    """Fails on its first run (a marker file remembers), then succeeds."""
    path = Path(marker)
    if not path.exists():
        path.write_text("ran once")
        raise RuntimeError("first run fails")
    return "second run"


@task()
def wait_for(path: str, hold: str) -> str:
    """Writes its pid to ``path``, then waits while the file ``hold`` exists
    (at most a minute): a worker to kill in the middle of a task."""
    import time

    Path(path).write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while Path(hold).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return "woke"
