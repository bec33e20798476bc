"""``Queues.put_delayed``: a message that becomes ready later (deferred
tasks), on every backend."""

from __future__ import annotations

import time

import pytest

from queuecore import Queues


def test_delayed_then_ready(qs: Queues) -> None:
    mid = qs.put_delayed("q1", {"later": True}, 0.3)
    assert qs.stats()["q1"]["delayed"] == 1 and qs.stats()["q1"]["ready"] == 0
    assert qs.peek("q1", mid).state == "delayed"
    assert qs.take("q1", timeout=0) is None
    task = qs.take("q1", timeout=5.0)
    assert task is not None and task.id == mid and task.value == {"later": True}
    assert task.attempts == 1
    assert task.complete()


def test_no_delay_is_ready_at_once(qs: Queues) -> None:
    mid = qs.put_delayed("q1", "now", 0)
    task = qs.take("q1", timeout=0)
    assert task is not None and task.id == mid


def test_ids_follow_the_puts(qs: Queues) -> None:
    first = qs.put("q1", 1)
    assert qs.put_delayed("q1", 2, 60) == first + 1
    assert qs.put("q1", 3) == first + 2


def test_a_waiting_take_wakes_when_it_comes_due(qs: Queues) -> None:
    qs.put_delayed("q1", "x", 0.2)
    started = time.monotonic()
    task = qs.take("q1", timeout=5.0)
    assert task is not None and time.monotonic() - started < 4.0


@pytest.mark.parametrize("delay", [float("nan"), float("inf"), "1", None, True])
def test_bad_delays(qs: Queues, delay: object) -> None:
    with pytest.raises(ValueError, match="delay"):
        qs.put_delayed("q1", "x", delay)  # type: ignore[arg-type]
