"""The memory backend's lease owners: each ``Queues`` object on a
``memory://name`` is an owner of its own, as each process is on slab files,
so one process can play a holder that goes away: ``close()`` gives back the
leases the object holds (ready at once, counted as ready), and only its own.
Extending a lease, and what an owner may not do with another's.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from queuecore import Closed, Queues
from queuecore.memory import MemoryBackend


@pytest.fixture
def location() -> Iterator[str]:
    name = f"owners-{uuid.uuid4().hex}"
    yield f"memory://{name}"
    MemoryBackend.reset(name)


def _gauges(qs: Queues) -> tuple[int, int]:
    st = qs.stats()["q"]
    return st["ready"], st["in_progress"]


def test_two_queues_on_one_memory_location_are_two_owners(location: str) -> None:
    a, b = Queues(location), Queues(location)
    a.put_many("q", [1, 2])
    ta, tb = a.take("q", timeout=0), b.take("q", timeout=0)
    assert ta is not None and tb is not None
    la, lb = a.peek("q", ta.id).lease, a.peek("q", tb.id).lease
    assert la is not None and lb is not None and la.owner != lb.owner
    # A token is no use to another owner: the lease stays as it was.
    assert b.backend.extend("q", ta._token, 600) is False  # type: ignore[attr-defined]
    assert b.backend.settle("q", ta._token, "complete") is False  # type: ignore[attr-defined]
    assert a.peek("q", ta.id).lease == la
    assert ta.complete() and tb.complete()
    a.close()
    b.close()


def test_close_gives_back_the_leases_it_holds_and_only_those(location: str) -> None:
    holder, other = Queues(location), Queues(location)
    holder.put_many("q", list(range(6)))
    held = holder.take_many("q", 5, timeout=0)
    mine = other.take("q", timeout=0)
    assert len(held) == 5 and mine is not None
    assert _gauges(other) == (0, 6)
    holder.close()
    assert _gauges(other) == (5, 1)  # counted as ready at once
    assert [m.id for m in other.messages("q", state="in_progress")] == [mine.id]
    with pytest.raises(Closed):
        held[0].complete()
    again = other.take_many("q", 5, timeout=0)
    assert sorted(t.id for t in again) == sorted(t.id for t in held)
    assert {t.attempts for t in again} == {2}
    assert other.complete_many([*again, mine]) == 6
    assert other.stats()["q"]["completed"] == 6
    other.close()


def test_a_waiting_take_gets_the_leases_a_closing_holder_gives_back(location: str) -> None:
    holder, other = Queues(location), Queues(location)
    holder.put("q", "x")
    assert holder.take("q", timeout=0) is not None
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(other.take("q", timeout=10)))
    waiter.start()
    time.sleep(0.1)
    started = time.monotonic()
    holder.close()
    waiter.join(timeout=10)
    assert time.monotonic() - started < 1.0
    assert len(got) == 1 and got[0] is not None
    other.close()


def test_extend_keeps_a_lease_past_its_first_deadline(location: str) -> None:
    holder = Queues(location, visibility_timeout=0.3)
    other = Queues(location, visibility_timeout=60)
    holder.put("q", "x")
    task = holder.take("q", timeout=0)
    assert task is not None and task.extend(5)
    lease = other.peek("q", task.id).lease
    assert lease is not None and lease.deadline > time.time() + 4
    assert other.take("q", timeout=0.5) is None  # past the first deadline
    assert task.complete()
    holder.close()
    other.close()


def test_an_earlier_deadline_wakes_a_waiting_take(location: str) -> None:
    holder = Queues(location, visibility_timeout=60)
    other = Queues(location, visibility_timeout=60)
    holder.put("q", "x")
    task = holder.take("q", timeout=0)
    assert task is not None
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(other.take("q", timeout=10)))
    waiter.start()
    time.sleep(0.1)  # it waits for the 60 s lease to end
    started = time.monotonic()
    assert task.extend(0.2)
    waiter.join(timeout=10)
    assert 0.1 < time.monotonic() - started < 1.0
    assert len(got) == 1 and got[0] is not None
    assert task.extend() is False and task.complete() is False
    holder.close()
    other.close()


def test_an_extend_after_the_deadline_passed_is_false_and_hands_the_message_over(
    location: str,
) -> None:
    qs = Queues(location, visibility_timeout=0.2)
    qs.put("q", "x")
    task = qs.take("q", timeout=0)
    assert task is not None
    time.sleep(0.3)
    assert task.extend(60) is False
    assert _gauges(qs) == (1, 0)
    again = qs.take("q", timeout=0)
    assert again is not None and again.attempts == 2
    assert task.extend() is False and again.extend() and again.complete()
    qs.close()
