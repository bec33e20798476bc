"""Paused topics and requests to consumer processes, the same on every
backend: kept with the queues, so every process (and, on Redis, machine)
sees them, and they survive a reopen."""

from __future__ import annotations

import time

import pytest

from queuecore import Queues
from queuecore.defaults import PAUSE_CHECK_INTERVAL
from tests.core.conftest import QueuesFactory


def test_a_paused_topic_accepts_puts_and_delivers_nothing(make_queues: QueuesFactory) -> None:
    qs = make_queues()
    qs.put("q1", "before")
    qs.pause("q1")
    assert qs.put("q1", "during") == 2  # puts go on
    assert qs.take("q1", timeout=0) is None
    assert qs.take_many("q1", 10, timeout=0) == []
    assert qs.stats()["q1"]["ready"] == 2
    assert qs.paused() == ["q1"]
    qs.resume("q1")
    assert qs.paused() == []
    assert [t.value for t in qs.take_many("q1", 10, timeout=0)] == ["before", "during"]


def test_other_topics_are_not_paused(make_queues: QueuesFactory) -> None:
    qs = make_queues()
    qs.put_many("q1", [1])
    qs.put_many("q2", [2])
    qs.pause("q1")
    task = qs.take("q2", timeout=0)
    assert task is not None and task.value == 2


def test_a_pause_reaches_another_queues_object_within_the_interval(make_queues: QueuesFactory) -> None:
    producer, consumer = make_queues(), make_queues()
    producer.put_many("q1", [1, 2])
    first = consumer.take("q1", timeout=0)
    assert first is not None and first.complete()
    producer.pause("q1")
    time.sleep(PAUSE_CHECK_INTERVAL + 0.1)
    assert consumer.take("q1", timeout=0) is None
    assert first.extend() is False  # settled: nothing to do with the pause
    producer.resume("q1")
    time.sleep(PAUSE_CHECK_INTERVAL + 0.1)
    again = consumer.take("q1", timeout=0)
    assert again is not None and again.value == 2


def test_a_waiting_take_wakes_when_the_topic_is_resumed(make_queues: QueuesFactory) -> None:
    qs = make_queues()
    qs.put("q1", "x")
    qs.pause("q1")
    import threading

    threading.Timer(0.3, qs.resume, args=("q1",)).start()
    started = time.monotonic()
    task = qs.take("q1", timeout=10)
    assert task is not None and task.value == "x"
    assert 0.2 < time.monotonic() - started < 5


def test_a_take_waits_out_its_timeout_while_paused(make_queues: QueuesFactory) -> None:
    qs = make_queues()
    qs.put("q1", "x")
    qs.pause("q1")
    started = time.monotonic()
    assert qs.take("q1", timeout=0.3) is None
    assert 0.25 < time.monotonic() - started < 3


def test_a_pause_is_kept_with_the_queues(make_queues: QueuesFactory) -> None:
    qs = make_queues()
    qs.put("q1", 1)
    qs.pause("q1")
    qs.close()
    reopened = make_queues()
    assert reopened.paused() == ["q1"]
    assert reopened.take("q1", timeout=0) is None


def test_pausing_twice_and_resuming_what_is_not_paused(make_queues: QueuesFactory) -> None:
    qs = make_queues()
    qs.put("q1", 1)
    qs.pause("q1")
    qs.pause("q1")
    qs.resume("q1")
    qs.resume("q1")
    assert qs.paused() == []


def test_bad_topic_names_are_refused(make_queues: QueuesFactory) -> None:
    qs = make_queues()
    from queuecore import InvalidTopic

    with pytest.raises(InvalidTopic):
        qs.pause("../x")
    with pytest.raises(InvalidTopic):
        qs.resume("")


def test_controls_are_written_read_and_removed(make_queues: QueuesFactory) -> None:
    qs, other = make_queues(), make_queues()
    backend = qs.backend
    assert backend.controls() == {}
    backend.write_control("host-1", {"action": "quiet", "by": "ops"})
    backend.write_control("host-2", {"action": "stop"})
    assert other.backend.controls() == {"host-1": {"action": "quiet", "by": "ops"}, "host-2": {"action": "stop"}}
    backend.write_control("host-1", {"action": "stop"})
    other.backend.remove_control("host-2")
    other.backend.remove_control("nobody")
    assert backend.controls() == {"host-1": {"action": "stop"}}


def test_a_closed_queues_refuses(make_queues: QueuesFactory) -> None:
    qs: Queues = make_queues()
    qs.close()
    from queuecore import Closed

    with pytest.raises(Closed):
        qs.pause("q1")
