"""A Hypothesis stateful test: the queue against a plain Python model.

Every step is checked against a model of one topic (each message's value and
state, the totals enqueued / completed / retried). After every step the
stats, the ids ``messages(state=...)`` lists and the stored values must match
the model. Runs against memory and slab; "reopen" closes the Queues and opens
a new one on the same location (for memory: the same name).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from queuecore import Closed, MessageNotFound, Queues, Task
from queuecore.memory import MemoryBackend

from .conftest import HAS_SLAB, NO_SLAB

TOPIC = "model"
OPTIONS: dict[str, Any] = {"fsync_put": False, "slab_size": 4096}
STATES = ("ready", "delayed", "in_progress", "failed")

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=40),
    st.binary(min_size=1000, max_size=3000),  # a few per slab: slabs fill and get deleted
    st.lists(st.integers(min_value=-5, max_value=5), max_size=4),
    st.dictionaries(st.text(max_size=5), st.integers(min_value=0, max_value=9), max_size=3),
)
picks = st.integers(min_value=0, max_value=10_000)


class QueueModel(RuleBasedStateMachine):
    backend = "memory"

    def __init__(self) -> None:
        super().__init__()
        if self.backend == "memory":
            self.name = f"model-{uuid.uuid4().hex}"
            self.location = f"memory://{self.name}"
            self.tmp = ""
        else:
            self.tmp = tempfile.mkdtemp(prefix="dq-model-")
            self.location = f"{self.tmp}/queues"
        self.qs = Queues(self.location, **OPTIONS)
        self.value: dict[int, Any] = {}  # every message not completed or removed
        self.state: dict[int, str] = {}
        self.fresh: set[int] = set()  # never delivered: these must come out in id order
        self.held: dict[int, Task] = {}  # the live lease of each in-progress message
        self.stale: list[Task] = []  # tasks whose lease was taken from them
        self.enqueued = self.completed = self.retried = 0
        # Leases of a closed Queues may be reclaimed as dead before "reopen"
        # requeues them; whether that counts in "retried" is tested in the
        # conformance suite, so here it may add up to this many.
        self.reclaims = 0
        self.last_id = 0

    def teardown(self) -> None:
        self.qs.close()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            MemoryBackend.reset(self.name)

    # -- helpers ---------------------------------------------------------------
    def ids(self, state: str) -> list[int]:
        return sorted(i for i, s in self.state.items() if s == state)

    def forget(self, mid: int) -> None:
        del self.value[mid], self.state[mid]
        self.fresh.discard(mid)
        task = self.held.pop(mid, None)
        if task is not None:
            self.stale.append(task)

    def make_ready(self, mid: int) -> None:
        self.state[mid] = "ready"
        self.fresh.discard(mid)
        task = self.held.pop(mid, None)
        if task is not None:
            self.stale.append(task)

    def added(self, ids: list[int], new_values: list[Any]) -> None:
        assert len(ids) == len(new_values)
        assert ids == sorted(set(ids)) and (not ids or ids[0] > self.last_id)
        for mid, value in zip(ids, new_values, strict=True):
            self.value[mid], self.state[mid] = value, "ready"
            self.fresh.add(mid)
        self.last_id = ids[-1] if ids else self.last_id
        self.enqueued += len(ids)

    def took(self, task: Task) -> None:
        mid = task.id
        assert self.state.get(mid) == "ready", (mid, self.state.get(mid))
        if mid in self.fresh:
            assert mid == min(i for i in self.fresh if self.state[i] == "ready"), "not FIFO"
            assert task.attempts == 1
        assert task.value == self.value[mid]
        assert task.topic == TOPIC
        self.state[mid] = "in_progress"
        self.fresh.discard(mid)
        self.held[mid] = task

    def pick_held(self, i: int) -> int:
        return sorted(self.held)[i % len(self.held)]

    def pick_id(self, i: int) -> int:
        return sorted(self.value)[i % len(self.value)]

    # -- rules -----------------------------------------------------------------
    @rule(value=values)
    def put(self, value: Any) -> None:
        self.added([self.qs.put(TOPIC, value)], [value])

    @rule(new_values=st.lists(values, max_size=5))
    def put_many(self, new_values: list[Any]) -> None:
        self.added(self.qs.put_many(TOPIC, new_values), new_values)

    @rule()
    def take(self) -> None:
        task = self.qs.take(TOPIC, timeout=0)
        if task is None:
            assert not self.ids("ready")
        else:
            self.took(task)

    @rule(limit=st.integers(min_value=1, max_value=4))
    def take_many(self, limit: int) -> None:
        ready = len(self.ids("ready"))
        tasks = self.qs.take_many(TOPIC, limit, timeout=0)
        assert len(tasks) == min(limit, ready)
        for task in tasks:
            self.took(task)

    @precondition(lambda self: self.held)
    @rule(i=picks)
    def complete(self, i: int) -> None:
        mid = self.pick_held(i)
        assert self.held.pop(mid).complete() is True
        del self.value[mid], self.state[mid]
        self.completed += 1

    @precondition(lambda self: self.held)
    @rule(i=picks)
    def retry(self, i: int) -> None:
        mid = self.pick_held(i)
        assert self.held.pop(mid).retry() is True
        self.state[mid] = "ready"
        self.retried += 1

    @precondition(lambda self: self.held)
    @rule(i=picks)
    def retry_later(self, i: int) -> None:
        # Long enough never to come due during the test: it stays delayed.
        mid = self.pick_held(i)
        assert self.held.pop(mid).retry(delay=600) is True
        self.state[mid] = "delayed"
        self.retried += 1

    @precondition(lambda self: self.held)
    @rule(i=picks, reason=st.text(max_size=10))
    def fail(self, i: int, reason: str) -> None:
        mid = self.pick_held(i)
        assert self.held.pop(mid).fail(reason) is True
        self.state[mid] = "failed"
        assert self.qs.peek(TOPIC, mid).errors[-1]["reason"] == reason

    @precondition(lambda self: self.stale)
    @rule(i=picks, outcome=st.sampled_from(["complete", "retry", "fail"]))
    def stale_task_is_refused(self, i: int, outcome: str) -> None:
        task = self.stale.pop(i % len(self.stale))
        assert getattr(task, outcome)() is False

    @precondition(lambda self: self.value)
    @rule(i=picks)
    def requeue(self, i: int) -> None:
        mid = self.pick_id(i)
        assert self.qs.requeue(TOPIC, mid) == mid
        if self.state[mid] != "ready":
            self.make_ready(mid)

    @rule(offset=st.integers(min_value=1, max_value=5))
    def requeue_unknown(self, offset: int) -> None:
        with pytest.raises(MessageNotFound):
            self.qs.requeue(TOPIC, self.last_id + offset)

    @rule()
    def requeue_failed(self) -> None:
        failed = self.ids("failed")
        assert self.qs.requeue_failed(TOPIC) == len(failed)
        for mid in failed:
            self.make_ready(mid)

    @rule(state=st.sampled_from([None, "failed", "ready", "delayed"]))
    def purge(self, state: str | None) -> None:
        gone = [
            i for i, s in self.state.items() if s in ((state,) if state else ("ready", "delayed"))
        ]
        assert self.qs.purge(TOPIC, state=state) == len(gone)
        for mid in gone:
            self.forget(mid)

    @precondition(lambda self: self.value)
    @rule(i=picks)
    def delete(self, i: int) -> None:
        mid = self.pick_id(i)
        self.qs.delete(TOPIC, mid)
        self.forget(mid)
        with pytest.raises(MessageNotFound):
            self.qs.delete(TOPIC, mid)

    @rule()
    def reopen(self) -> None:
        old = self.qs
        old.close()
        for task in list(self.held.values())[:1] + self.stale[:1]:
            with pytest.raises(Closed):
                task.complete()
        self.qs = Queues(self.location, **OPTIONS)
        # The closed Queues' leases cannot be settled any more: give them back.
        for mid in sorted(self.held):
            self.qs.requeue(TOPIC, mid)
            self.state[mid] = "ready"
            self.reclaims += 1
        self.held.clear()
        self.stale.clear()

    # -- invariants --------------------------------------------------------------
    @invariant()
    def stats_match(self) -> None:
        stats = self.qs.stats()
        if not self.enqueued:
            assert stats.get(TOPIC, {}).get("enqueued", 0) == 0
            return
        got = stats[TOPIC]
        assert all(v >= 0 for v in got.values()), got
        want = {s: len(self.ids(s)) for s in STATES}
        want.update(enqueued=self.enqueued, completed=self.completed)
        assert {k: got[k] for k in want} == want
        assert self.retried <= got["retried"] <= self.retried + self.reclaims

    @invariant()
    def messages_match(self) -> None:
        if not self.enqueued:
            return
        for state in STATES:
            listed, after = [], None
            while page := self.qs.messages(TOPIC, state=state, after=after, limit=7):
                listed.extend(page)
                after = page[-1].id
            assert [m.id for m in listed] == self.ids(state), state
            assert all(m.state == state for m in listed)
        everything = self.qs.messages(TOPIC, limit=10_000)
        assert [m.id for m in everything] == sorted(self.value)
        for message in everything:
            assert message.value == self.value[message.id], message.id


MODEL_SETTINGS = {
    "stateful_step_count": 30,
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


class MemoryModel(QueueModel):
    backend = "memory"


class SlabModel(QueueModel):
    backend = "slab"


MemoryModel.TestCase.settings = settings(max_examples=150, **MODEL_SETTINGS)
SlabModel.TestCase.settings = settings(max_examples=120, **MODEL_SETTINGS)

TestMemoryModel = MemoryModel.TestCase
TestSlabModel = pytest.mark.skipif(not HAS_SLAB, reason=NO_SLAB)(SlabModel.TestCase)
