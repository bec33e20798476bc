"""Queues.complete_many: several completes at once, on every backend."""

from __future__ import annotations

import time

import pytest

from tests.core.conftest import QueuesFactory


def test_complete_many(make_queues: QueuesFactory) -> None:
    qs = make_queues()
    qs.put_many("q1", list(range(10)))
    qs.put_many("q2", ["a", "b"])
    tasks = qs.take_many("q1", 10, timeout=0) + qs.take_many("q2", 10, timeout=0)
    assert len(tasks) == 12
    tasks[0].complete()  # settled already: not counted again
    assert qs.complete_many(tasks) == 11
    stats = qs.stats()
    assert stats["q1"]["completed"] == 10 and stats["q1"]["in_progress"] == 0
    assert stats["q2"]["completed"] == 2
    assert qs.complete_many(tasks) == 0
    assert all(t.complete() is False for t in tasks)


def test_complete_many_refuses_lost_leases(make_queues: QueuesFactory) -> None:
    qs = make_queues(visibility_timeout=0.2)
    qs.put_many("q1", [1, 2])
    old = qs.take_many("q1", 2, timeout=0)
    time.sleep(0.3)
    new = qs.take_many("q1", 2, timeout=5)
    assert len(new) == 2
    assert qs.complete_many(old) == 0
    assert qs.complete_many(new) == 2


def test_complete_many_needs_its_own_tasks(make_queues: QueuesFactory) -> None:
    qs = make_queues()
    other = make_queues()
    other.put("q9", 1)
    with pytest.raises(ValueError):
        qs.complete_many(other.take_many("q9", 1, timeout=0))
