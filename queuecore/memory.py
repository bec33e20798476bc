"""The memory backend: every primitive of the contract, in one process's memory.

For tests and examples. Nothing survives the process; several ``Queues``
objects in one process that name the same ``memory://name`` share it. Each
is an owner of its own, as each process is on slab files: its ``close()``
gives back the leases it holds (ready at once), as a holder that exits or
dies does there, so one process can play a holder that goes away.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from queuecore import identity
from queuecore.backend import (
    LEASE_EXPIRED,
    OWNER_CLOSED,
    Backend,
    Delivery,
    Lease,
    Record,
    lost_lease,
)
from queuecore.defaults import DEFAULTS, MAX_ERRORS_KEPT
from queuecore.errors import MessageNotFound, QueueFull


@dataclass
class _Entry:
    id: int
    payload: bytes
    enqueued_at: float
    attempts: int = 0
    state: str = "ready"
    errors: tuple[dict[str, Any], ...] = ()
    not_before: float | None = None
    lease: Lease | None = None
    token: int = 0
    origin: dict[str, Any] | None = None
    ready_at: float | None = None  # None: since its put


@dataclass
class _Topic:
    next_id: int = 1
    entries: dict[int, _Entry] = field(default_factory=dict)
    ready: OrderedDict[int, None] = field(default_factory=OrderedDict)
    counters: dict[str, int] = field(
        default_factory=lambda: {"enqueued": 0, "completed": 0, "retried": 0}
    )

    def count(self, state: str) -> int:
        return sum(1 for e in self.entries.values() if e.state == state)


class _Store:
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.topics: dict[str, _Topic] = {}
        self.heartbeats: dict[str, dict[str, Any]] = {}
        self.paused: set[str] = set()
        self.controls: dict[str, dict[str, Any]] = {}


_stores: dict[str, _Store] = {}
_stores_lock = threading.Lock()
_tokens = itertools.count(1)
_owners = itertools.count(1)  # one owner per MemoryBackend object


class MemoryBackend(Backend):
    name = "memory"

    def __init__(self, name: str = "", **options: Any) -> None:
        opts = {**DEFAULTS, **options}
        self.max_queue_size: int | None = opts["max_queue_size"]
        self.visibility_timeout = float(opts["visibility_timeout"])
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{next(_owners)}"
        with _stores_lock:
            self._store = _stores.setdefault(name, _Store())
        self._cond = self._store.lock

    @classmethod
    def reset(cls, name: str = "") -> None:
        """Forget everything stored under ``memory://name``."""
        with _stores_lock:
            _stores.pop(name, None)

    # -- helpers (called with the condition held) ---------------------------
    def _topic(self, topic: str) -> _Topic:
        t = self._store.topics.get(topic)
        if t is None:
            t = self._store.topics[topic] = _Topic()
        return t

    def _size(self, t: _Topic) -> int:
        return sum(1 for e in t.entries.values() if e.state in ("ready", "delayed", "in_progress"))

    def _make_ready(self, t: _Topic, e: _Entry, since: float | None = None) -> None:
        e.ready_at = time.time() if since is None else since
        e.state, e.lease, e.not_before = "ready", None, None
        t.ready[e.id] = None
        t.ready.move_to_end(e.id)

    def _take_back(self, t: _Topic, e: _Entry, reason: str) -> None:
        """A lease ended unsettled: ready again, the loss kept in its history."""
        now = time.time()
        # Every owner of a memory:// store is a thread of this process.
        lost = lost_lease(e.attempts, reason, identity.label(identity.current()), now)
        e.errors = (e.errors + (lost,))[-MAX_ERRORS_KEPT:]
        self._make_ready(t, e, now)

    def _housekeep(self, t: _Topic) -> float | None:
        """Promote due delayed messages and reclaim expired leases; returns the
        next time something becomes due (None: nothing pending)."""
        now = time.time()
        nxt: float | None = None
        due = sorted((e.not_before or 0, e.id) for e in t.entries.values() if e.state == "delayed")
        for when, mid in due:
            if when <= now:
                self._make_ready(t, t.entries[mid], when)
            else:
                nxt = when if nxt is None else min(nxt, when)
                break
        for e in t.entries.values():
            if e.state == "in_progress" and e.lease is not None:
                if e.lease.deadline <= now:
                    self._take_back(t, e, LEASE_EXPIRED)
                else:
                    nxt = e.lease.deadline if nxt is None else min(nxt, e.lease.deadline)
        return nxt

    def _holds(self, e: _Entry, token: int) -> bool:
        """Whether ``e`` is leased to this object under ``token``."""
        return e.state == "in_progress" and e.token == token and (
            e.lease is None or e.lease.owner == self.owner
        )

    def _record(self, e: _Entry) -> Record:
        return Record(
            id=e.id,
            payload=e.payload,
            state=e.state,
            attempts=e.attempts,
            enqueued_at=e.enqueued_at,
            lease=e.lease,
            # Copies: what a caller does with a Message must not change the store.
            errors=tuple(dict(x) for x in e.errors),
            not_before=e.not_before,
            origin=dict(e.origin) if e.origin else None,
        )

    def _get(self, topic: str, id: int) -> _Entry:
        t = self._store.topics.get(topic)
        e = t.entries.get(id) if t else None
        if e is None:
            raise MessageNotFound(topic, id)
        return e

    # -- the contract --------------------------------------------------------
    def put(self, topic: str, payloads: list[bytes], timeout: float | None) -> list[int]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            t = self._topic(topic)
            while self.max_queue_size is not None and self._size(t) + len(payloads) > self.max_queue_size:
                if len(payloads) > self.max_queue_size:
                    raise QueueFull(topic, self.max_queue_size)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise QueueFull(topic, self.max_queue_size)
                self._cond.wait(left)
            now = time.time()
            origin = identity.current()  # _record hands out copies
            ids = []
            for payload in payloads:
                e = _Entry(id=t.next_id, payload=bytes(payload), enqueued_at=now, origin=origin)
                t.next_id += 1
                t.entries[e.id] = e
                t.ready[e.id] = None
                ids.append(e.id)
            t.counters["enqueued"] += len(payloads)
            self._cond.notify_all()
            return ids

    def restore(self, topic: str, records: list[Record]) -> list[int]:
        ids: list[int] = []
        now = time.time()
        with self._cond:
            t = self._topic(topic)
            for r in records:
                e = _Entry(id=t.next_id, payload=bytes(r.payload), enqueued_at=r.enqueued_at,
                           attempts=r.attempts, errors=tuple(dict(x) for x in r.errors),
                           origin=dict(r.origin) if r.origin else None)
                t.next_id += 1
                t.counters["enqueued"] += 1
                t.entries[e.id] = e
                if r.state == "failed":
                    e.state = "failed"
                elif r.state == "delayed" and r.not_before and r.not_before > now:
                    e.state, e.not_before = "delayed", r.not_before
                else:  # ready from now: its wait here starts with its arrival
                    e.ready_at = now
                    t.ready[e.id] = None
                ids.append(e.id)
            self._cond.notify_all()
        return ids

    def take(self, topic: str, limit: int, timeout: float | None) -> list[Delivery]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            t = self._topic(topic)
            while True:
                nxt = self._housekeep(t)
                if t.ready:
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return []
                if nxt is not None:
                    wait = max(0.0, nxt - time.time())
                    left = wait if left is None else min(left, wait)
                self._cond.wait(left)
            out: list[Delivery] = []
            now = time.time()
            while t.ready and len(out) < limit:
                mid, _ = t.ready.popitem(last=False)
                e = t.entries[mid]
                e.state = "in_progress"
                e.attempts += 1
                e.token = next(_tokens)
                e.lease = Lease(self.owner, now + self.visibility_timeout)
                out.append(Delivery(e.id, e.payload, e.attempts, e.enqueued_at, (e.id, e.token), e.errors,
                                    e.ready_at))
            return out

    def settle(
        self,
        topic: str,
        token: Any,
        outcome: str,
        delay: float = 0.0,
        error: dict[str, Any] | None = None,
    ) -> bool:
        mid, tok = token
        with self._cond:
            t = self._topic(topic)
            e = t.entries.get(mid)
            if e is None or not self._holds(e, tok):
                return False
            if e.lease is not None and e.lease.deadline <= time.time():
                self._take_back(t, e, LEASE_EXPIRED)  # it belongs to the next taker
                self._cond.notify_all()
                return False
            if error is not None:
                e.errors = (e.errors + (error,))[-MAX_ERRORS_KEPT:]
            if outcome == "complete":
                del t.entries[mid]
                t.counters["completed"] += 1
            elif outcome == "retry":
                t.counters["retried"] += 1
                if delay > 0:
                    e.state, e.lease, e.not_before = "delayed", None, time.time() + delay
                else:
                    self._make_ready(t, e)
            elif outcome == "fail":
                e.state, e.lease = "failed", None
            else:
                raise ValueError(f"unknown outcome {outcome!r}")
            self._cond.notify_all()
            return True

    def extend(self, topic: str, token: Any, seconds: float) -> bool:
        mid, tok = token
        with self._cond:
            t = self._store.topics.get(topic)
            e = t.entries.get(mid) if t else None
            if t is None or e is None or e.lease is None or not self._holds(e, tok):
                return False
            now = time.time()
            if e.lease.deadline <= now:
                self._take_back(t, e, LEASE_EXPIRED)  # it belongs to the next taker
                self._cond.notify_all()
                return False
            e.lease = Lease(self.owner, now + seconds, extended_at=now)
            # A waiting take sleeps until the next lease ends: an earlier
            # end must wake it to count again.
            self._cond.notify_all()
            return True

    def topics(self) -> list[str]:
        with self._cond:
            return list(self._store.topics)

    def stats(self, topic: str) -> dict[str, int]:
        with self._cond:
            t = self._topic(topic)
            self._housekeep(t)
            out = dict(t.counters)
            for state in ("ready", "delayed", "in_progress", "failed"):
                out[state] = t.count(state)
            out["num_slabs"] = 0
            out["num_active_slabs"] = 0
            return out

    def info(self, topic: str) -> dict[str, Any]:
        with self._cond:
            t = self._store.topics.get(topic)
            if t is None:  # looking never creates a topic
                return {"bytes": 0, "dropped": 0, "oldest_ready_at": None}
            self._housekeep(t)
            oldest = next(iter(t.ready), None)
            return {
                "bytes": sum(len(e.payload) for e in t.entries.values()),
                "dropped": 0,
                "oldest_ready_at": t.entries[oldest].enqueued_at if oldest is not None else None,
            }

    def messages(self, topic: str, state: str | None, after: int | None, limit: int) -> list[Record]:
        with self._cond:
            t = self._store.topics.get(topic)
            if t is None:
                return []
            self._housekeep(t)
            lo = after or 0
            found = sorted(
                (e for e in t.entries.values() if e.id > lo and (state is None or e.state == state)),
                key=lambda e: e.id,
            )
            return [self._record(e) for e in found[:limit]]

    def peek(self, topic: str, id: int) -> Record:
        with self._cond:
            t = self._store.topics.get(topic)
            if t is not None:
                self._housekeep(t)
            return self._record(self._get(topic, id))

    def requeue(self, topic: str, id: int) -> None:
        with self._cond:
            e = self._get(topic, id)
            if e.state != "ready":
                self._make_ready(self._topic(topic), e)
            self._cond.notify_all()

    def requeue_failed(self, topic: str) -> int:
        with self._cond:
            t = self._store.topics.get(topic)
            if t is None:
                return 0
            failed = sorted(i for i, e in t.entries.items() if e.state == "failed")
            for mid in failed:
                self._make_ready(t, t.entries[mid])
            self._cond.notify_all()
            return len(failed)

    def delete(self, topic: str, id: int) -> None:
        with self._cond:
            e = self._get(topic, id)
            t = self._topic(topic)
            t.ready.pop(e.id, None)
            del t.entries[e.id]
            self._cond.notify_all()

    def purge(self, topic: str, state: str | None) -> int:
        states = {"ready", "delayed"} if state is None else {state}
        with self._cond:
            t = self._store.topics.get(topic)
            if t is None:
                return 0
            gone = [i for i, e in t.entries.items() if e.state in states]
            for mid in gone:
                t.ready.pop(mid, None)
                del t.entries[mid]
            self._cond.notify_all()
            return len(gone)

    def check(self, fix: bool) -> dict[str, Any]:
        return {"ok": True, "problems": [], "fixed": [], "topics": len(self._store.topics)}

    def fsync(self) -> None:
        pass

    def close(self) -> None:
        """Give back the leases this object holds: ready at once, at the
        back of their topics, as a slab holder's after it exits or dies."""
        with self._cond:
            for t in self._store.topics.values():
                for e in list(t.entries.values()):
                    if e.state == "in_progress" and e.lease is not None and e.lease.owner == self.owner:
                        self._take_back(t, e, OWNER_CLOSED)
            self._cond.notify_all()

    def write_heartbeat(self, key: str, record: dict[str, Any]) -> None:
        with self._cond:
            self._store.heartbeats[key] = dict(record)

    def remove_heartbeat(self, key: str) -> None:
        with self._cond:
            self._store.heartbeats.pop(key, None)

    def heartbeats(self) -> list[dict[str, Any]]:
        with self._cond:
            return [dict(r) for r in self._store.heartbeats.values()]

    def set_paused(self, topic: str, paused: bool) -> None:
        with self._cond:
            if paused:
                self._store.paused.add(topic)
            else:
                self._store.paused.discard(topic)
            self._cond.notify_all()

    def paused_topics(self) -> set[str]:
        with self._cond:
            return set(self._store.paused)

    def write_control(self, key: str, record: dict[str, Any]) -> None:
        with self._cond:
            self._store.controls[key] = dict(record)

    def remove_control(self, key: str) -> None:
        with self._cond:
            self._store.controls.pop(key, None)

    def controls(self) -> dict[str, dict[str, Any]]:
        with self._cond:
            return {k: dict(v) for k, v in self._store.controls.items()}
