"""Leases and the liveness of their owners, the same on every backend
(issue 17): a dead holder's messages come back within the period, a live
one keeps its lease as long as it extends it, a stalled one loses it and
can settle nothing, and counts show abandoned leases as ready at once.

The period is what tells a dead owner: on slab files the kernel does (a
killed process drops its lock at once; a stopped one keeps it, so only its
``visibility_timeout`` ends its leases); on Redis the owner's liveness record
(``owner_timeout``); in memory, a ``Queues`` object that closes.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from queuecore import Queues
from tests.core.conftest import QueuesFactory

WORKER = Path(__file__).with_name("liveness_worker.py")
PATIENCE = 30.0
# Short periods keep the tests fast: Redis declares an owner dead after
# OWNER_TIMEOUT without a refresh; a lease ends after VISIBILITY unless extended.
OWNER_TIMEOUT = 1.0
VISIBILITY = 1.0


def options(backend: str, **more: float) -> dict[str, float]:
    found: dict[str, float] = {"visibility_timeout": 60.0, **more}
    if backend == "redis":
        found["owner_timeout"] = OWNER_TIMEOUT
    return found


def take_within(qs: Queues, topic: str, n: int, seconds: float) -> list[int]:
    """Ids taken (and completed) from ``topic`` until ``n`` came or ``seconds`` passed."""
    got: list[int] = []
    deadline = time.monotonic() + seconds
    while len(got) < n and time.monotonic() < deadline:
        for task in qs.take_many(topic, n - len(got), timeout=0.1):
            assert task.complete()
            got.append(task.id)
    return got


# -- in one process, every backend ---------------------------------------------------
def test_a_long_handler_keeps_its_message_while_it_extends(make_queues: QueuesFactory) -> None:
    b = make_queues.backend
    holder = make_queues(**options(b, visibility_timeout=VISIBILITY))
    other = make_queues(**options(b, visibility_timeout=VISIBILITY))
    holder.put("q1", "long job")
    task = holder.take("q1", timeout=0)
    assert task is not None
    end = time.monotonic() + 3 * VISIBILITY
    while time.monotonic() < end:
        assert task.extend(VISIBILITY)
        assert other.take("q1", timeout=0.1) is None  # no duplicate while it lives
        time.sleep(VISIBILITY / 4)
    assert task.complete()
    assert other.take("q1", timeout=0) is None
    stats = other.stats()["q1"]
    assert (stats["completed"], stats["in_progress"], stats["ready"]) == (1, 0, 0)


def test_extend_after_the_lease_was_lost_is_false(make_queues: QueuesFactory) -> None:
    b = make_queues.backend
    holder = make_queues(**options(b, visibility_timeout=0.3))
    other = make_queues(**options(b, visibility_timeout=60))
    holder.put("q1", "x")
    task = holder.take("q1", timeout=0)
    assert task is not None
    time.sleep(0.5)
    assert not task.extend()  # the deadline passed
    second = other.take("q1", timeout=5)
    assert second is not None and second.id == task.id and second.attempts == 2
    assert not task.extend() and not task.complete()
    assert second.extend() and second.complete()
    assert not second.extend()  # settled


def test_extend_of_an_older_delivery_is_false(make_queues: QueuesFactory) -> None:
    qs = make_queues(**options(make_queues.backend, visibility_timeout=60))
    qs.put("q1", "x")
    first = qs.take("q1", timeout=0)
    assert first is not None
    qs.requeue("q1", first.id)
    second = qs.take("q1", timeout=0)
    assert second is not None
    assert not first.extend() and second.extend()


def test_extend_can_shorten_a_lease(make_queues: QueuesFactory) -> None:
    b = make_queues.backend
    holder = make_queues(**options(b, visibility_timeout=60))
    other = make_queues(**options(b, visibility_timeout=60))
    holder.put("q1", "x")
    task = holder.take("q1", timeout=0)
    assert task is not None and task.extend(0.2)
    again = other.take("q1", timeout=5)
    assert again is not None and again.id == task.id
    assert not task.complete()


def test_extend_refuses_a_bad_duration(make_queues: QueuesFactory) -> None:
    qs = make_queues()
    qs.put("q1", "x")
    task = qs.take("q1", timeout=0)
    assert task is not None
    for bad in (0, -1, float("nan"), float("inf"), "5", True):
        with pytest.raises(ValueError):
            task.extend(bad)  # type: ignore[arg-type]
    assert task.complete()


def test_a_holder_that_closes_gives_its_messages_back_at_once(make_queues: QueuesFactory) -> None:
    b = make_queues.backend
    holder = make_queues(**options(b))
    other = make_queues(**options(b))
    holder.put_many("q1", [1, 2, 3, 4, 5])
    held = holder.take_many("q1", 5, timeout=0)
    assert len(held) == 5
    assert other.stats()["q1"]["in_progress"] == 5
    holder.close()
    # Counted as ready by stats() itself, before any take looks.
    stats = other.stats()["q1"]
    assert (stats["ready"], stats["in_progress"]) == (5, 0)
    assert sorted(take_within(other, "q1", 5, 5.0)) == sorted(t.id for t in held)


# -- real processes: slab files and Redis ------------------------------------------------
@pytest.fixture
def shared(make_queues: QueuesFactory) -> Iterator[QueuesFactory]:
    if make_queues.backend == "memory":
        pytest.skip("memory:// lives in one process")
    yield make_queues


class Holder:
    """A child process that takes ``count`` messages and holds them."""

    def __init__(self, factory: QueuesFactory, count: int, **opts: float) -> None:
        args = {"location": factory.location, "options": {**factory.options, **opts}, "topic": "q1",
                "count": count}
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(args)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.ids: list[int] = json.loads(self.line())

    def line(self) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], PATIENCE)
        assert ready, "no output from the holder"
        text = self.proc.stdout.readline()
        assert text, f"the holder exited: {self.proc.stderr.read() if self.proc.stderr else ''}"
        return text

    def settle(self) -> list[bool]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return list(json.loads(self.line()))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    made: list[Holder] = []
    yield made
    for h in made:
        h.stop()


def period(backend: str) -> float:
    """How long a dead holder's messages may take to come back."""
    return OWNER_TIMEOUT if backend == "redis" else 0.5


def test_a_killed_holder_gives_its_messages_back_within_the_period(
    shared: QueuesFactory, holders: list[Holder]
) -> None:
    b = shared.backend
    qs = shared(**options(b))
    qs.put_many("q1", list(range(5)))
    holders.append(holder := Holder(shared, 5, **options(b)))
    assert qs.stats()["q1"]["in_progress"] == 5
    os.kill(holder.proc.pid, signal.SIGKILL)
    holder.proc.wait(timeout=10)
    started = time.monotonic()
    got = take_within(qs, "q1", 5, period(b) + 10)
    took = time.monotonic() - started
    assert sorted(got) == sorted(holder.ids)
    assert took < period(b) + 3.0, f"{took:.1f} s to get them back"


def test_counts_show_a_killed_holders_messages_as_ready_without_a_take(
    shared: QueuesFactory, holders: list[Holder]
) -> None:
    b = shared.backend
    qs = shared(**options(b))
    qs.put_many("q1", list(range(5)))
    holders.append(holder := Holder(shared, 5, **options(b)))
    os.kill(holder.proc.pid, signal.SIGKILL)
    holder.proc.wait(timeout=10)
    deadline = time.monotonic() + period(b) + 10
    while True:
        stats = shared(**options(b)).stats()["q1"]  # a process that never takes
        if stats["in_progress"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert (stats["ready"], stats["in_progress"]) == (5, 0)


def test_a_stalled_holder_loses_its_lease_and_settles_nothing(
    shared: QueuesFactory, holders: list[Holder]
) -> None:
    b = shared.backend
    # A stopped process keeps its lock on slab files: its visibility_timeout
    # ends the lease there; on Redis its liveness record lapses first.
    opts = options(b, visibility_timeout=VISIBILITY if b == "slab" else 60.0)
    qs = shared(**opts)
    qs.put("q1", "stalled")
    holders.append(holder := Holder(shared, 1, **opts))
    os.kill(holder.proc.pid, signal.SIGSTOP)
    try:
        again = None
        deadline = time.monotonic() + max(OWNER_TIMEOUT, VISIBILITY) + 10
        while again is None and time.monotonic() < deadline:
            again = qs.take("q1", timeout=0.2)
        assert again is not None and again.id == holder.ids[0] and again.attempts == 2
    finally:
        os.kill(holder.proc.pid, signal.SIGCONT)
    assert holder.settle() == [False]  # it woke up too late: refused
    assert again.complete()
    stats = qs.stats()["q1"]
    assert (stats["completed"], stats["in_progress"], stats["ready"]) == (1, 0, 0)


def test_a_live_holder_keeps_its_lease_past_the_period(
    shared: QueuesFactory, holders: list[Holder]
) -> None:
    b = shared.backend
    qs = shared(**options(b))
    qs.put("q1", "kept")
    holders.append(holder := Holder(shared, 1, **options(b)))
    # Three periods of a live holder that only waits: its liveness is
    # refreshed by itself (Redis) or by its lock (slab); nobody else gets it.
    assert take_within(qs, "q1", 1, 3 * period(b) + 1) == []
    assert holder.settle() == [True]
