"""The backend conformance suite: the public contract of DESIGN.md, run
against every backend through the ``make_queues`` fixture (tests/core/conftest.py).

Nothing here asserts that something happened fast; waits are bounded by
generous timeouts and only lower bounds of waits are checked.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from queuecore import (
    Closed,
    InvalidTopic,
    JsonSerializer,
    Message,
    MessageNotFound,
    MessageTooLarge,
    QueueError,
    QueueFull,
    Queues,
    SerializationError,
    Serializer,
    Task,
)

from .conftest import QueuesFactory

# The stats keys, spelled out as DESIGN.md spells them (not imported: this is the contract).
STATS_KEYS = {
    "enqueued",
    "ready",
    "delayed",
    "in_progress",
    "completed",
    "retried",
    "failed",
    "num_slabs",
    "num_active_slabs",
}
COUNTS = ("enqueued", "ready", "delayed", "in_progress", "completed", "retried", "failed")

# A generous bound for anything that must happen "soon": tests wait up to
# this long but normally return at once.
SOON = 10.0


def counts(qs: Queues, topic: str = "q1") -> dict[str, int]:
    stats = qs.stats()[topic]
    return {k: stats[k] for k in COUNTS}


def expect(qs: Queues, topic: str = "q1", ignore: tuple[str, ...] = (), **expected: int) -> None:
    """stats()[topic] has these values, the unnamed counts are 0 (but those
    in ``ignore``, checked by a test of their own), none is negative."""
    got = {k: v for k, v in counts(qs, topic).items() if k not in ignore}
    want = {k: expected.get(k, 0) for k in COUNTS if k not in ignore}
    assert got == want
    assert all(v >= 0 for v in qs.stats()[topic].values())


def ids_in(qs: Queues, topic: str = "q1", state: str | None = None) -> list[int]:
    out: list[int] = []
    after = None
    while True:
        page = qs.messages(topic, state=state, after=after, limit=3)
        if not page:
            return out
        out.extend(m.id for m in page)
        after = page[-1].id


def take_soon(qs: Queues, topic: str = "q1") -> Task:
    task = qs.take(topic, timeout=SOON)
    assert task is not None, f"no message came within {SOON} s"
    return task


def drain(qs: Queues, topic: str = "q1") -> list[Task]:
    tasks = []
    while (task := qs.take(topic, timeout=0)) is not None:
        tasks.append(task)
    return tasks


# -- put / take --------------------------------------------------------------


def test_put_returns_increasing_int_ids_per_topic(qs: Queues) -> None:
    a = [qs.put("a", i) for i in range(5)]
    b = [qs.put("b", i) for i in range(3)]
    a += [qs.put("a", i) for i in range(5, 8)]
    for ids in (a, b):
        assert all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        assert ids == sorted(set(ids))
        assert ids[0] >= 1


def test_put_many_returns_ids_in_order(qs: Queues) -> None:
    first = qs.put("q1", "x")
    ids = qs.put_many("q1", ["a", "b", "c"])
    assert len(ids) == 3 and ids == sorted(set(ids)) and ids[0] > first
    assert qs.put("q1", "y") > ids[-1]
    assert qs.put_many("q1", []) == []
    more = qs.put_many("q1", ("t1", "t2"))
    assert len(more) == 2 and more == sorted(set(more)) and more[0] > ids[-1]
    assert [t.value for t in drain(qs)] == ["x", "a", "b", "c", "y", "t1", "t2"]


def test_take_is_fifo(qs: Queues) -> None:
    ids = [qs.put("q1", f"v{i}") for i in range(10)]
    tasks = drain(qs)
    assert [t.id for t in tasks] == ids
    assert [t.value for t in tasks] == [f"v{i}" for i in range(10)]


def test_take_many_is_fifo_and_respects_limit(qs: Queues) -> None:
    ids = qs.put_many("q1", list(range(7)))
    first = qs.take_many("q1", 3, timeout=0)
    rest = qs.take_many("q1", 100, timeout=0)
    assert [t.id for t in first] == ids[:3]
    assert [t.id for t in rest] == ids[3:]
    assert [t.value for t in first + rest] == list(range(7))
    assert qs.take_many("q1", 5, timeout=0) == []


def test_take_timeout_zero_polls(qs: Queues) -> None:
    assert qs.take("q1", timeout=0) is None
    qs.put("other", 1)
    assert qs.take("q1", timeout=0) is None


def test_take_with_timeout_waits_then_returns_none(qs: Queues) -> None:
    start = time.monotonic()
    assert qs.take("q1", timeout=0.3) is None
    assert time.monotonic() - start >= 0.25
    start = time.monotonic()
    assert qs.take_many("q1", 4, timeout=0.3) == []
    assert time.monotonic() - start >= 0.25


def test_blocking_take_wakes_on_put_from_another_thread(make_queues: QueuesFactory) -> None:
    consumer, producer = make_queues(), make_queues()
    got: list[Any] = []

    def take() -> None:
        task = consumer.take("q1")  # timeout None: until a message comes
        got.append(task)

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    time.sleep(0.2)
    producer.put("q1", "wake")
    thread.join(SOON)
    assert not thread.is_alive(), "take(timeout=None) did not wake up on a put"
    assert got[0] is not None and got[0].value == "wake"
    assert got[0].complete() is True


def test_take_many_waits_only_for_the_first(make_queues: QueuesFactory) -> None:
    qs = make_queues()
    threading.Timer(0.2, lambda: qs.put("q1", "one")).start()
    tasks = qs.take_many("q1", 10, timeout=SOON)
    assert [t.value for t in tasks][:1] == ["one"]


def test_task_fields(qs: Queues) -> None:
    before = time.time()
    mid = qs.put("q1", {"uuid": "42"})
    after = time.time()
    task = take_soon(qs)
    assert (task.id, task.topic, task.value, task.attempts) == (mid, "q1", {"uuid": "42"}, 1)
    assert before - 1 <= task.enqueued_at <= after + 1


def test_attempts_count_deliveries(qs: Queues) -> None:
    qs.put("q1", "x")
    for attempt in (1, 2, 3):
        task = take_soon(qs)
        assert task.attempts == attempt
        assert task.retry() is True
    task = take_soon(qs)
    assert task.attempts == 4
    assert qs.peek("q1", task.id).attempts == 4


# -- settling a task ---------------------------------------------------------


@pytest.mark.parametrize("outcome", ["complete", "retry", "fail"])
def test_settling_returns_true_then_false(qs: Queues, outcome: str) -> None:
    qs.put("q1", "x")
    task = take_soon(qs)
    assert getattr(task, outcome)() is True
    assert task.complete() is False
    assert task.retry() is False
    assert task.fail("again") is False


def test_complete_is_never_delivered_again(qs: Queues) -> None:
    mid = qs.put("q1", "x")
    assert take_soon(qs).complete() is True
    assert qs.take("q1", timeout=0.2) is None
    assert mid not in ids_in(qs)
    expect(qs, enqueued=1, completed=1)


def test_lease_is_kept_until_the_visibility_timeout(qs: Queues) -> None:
    qs.put("q1", "x")
    task = take_soon(qs)
    assert qs.take("q1", timeout=0.3) is None
    assert task.complete() is True


def test_lost_lease_refuses_the_old_task(make_queues: QueuesFactory) -> None:
    qs = make_queues(visibility_timeout=0.3)
    mid = qs.put("q1", "x")
    old = take_soon(qs)
    new = take_soon(qs)  # the lease runs out and the message is handed out again
    assert (new.id, new.attempts, new.value) == (mid, 2, "x")
    assert old.complete() is False
    expect(qs, enqueued=1, in_progress=1, ignore=("retried",))
    assert new.complete() is True
    expect(qs, enqueued=1, completed=1, ignore=("retried",))


def test_a_lease_that_ran_out_is_not_counted_as_retried(make_queues: QueuesFactory) -> None:
    # "retried" keeps durable-queue's meaning: the number of retry() calls.
    # A redelivery after a lost lease is counted by attempts, not here.
    qs = make_queues(visibility_timeout=0.3)
    qs.put("q1", "x")
    take_soon(qs)
    again = take_soon(qs)
    assert again.attempts == 2
    expect(qs, enqueued=1, in_progress=1)
    assert again.retry() is True
    expect(qs, enqueued=1, ready=1, retried=1)


@pytest.mark.parametrize("outcome", ["retry", "fail"])
def test_lost_lease_refuses_retry_and_fail(make_queues: QueuesFactory, outcome: str) -> None:
    qs = make_queues(visibility_timeout=0.3)
    mid = qs.put("q1", "x")
    old = take_soon(qs)
    new = take_soon(qs)
    if outcome == "retry":
        assert old.retry() is False
    else:
        assert old.fail("stale") is False
    assert qs.peek("q1", mid).state == "in_progress"
    assert qs.take("q1", timeout=0) is None
    expect(qs, enqueued=1, in_progress=1, ignore=("retried",))
    assert new.complete() is True


def test_expired_lease_cannot_be_settled_before_it_is_taken_again(
    make_queues: QueuesFactory,
) -> None:
    # The lease ran out: the message belongs to the next taker, not to the
    # Task whose lease expired (DESIGN: False when "it expired").
    qs = make_queues(visibility_timeout=0.3)
    qs.put("q1", "x")
    old = take_soon(qs)
    new = take_soon(qs)
    assert old.fail("late") is False
    assert new.retry() is True
    again = take_soon(qs)
    assert again.attempts == 3
    assert new.complete() is False
    assert again.complete() is True
    expect(qs, enqueued=1, completed=1, ignore=("retried",))


def test_retry_without_delay_is_ready_again(qs: Queues) -> None:
    mid = qs.put("q1", "x")
    assert take_soon(qs).retry() is True
    expect(qs, enqueued=1, ready=1, retried=1)
    assert qs.peek("q1", mid).state == "ready"
    task = take_soon(qs)
    assert (task.id, task.value, task.attempts) == (mid, "x", 2)


def test_retry_with_delay_is_delayed_not_ready(qs: Queues) -> None:
    mid = qs.put("q1", "later")
    assert take_soon(qs).retry(delay=60) is True
    expect(qs, enqueued=1, delayed=1, retried=1)
    assert qs.take("q1", timeout=0) is None
    assert ids_in(qs, state="delayed") == [mid]
    assert ids_in(qs, state="ready") == []
    message = qs.peek("q1", mid)
    assert message.state == "delayed" and message.lease is None


def test_delayed_message_becomes_takeable_after_the_delay(qs: Queues) -> None:
    mid = qs.put("q1", "soon")
    start = time.monotonic()
    assert take_soon(qs).retry(delay=0.3) is True
    task = take_soon(qs)  # waits for the delay to pass
    assert time.monotonic() - start >= 0.25
    assert (task.id, task.value, task.attempts) == (mid, "soon", 2)
    assert task.complete() is True
    expect(qs, enqueued=1, completed=1, retried=1)


def test_retry_reason_is_kept(qs: Queues) -> None:
    mid = qs.put("q1", "x")
    assert take_soon(qs).retry(reason="flaky") is True
    task = take_soon(qs)
    assert [e["reason"] for e in qs.peek("q1", mid).errors] == ["flaky"]
    assert [e["reason"] for e in task.errors] == ["flaky"]


def test_only_the_newest_errors_are_kept(qs: Queues) -> None:
    mid = qs.put("q1", "x")
    for attempt in range(1, 13):
        assert take_soon(qs).retry(reason=f"try {attempt}")
    assert take_soon(qs).fail("last")
    errors = qs.peek("q1", mid).errors
    assert [e["reason"] for e in errors] == [f"try {i}" for i in range(4, 13)] + ["last"]
    assert [e["attempt"] for e in errors] == list(range(4, 14))


def test_fail_goes_to_the_failed_store_with_its_reason(qs: Queues) -> None:
    mid = qs.put("q1", {"k": 1})
    qs.put("q1", "next")
    task = take_soon(qs)
    assert task.fail("bad input") is True
    expect(qs, enqueued=2, ready=1, failed=1)
    assert ids_in(qs, state="failed") == [mid]
    message = qs.peek("q1", mid)
    assert message.state == "failed"
    assert message.value == {"k": 1}
    assert message.attempts == 1
    assert message.lease is None
    assert message.errors[-1]["reason"] == "bad input"
    # A failed message is never handed out again by itself.
    assert take_soon(qs).value == "next"
    assert qs.take("q1", timeout=0) is None


def test_fail_with_an_exception_keeps_its_type_and_message(qs: Queues) -> None:
    mid = qs.put("q1", "x")
    try:
        raise ValueError("no such user")
    except ValueError as exc:
        assert take_soon(qs).fail(exc) is True
    error = qs.peek("q1", mid).errors[-1]
    assert error["reason"] == "ValueError: no such user"
    assert "no such user" in error.get("traceback", "")


# -- stats and topics --------------------------------------------------------


def test_stats_keys_are_exactly_the_contract(qs: Queues) -> None:
    qs.put("q1", 1)
    stats = qs.stats()
    assert set(stats) == {"q1"}
    assert set(stats["q1"]) == STATS_KEYS
    assert all(isinstance(v, int) and v >= 0 for v in stats["q1"].values())


def test_stats_follow_each_operation(qs: Queues) -> None:
    qs.put_many("q1", list(range(6)))
    expect(qs, enqueued=6, ready=6)
    a, b, c, d, e = qs.take_many("q1", 5, timeout=0)
    expect(qs, enqueued=6, ready=1, in_progress=5)
    assert a.complete()
    expect(qs, enqueued=6, ready=1, in_progress=4, completed=1)
    assert b.retry()
    expect(qs, enqueued=6, ready=2, in_progress=3, completed=1, retried=1)
    assert c.retry(delay=60)
    expect(qs, enqueued=6, ready=2, delayed=1, in_progress=2, completed=1, retried=2)
    assert d.fail("x")
    expect(qs, enqueued=6, ready=2, delayed=1, in_progress=1, completed=1, retried=2, failed=1)
    assert qs.requeue_failed("q1") == 1
    expect(qs, enqueued=6, ready=3, delayed=1, in_progress=1, completed=1, retried=2)
    assert qs.purge("q1") == 4
    expect(qs, enqueued=6, in_progress=1, completed=1, retried=2)
    assert e.complete()
    expect(qs, enqueued=6, completed=2, retried=2)


def test_stats_are_the_same_from_another_queues_object(make_queues: QueuesFactory) -> None:
    one, two = make_queues(), make_queues()
    one.put_many("q1", [1, 2, 3])
    task = two.take("q1", timeout=SOON)
    assert task is not None
    assert one.stats() == two.stats()
    assert counts(one)["in_progress"] == 1
    assert task.complete()
    assert one.stats() == two.stats()
    expect(one, enqueued=3, ready=2, completed=1)


def test_topics_lists_every_topic_sorted(qs: Queues) -> None:
    assert qs.topics() == []
    for topic in ("zeta", "alpha", "Mid-1.x_y"):
        qs.put(topic, 1)
    assert qs.topics() == sorted(["zeta", "alpha", "Mid-1.x_y"])
    assert set(qs.stats()) == set(qs.topics())


# -- browsing ----------------------------------------------------------------


def test_messages_browse_by_state(qs: Queues) -> None:
    ids = qs.put_many("q1", ["a", "b", "c", "d", "e"])
    a, b, c, d = qs.take_many("q1", 4, timeout=0)
    assert a.complete() and b.fail("no") and c.retry(delay=60)
    assert ids_in(qs, state="ready") == [ids[4]]
    assert ids_in(qs, state="in_progress") == [ids[3]]
    assert ids_in(qs, state="delayed") == [ids[2]]
    assert ids_in(qs, state="failed") == [ids[1]]
    # None: every state but completed.
    assert ids_in(qs) == ids[1:]
    for message in qs.messages("q1"):
        assert isinstance(message, Message)
        assert message.topic == "q1"
        assert message.value == {ids[1]: "b", ids[2]: "c", ids[3]: "d", ids[4]: "e"}[message.id]
    assert {m.id: m.state for m in qs.messages("q1")} == {
        ids[1]: "failed",
        ids[2]: "delayed",
        ids[3]: "in_progress",
        ids[4]: "ready",
    }
    assert d.complete()


def test_messages_keyset_paging(qs: Queues) -> None:
    ids = qs.put_many("q1", [f"m{i}" for i in range(25)])
    pages = []
    after = None
    while page := qs.messages("q1", state="ready", after=after, limit=10):
        pages.append([m.id for m in page])
        after = page[-1].id
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [i for p in pages for i in p] == ids
    assert qs.messages("q1", after=ids[-1]) == []
    assert [m.id for m in qs.messages("q1", after=ids[9], limit=3)] == ids[10:13]
    assert [m.value for m in qs.messages("q1", limit=2)] == ["m0", "m1"]
    # A page started after an id that is gone still continues in order.
    qs.delete("q1", ids[10])
    assert [m.id for m in qs.messages("q1", after=ids[9], limit=2)] == ids[11:13]


def test_peek_a_ready_message(qs: Queues) -> None:
    before = time.time()
    mid = qs.put("q1", [1, "two"])
    after = time.time()
    message = qs.peek("q1", mid)
    assert isinstance(message, Message)
    assert (message.topic, message.id, message.value, message.state) == (
        "q1",
        mid,
        [1, "two"],
        "ready",
    )
    assert message.attempts == 0
    assert before - 1 <= message.enqueued_at <= after + 1
    assert message.lease is None
    assert tuple(message.errors) == ()


def test_peek_an_in_progress_message_shows_its_lease(make_queues: QueuesFactory) -> None:
    qs = make_queues(visibility_timeout=120)
    mid = qs.put("q1", "x")
    before = time.time()
    task = take_soon(qs)
    after = time.time()
    message = qs.peek("q1", mid)
    assert (message.state, message.attempts) == ("in_progress", 1)
    assert message.lease is not None
    assert isinstance(message.lease.owner, str) and message.lease.owner
    assert before + 120 - 1 <= message.lease.deadline <= after + 120 + 1
    assert task.complete()


def test_peek_a_completed_message_is_gone_or_completed(qs: Queues) -> None:
    mid = qs.put("q1", "x")
    assert take_soon(qs).complete()
    try:
        message = qs.peek("q1", mid)
    except MessageNotFound:
        return
    assert message.state == "completed"


def test_looking_at_or_cleaning_an_unknown_topic_does_not_create_it(
    make_queues: QueuesFactory,
) -> None:
    # An operator's typo (dq purge ordres) must not make a topic appear.
    qs = make_queues()
    qs.put("real", 1)
    assert qs.messages("ghost") == []
    with pytest.raises(MessageNotFound):
        qs.peek("ghost", 1)
    assert qs.info("ghost")["bytes"] == 0
    assert qs.requeue_failed("ghost") == 0
    assert qs.purge("ghost") == 0
    assert qs.purge("ghost", state="failed") == 0
    assert qs.topics() == ["real"]
    assert set(qs.stats()) == {"real"}


def test_unknown_ids_raise_message_not_found(qs: Queues) -> None:
    mid = qs.put("q1", "x")
    for call in (qs.peek, qs.requeue, qs.delete):
        with pytest.raises(MessageNotFound) as info:
            call("q1", mid + 1000)
        assert info.value.id == mid + 1000 and info.value.topic == "q1"
        with pytest.raises(MessageNotFound):
            call("nosuchtopic", 1)
    assert qs.peek("q1", mid).value == "x"


# -- operating ---------------------------------------------------------------


def test_requeue_a_failed_message(qs: Queues) -> None:
    mid = qs.put("q1", "x")
    assert take_soon(qs).fail("why")
    assert qs.requeue("q1", mid) == mid
    expect(qs, enqueued=1, ready=1)
    message = qs.peek("q1", mid)
    assert message.state == "ready" and message.errors[-1]["reason"] == "why"
    task = take_soon(qs)
    assert (task.id, task.attempts) == (mid, 2)


def test_requeue_a_delayed_message(qs: Queues) -> None:
    mid = qs.put("q1", "x")
    assert take_soon(qs).retry(delay=60)
    qs.requeue("q1", mid)
    expect(qs, enqueued=1, ready=1, retried=1)
    assert take_soon(qs).id == mid


def test_requeue_an_in_progress_message(qs: Queues) -> None:
    mid = qs.put("q1", "x")
    old = take_soon(qs)
    qs.requeue("q1", mid)
    expect(qs, enqueued=1, ready=1)
    new = take_soon(qs)
    assert (new.id, new.attempts) == (mid, 2)
    assert old.complete() is False
    assert new.complete() is True
    expect(qs, enqueued=1, completed=1)


def test_requeue_a_ready_message_changes_nothing(qs: Queues) -> None:
    mid = qs.put("q1", "x")
    qs.requeue("q1", mid)
    expect(qs, enqueued=1, ready=1)
    assert take_soon(qs).id == mid
    assert qs.take("q1", timeout=0) is None


def test_requeue_failed_returns_the_count(qs: Queues) -> None:
    assert qs.requeue_failed("q1") == 0
    ids = qs.put_many("q1", list(range(5)))
    tasks = qs.take_many("q1", 5, timeout=0)
    for task in tasks[:3]:
        assert task.fail("no")
    assert tasks[3].complete()
    expect(qs, enqueued=5, in_progress=1, completed=1, failed=3)
    assert qs.requeue_failed("q1") == 3
    expect(qs, enqueued=5, ready=3, in_progress=1, completed=1)
    assert qs.requeue_failed("q1") == 0
    assert sorted(t.id for t in drain(qs)) == ids[:3]
    assert tasks[4].complete()


def test_delete_in_each_state(qs: Queues) -> None:
    ready, failed, delayed, taken = qs.put_many("q1", ["r", "f", "d", "t"])
    t_failed, t_delayed, t_taken = qs.take_many("q1", 3, timeout=0)
    qs.put("q1", "keep")
    assert t_failed.fail("x") and t_delayed.retry(delay=60)
    for mid in (ready, failed, delayed, taken):
        qs.delete("q1", mid)
        with pytest.raises(MessageNotFound):
            qs.peek("q1", mid)
        with pytest.raises(MessageNotFound):
            qs.delete("q1", mid)
    stats = counts(qs)
    assert (stats["ready"], stats["delayed"], stats["in_progress"], stats["failed"]) == (1, 0, 0, 0)
    assert t_taken.complete() is False
    assert [t.value for t in drain(qs)] == ["keep"]
    assert all(v >= 0 for v in qs.stats()["q1"].values())


def test_purge_removes_ready_and_delayed_and_leaves_in_progress(qs: Queues) -> None:
    qs.put_many("q1", list(range(6)))
    held, delayed, failed = qs.take_many("q1", 3, timeout=0)
    assert delayed.retry(delay=60) and failed.fail("no")
    assert qs.purge("q1") == 4  # 3 ready + 1 delayed
    expect(qs, enqueued=6, in_progress=1, retried=1, failed=1)
    assert "q1" in qs.topics()
    assert qs.take("q1", timeout=0) is None
    assert held.complete() is True
    assert qs.purge("q1") == 0
    assert qs.purge("q1", state="failed") == 1
    expect(qs, enqueued=6, completed=1, retried=1)
    assert "q1" in qs.topics() and "q1" in qs.stats()
    # The topic goes on working.
    mid = qs.put("q1", "after")
    assert take_soon(qs).id == mid


def test_purge_one_state(qs: Queues) -> None:
    qs.put_many("q1", list(range(4)))
    delayed = take_soon(qs)
    assert delayed.retry(delay=60)
    assert qs.purge("q1", state="delayed") == 1
    expect(qs, enqueued=4, ready=3, retried=1)
    assert qs.purge("q1", state="ready") == 3
    expect(qs, enqueued=4, retried=1)


# -- limits ------------------------------------------------------------------


def test_max_queue_size_put_timeout_zero_fails_at_once(make_queues: QueuesFactory) -> None:
    qs = make_queues(max_queue_size=2)
    qs.put("q1", 1)
    qs.put("q1", 2)
    with pytest.raises(QueueFull) as info:
        qs.put("q1", 3, timeout=0)
    assert (info.value.topic, info.value.limit) == ("q1", 2)
    with pytest.raises(QueueFull):
        qs.put_many("q1", [3], timeout=0)
    expect(qs, enqueued=2, ready=2)
    # Other topics have their own room.
    qs.put("q2", 1, timeout=0)


def test_max_queue_size_put_waits_for_its_timeout(make_queues: QueuesFactory) -> None:
    qs = make_queues(max_queue_size=1)
    qs.put("q1", 1)
    start = time.monotonic()
    with pytest.raises(QueueFull):
        qs.put("q1", 2, timeout=0.3)
    assert time.monotonic() - start >= 0.25


def test_max_queue_size_counts_in_progress_and_delayed_not_failed(
    make_queues: QueuesFactory,
) -> None:
    qs = make_queues(max_queue_size=2)
    qs.put_many("q1", [1, 2])
    one, two = qs.take_many("q1", 2, timeout=0)
    with pytest.raises(QueueFull):
        qs.put("q1", 3, timeout=0)  # in progress counts
    assert one.retry(delay=60)
    with pytest.raises(QueueFull):
        qs.put("q1", 3, timeout=0)  # delayed counts
    assert two.fail("no")
    qs.put("q1", 3, timeout=0)  # failed does not


def test_max_queue_size_put_many_is_all_or_none(make_queues: QueuesFactory) -> None:
    qs = make_queues(max_queue_size=3)
    qs.put_many("q1", ["a", "b"])
    with pytest.raises(QueueFull):
        qs.put_many("q1", ["c", "d"], timeout=0)
    expect(qs, enqueued=2, ready=2)
    assert [t.value for t in drain(qs)] == ["a", "b"]


def test_a_put_that_failed_never_reappears(make_queues: QueuesFactory) -> None:
    qs = make_queues(max_queue_size=1)
    qs.put("q1", "in")
    for timeout in (0, 0.2):
        with pytest.raises(QueueFull):
            qs.put("q1", f"lost-{timeout}", timeout=timeout)
    assert take_soon(qs).complete()  # room now
    time.sleep(0.2)
    assert qs.take("q1", timeout=0.2) is None
    assert ids_in(qs) == []
    expect(qs, enqueued=1, completed=1)
    qs.put("q1", "later")
    assert [t.value for t in drain(qs)] == ["later"]


@pytest.mark.parametrize("put_timeout", [SOON, None], ids=["timeout", "no-timeout"])
def test_room_made_by_a_complete_lets_a_waiting_put_in(
    make_queues: QueuesFactory, put_timeout: float | None
) -> None:
    qs, other = make_queues(max_queue_size=1), make_queues(max_queue_size=1)
    qs.put("q1", "first")
    result: list[Any] = []

    def put() -> None:
        try:
            result.append(other.put("q1", "second", timeout=put_timeout))
        except QueueError as exc:  # reported below
            result.append(exc)

    thread = threading.Thread(target=put, daemon=True)
    thread.start()
    time.sleep(0.2)  # let the put start waiting (if it has not, it simply finds room)
    task = take_soon(qs)
    assert thread.is_alive() or result and isinstance(result[0], int)
    assert task.complete()
    thread.join(SOON + 5)
    assert not thread.is_alive()
    assert len(result) == 1 and isinstance(result[0], int), result
    assert take_soon(qs).value == "second"
    expect(qs, enqueued=2, in_progress=1, completed=1)


def test_max_message_size(make_queues: QueuesFactory) -> None:
    qs = make_queues(max_message_size=100, serializer="raw")
    qs.put("q1", b"x" * 100)
    with pytest.raises(MessageTooLarge) as info:
        qs.put("q1", b"x" * 101)
    assert (info.value.size, info.value.limit) == (101, 100)
    with pytest.raises(MessageTooLarge):
        qs.put_many("q1", [b"ok", b"y" * 500])
    expect(qs, enqueued=1, ready=1)
    assert [t.value for t in drain(qs)] == [b"x" * 100]


# -- serializers -------------------------------------------------------------

MSGPACK_VALUES: list[Any] = [
    None,
    True,
    0,
    -(2**63),
    2**64 - 1,
    1.5,
    "",
    "héllo ✓",
    b"\x00\xff",
    [],
    [1, [2, [3]]],
    {"uuid": "42", "n": {"a": [1, 2.5, None, b"bin"]}},
    {1: "int key"},
]


def test_msgpack_is_the_default_and_round_trips(qs: Queues) -> None:
    ids = [qs.put("q1", v) for v in MSGPACK_VALUES]
    assert [qs.peek("q1", i).value for i in ids] == MSGPACK_VALUES
    assert [t.value for t in drain(qs)] == MSGPACK_VALUES


def test_json_serializer(make_queues: QueuesFactory) -> None:
    qs = make_queues(serializer="json")
    values = [{"a": [1, "x", None, True, 2.5]}, "é", 3, [{"b": {}}]]
    qs.put_many("q1", values)
    qs.put("q1", ("tuple", 1))
    assert [t.value for t in drain(qs)] == values + [["tuple", 1]]
    with pytest.raises(SerializationError):
        qs.put("q1", {1, 2})
    with pytest.raises(SerializationError):
        qs.put("q1", b"bytes")
    expect(qs, enqueued=5, in_progress=5)


def test_raw_serializer(make_queues: QueuesFactory) -> None:
    qs = make_queues(serializer="raw")
    payloads = [b"", b"\x00\x01\xff" * 100, bytearray(b"ba")]
    qs.put_many("q1", payloads)
    assert [t.value for t in drain(qs)] == [b"", b"\x00\x01\xff" * 100, b"ba"]
    with pytest.raises(SerializationError):
        qs.put("q1", "a str")
    expect(qs, enqueued=3, in_progress=3)


def test_a_serializer_instance(make_queues: QueuesFactory) -> None:
    class Upper(Serializer):
        name = "upper"

        def dumps(self, value: Any) -> bytes:
            return str(value).upper().encode()

        def loads(self, data: bytes) -> Any:
            return data.decode()

    qs = make_queues(serializer=Upper())
    qs.put("q1", "abc")
    assert take_soon(qs).value == "ABC"
    assert isinstance(make_queues(serializer=JsonSerializer()).serializer, JsonSerializer)


def test_a_value_msgpack_cannot_encode_stores_nothing(qs: Queues) -> None:
    with pytest.raises(SerializationError):
        qs.put("q1", object())
    with pytest.raises(SerializationError):
        qs.put_many("q1", [1, object()])
    assert "q1" not in qs.topics() or counts(qs)["enqueued"] == 0
    # A failure half-way through a nested value leaves nothing behind in the
    # (reused) encoder: the next value is encoded whole and alone.
    with pytest.raises(SerializationError):
        qs.put("q1", {"a": [1, 2, {"deep": object()}]})
    qs.put("q1", {"b": 2})
    assert [t.value for t in drain(qs)] == [{"b": 2}]


def test_threads_encode_at_once(qs: Queues) -> None:
    values = [{"t": t, "i": i, "pad": "x" * (i % 50)} for t in range(4) for i in range(300)]

    def put(t: int) -> None:
        for v in values[t * 300 : (t + 1) * 300]:
            qs.put("q1", v)

    threads = [threading.Thread(target=put, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    got = [t.value for t in drain(qs)]
    assert sorted(got, key=lambda v: (v["t"], v["i"])) == values


# -- names, closing, checking ------------------------------------------------

INVALID_TOPICS: list[Any] = [
    "../x",
    "..",
    ".",
    ".hidden",
    "",
    "a" * 101,
    "a/b",
    "a\\b",
    "a b",
    "tab\t",
    "new\nline",
    "nul\x00",
    "é",
    None,
    1,
    b"bytes",
]


def topic_calls(qs: Queues) -> dict[str, Any]:
    """Every public method that takes a topic, called with ``topic``."""
    return {
        "put": lambda t: qs.put(t, 1, timeout=0),
        "put_many": lambda t: qs.put_many(t, [1], timeout=0),
        "take": lambda t: qs.take(t, timeout=0),
        "take_blocking": lambda t: qs.take(t),
        "take_many": lambda t: qs.take_many(t, 5, timeout=0),
        "messages": lambda t: qs.messages(t),
        "peek": lambda t: qs.peek(t, 1),
        "requeue": lambda t: qs.requeue(t, 1),
        "requeue_failed": lambda t: qs.requeue_failed(t),
        "delete": lambda t: qs.delete(t, 1),
        "purge": lambda t: qs.purge(t),
        "purge_failed": lambda t: qs.purge(t, state="failed"),
    }


@pytest.mark.parametrize("topic", INVALID_TOPICS, ids=repr)
def test_invalid_topics_are_refused_by_every_method(qs: Queues, topic: Any) -> None:
    for name, call in topic_calls(qs).items():
        with pytest.raises(InvalidTopic) as info:
            call(topic)
        assert info.value.topic == topic, name
    assert qs.topics() == []


def test_valid_topic_edges(qs: Queues) -> None:
    for topic in ("a", "a" * 100, "A-Z_a.z-0.9", "x..y", "_", "-"):
        mid = qs.put(topic, topic)
        assert qs.peek(topic, mid).value == topic
    assert len(qs.topics()) == 6


def test_a_closed_queues_raises_closed(qs: Queues) -> None:
    qs.put("q1", 1)
    task = take_soon(qs)
    qs.close()
    assert qs.closed
    qs.close()  # idempotent
    calls = {
        **topic_calls(qs),
        "topics": lambda t: qs.topics(),
        "stats": lambda t: qs.stats(),
        "check": lambda t: qs.check(),
        "fsync": lambda t: qs.fsync(),
    }
    for name, call in calls.items():
        with pytest.raises(Closed):
            call("q1")
            pytest.fail(f"{name} did not raise Closed")
    with pytest.raises(Closed):
        task.complete()


def test_put_many_of_nothing_on_a_closed_queues_raises_closed(qs: Queues) -> None:
    qs.close()
    with pytest.raises(Closed):
        qs.put_many("q1", [])


def test_put_many_of_nothing_checks_the_topic(qs: Queues) -> None:
    with pytest.raises(InvalidTopic):
        qs.put_many("../x", [])


def test_context_manager_closes(make_queues: QueuesFactory) -> None:
    with make_queues() as qs:
        assert isinstance(qs, Queues)
        mid = qs.put("q1", "kept")
    assert qs.closed
    with pytest.raises(Closed):
        qs.put("q1", 1)
    reopened = make_queues()
    assert reopened.peek("q1", mid).value == "kept"


def test_context_manager_closes_on_error(make_queues: QueuesFactory) -> None:
    with pytest.raises(RuntimeError), make_queues() as qs:
        raise RuntimeError("boom")
    assert qs.closed


def test_check_returns_ok(qs: Queues) -> None:
    qs.put_many("q1", [1, 2, 3])
    assert take_soon(qs).fail("x")
    report = qs.check()
    assert isinstance(report, dict) and report["ok"] is True
    assert qs.check(fix=True)["ok"] is True
    qs.fsync()


def test_threads_taking_from_one_queues_at_once_keep_their_leases(
    make_queues: QueuesFactory,
) -> None:
    # The first takes of a fresh Queues race each other in several threads;
    # every lease they get must be settleable (no lease lost to a race).
    refused = []
    for _ in range(25):
        qs = make_queues()
        qs.put_many("q1", list(range(4)))
        barrier = threading.Barrier(4)

        def work(qs: Queues = qs, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            task = qs.take("q1", timeout=SOON)
            if task is None or not task.complete():
                refused.append(task)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(SOON + 5)
        qs.close()
    assert refused == []


def test_two_queues_objects_share_messages(make_queues: QueuesFactory) -> None:
    one, two = make_queues(), make_queues()
    ids = one.put_many("q1", ["a", "b"])
    ids.append(two.put("q1", "c"))
    assert ids == sorted(set(ids))
    first = two.take("q1", timeout=SOON)
    second = one.take("q1", timeout=SOON)
    assert first is not None and second is not None
    assert (first.value, second.value) == ("a", "b")
    assert first.complete() and second.fail("x")
    assert one.peek("q1", ids[1]).state == "failed"
    assert two.requeue_failed("q1") == 1
    assert sorted(t.value for t in drain(one)) == ["b", "c"]
    assert two.take("q1", timeout=0) is None
