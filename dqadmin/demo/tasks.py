"""Demo Django tasks (``make run`` enqueues a few): one that succeeds with a
return value, one that fails now and then, one that waits."""

from __future__ import annotations

import hashlib
import time

from dqadmin.tasks.compat import task


@task()
def checksum(text: str) -> str:
    """The SHA-256 of ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()


@task()
def square_unless_multiple_of_five(n: int) -> int:
    """``n * n``; raises ValueError for multiples of five (a failed task to look at)."""
    if n % 5 == 0:
        raise ValueError(f"{n} is a multiple of five")
    return n * n


@task()
def nap(seconds: float) -> float:
    """Sleeps (a task seen running), then returns how long it slept."""
    started = time.monotonic()
    time.sleep(min(float(seconds), 30.0))
    return round(time.monotonic() - started, 3)


def enqueue_demo_tasks(n: int) -> int:
    """Enqueue ``n`` demo tasks of each kind; how many in all."""
    for i in range(1, n + 1):
        checksum.enqueue(f"demo {i}")
        square_unless_multiple_of_five.enqueue(i)
        nap.enqueue(0.5)
    return 3 * n
