"""``SlabBackend``: the ``Backend`` contract on a directory of slab files.
It holds the options, the topics this process opened and its lease owner
identity (owners.py), and ties the parts together: each call finds its
topic, takes its lock, runs the operations (operations.py, browse.py,
check.py), then wakes the takers that wait and syncs as the fsync options
say (durability.py). It also waits: a take for a message, a put for room
under ``max_queue_size``, on the topic's bell (queuecore/_wake.py).

Writes no entry, and in the meta file only the counts of its waiters and
the time of the last look for ended leases; after a fork, never uses a
lock, a map or an owner identity of the parent's.
"""

from __future__ import annotations

import os
import random
import secrets
import threading
import time
import weakref
from typing import Any

from queuecore import _wake
from queuecore.backend import Backend, Delivery, Record
from queuecore.defaults import DEFAULTS
from queuecore.errors import (
    DiskFull,
    InvalidOption,
    InvalidTopic,
    MessageNotFound,
    QueueFull,
    StorageError,
)
from queuecore.slab import browse
from queuecore.slab.check import check_topics
from queuecore.slab.crashpoints import CRASH_AT, crash
from queuecore.slab.durability import sync_topic
from queuecore.slab.flags import SideFiles
from queuecore.slab.format import MAIN, _now
from queuecore.slab.operations import (
    append_ready,
    claim,
    delete_message,
    extend_locked,
    promote,
    purge_messages,
    requeue_failed_messages,
    requeue_message,
    restore_records,
    settle_locked,
)
from queuecore.slab.owners import _Owners
from queuecore.slab.slabfile import _disk_error
from queuecore.slab.topic import _Topic

RECLAIM_INTERVAL = 0.5  # seconds between two looks for leases of dead owners
MAX_WAIT_SLICE = 2.0  # a waiting take looks again at least this often

_instances: weakref.WeakSet[SlabBackend] = weakref.WeakSet()


def _after_fork() -> None:
    for backend in list(_instances):
        backend._forked()


os.register_at_fork(after_in_child=_after_fork)


class SlabBackend(SideFiles, Backend):
    """Slab files in a directory; safe for many processes and threads."""

    name = "slab"

    def __init__(self, directory: str, **options: Any) -> None:
        opts = {**DEFAULTS, **options}
        self.root = os.path.abspath(os.fspath(directory))
        self.slab_size = int(opts["slab_size"])
        if self.slab_size < 4096:
            raise InvalidOption("slab_size", "must be at least 4096 bytes")
        self.fsync_put = bool(opts["fsync_put"])
        self.fsync_take = bool(opts["fsync_take"])
        self.fsync_interval = opts["fsync_interval"]
        self.fsync_threshold = opts["fsync_threshold"]
        self.max_queue_size = opts["max_queue_size"]
        if self.max_queue_size is not None and int(self.max_queue_size) < 1:
            raise InvalidOption("max_queue_size", "must be at least 1 (or None)")
        self.visibility_timeout = float(opts["visibility_timeout"])
        if self.visibility_timeout <= 0:
            raise InvalidOption("visibility_timeout", "must be > 0")
        self.durable = self.fsync_put or self.fsync_take
        try:
            os.makedirs(self.root, exist_ok=True)
            os.makedirs(os.path.join(self.root, ".owners"), exist_ok=True)
            os.makedirs(os.path.join(self.root, ".consumers"), exist_ok=True)
        except OSError as exc:
            raise _disk_error(self.root, exc) from exc
        self._lock = threading.Lock()
        self._topics: dict[str, _Topic] = {}
        self.owners = _Owners(self.root)
        self._pid = os.getpid()
        self._rng = random.Random(secrets.randbits(128))  # lease tokens
        _instances.add(self)

    # The put's change and the group commit, apart from the calls that use
    # them (tests step through a put with these).
    _append_ready = staticmethod(append_ready)
    _sync_topic = staticmethod(sync_topic)

    # -- process identity ---------------------------------------------------------
    def _forked(self) -> None:
        # A child must not use its parent's locks, maps or owner identity:
        # flock is shared through inherited descriptors, so keeping them
        # would let parent and child both "hold" a topic's lock, and keep a
        # dead parent looking alive. Drop (don't unlock) and start afresh.
        for t in self._topics.values():
            t.forget()
        self._topics = {}
        self.owners.forked()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._rng = random.Random(secrets.randbits(128))

    def _owner(self) -> int:
        """This process's lease owner id (made at its first take)."""
        return self.owners.mine()

    def _topic(self, name: str, create: bool = True) -> _Topic | None:
        # A forked child is handled by the os.register_at_fork hook.
        t = self._topics.get(name)
        if t is not None:
            return t
        path = os.path.join(self.root, name)
        # The name was validated by Queues; refuse anything that would leave
        # the directory anyway.
        if os.path.dirname(os.path.abspath(path)) != self.root or name.startswith("."):
            raise InvalidTopic(name, "resolves outside the queue directory")
        if not create and not os.path.exists(os.path.join(path, "meta")):
            return None
        with self._lock:
            t = self._topics.get(name)
            if t is None:
                try:
                    t = self._topics[name] = _Topic(name, path, self.slab_size, self.durable)
                except OSError as exc:
                    if isinstance(exc, (DiskFull, StorageError)):
                        raise
                    raise _disk_error(path, exc) from exc
            return t

    def _get(self, name: str) -> _Topic:
        t = self._topics.get(name) or self._topic(name)
        assert t is not None
        return t

    def _after_write(self, t: _Topic, op: int, durable: bool) -> None:
        if durable:
            sync_topic(t, op)
            return
        if not self.fsync_threshold and self.fsync_interval is None:
            return  # syncs only when asked (or at close)
        t.ops_since_sync += 1
        if (self.fsync_threshold and t.ops_since_sync >= self.fsync_threshold) or (
            self.fsync_interval is not None and time.monotonic() - t.last_sync >= self.fsync_interval
        ):
            sync_topic(t)

    # -- producing ----------------------------------------------------------------
    def put(self, topic: str, payloads: list[bytes], timeout: float | None) -> list[int]:
        t = self._topics.get(topic) or self._get(topic)
        limit = self.max_queue_size
        if limit is None:  # the common case: no waiting for room
            with t.locked():
                ids = append_ready(t, payloads)
                op, waiters = t.meta.op_seq, t.meta.waiters
        else:
            ids, op, waiters = self._put_when_room(t, topic, payloads, timeout, limit)
        if waiters > 0:
            _wake.ring(t.bell_fd)
        self._after_write(t, op, self.fsync_put)
        if CRASH_AT:
            crash("put.after_return")
        return ids

    def _put_when_room(self, t: _Topic, topic: str, payloads: list[bytes], timeout: float | None,
                       limit: int) -> tuple[list[int], int, int]:
        """Put once the topic has room under ``max_queue_size`` (waiting up
        to ``timeout``); returns (ids, op number, waiting takers)."""
        n = len(payloads)
        if n > limit:
            raise QueueFull(topic, int(limit))
        deadline = None if timeout is None else time.monotonic() + timeout
        watch: _wake.Watch | None = None
        registered = False
        try:
            while True:
                with t.locked():
                    m = t.meta
                    if m.ready + m.delayed + m.in_progress + n > limit:
                        self._promote(t)
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            raise QueueFull(topic, int(limit))
                        if watch is None:
                            watch = t.watch()
                            continue  # look again now that the watch is set
                        if not registered:
                            m.room_waiters += 1
                            registered = True
                    else:
                        return append_ready(t, payloads), m.op_seq, m.waiters
                watch.wait(MAX_WAIT_SLICE if left is None else min(left, MAX_WAIT_SLICE))
        finally:
            if registered:
                with t.locked():
                    t.meta.room_waiters = max(0, t.meta.room_waiters - 1)
            if watch is not None:
                t.give_back(watch)

    def restore(self, topic: str, records: list[Record]) -> list[int]:
        t = self._get(topic)
        with t.locked():
            ids = restore_records(t, records)
            waiters = t.meta.waiters
        if waiters:
            _wake.ring(t.bell_fd)
        self._after_write(t, int(t.meta.op_seq), self.fsync_put)
        return ids

    # -- consuming ----------------------------------------------------------------
    def take(self, topic: str, limit: int, timeout: float | None) -> list[Delivery]:
        t = self._get(topic)
        owner = self.owners.id or self._owner()
        deadline = None if timeout is None else time.monotonic() + timeout
        watch: _wake.Watch | None = None
        registered = False
        try:
            while True:
                with t.locked():
                    self._housekeep(t)
                    m = t.meta
                    if m.ready > 0:
                        out = claim(t, limit, owner, self.visibility_timeout, self._rng)
                        if out:
                            op = int(m.op_seq)
                            if self.fsync_take:
                                for d in out:
                                    t.dirty(MAIN, d.token[0])
                            break
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return []
                    if watch is None:
                        watch = t.watch()
                        continue  # look again now that the watch is set
                    if not registered:
                        m.waiters += 1
                        registered = True
                    wait = MAX_WAIT_SLICE if left is None else min(left, MAX_WAIT_SLICE)
                    if m.in_progress > 0:
                        wait = min(wait, RECLAIM_INTERVAL)
                    if m.next_due:
                        wait = min(wait, max(0.0, m.next_due - _now()) + 0.001)
                watch.wait(wait)
        finally:
            if registered:
                with t.locked():
                    t.meta.waiters = max(0, t.meta.waiters - 1)
            if watch is not None:
                t.give_back(watch)
        if self.fsync_take:
            sync_topic(t, op)
        return out

    def _housekeep(self, t: _Topic) -> None:
        """Before a take: delayed retries that came due, and leases that
        ended (lock held)."""
        m = t.meta
        now = _now()
        if m.next_due and m.next_due <= now:
            self._promote(t)
        # A last look in the future means the clock was stepped back: look now.
        if m.in_progress > 0 and not 0 <= now - m.last_reclaim < RECLAIM_INTERVAL:
            if self.owners.leases_may_have_ended(t, now):
                self._reclaim(t)
            else:
                m.last_reclaim = now

    # The two looks after a topic that read a whole log (lock held).
    def _promote(self, t: _Topic) -> None:
        promote(t)

    def _reclaim(self, t: _Topic) -> None:
        self.owners.reclaim(t)

    def settle(self, topic: str, token: Any, outcome: str, delay: float = 0.0,
               error: dict[str, Any] | None = None) -> bool:
        if outcome not in ("complete", "retry", "fail"):
            raise ValueError(f"unknown outcome {outcome!r}")
        t = self._get(topic)
        with t.locked():
            ok, wake, op = settle_locked(t, token, outcome, delay, error, self.owners.id)
            if self.fsync_take:
                t.dirty(MAIN, token[0])
        if wake:
            _wake.ring(t.bell_fd)
        self._after_write(t, op, self.fsync_take)
        return ok

    def extend(self, topic: str, token: Any, seconds: float) -> bool:
        t = self._get(topic)
        with t.locked():
            ok, wake, op = extend_locked(t, token, seconds, self.owners.id)
            if op and self.fsync_take:
                t.dirty(MAIN, token[0])
        if wake:
            _wake.ring(t.bell_fd)
        if op:
            # Synced as a settle is: after a power loss, a lease back at its
            # old deadline would end early and its message be delivered twice.
            self._after_write(t, op, self.fsync_take)
        return ok

    def settle_many(self, topic: str, tokens: list[Any], outcome: str) -> list[bool]:
        if outcome not in ("complete", "retry", "fail"):
            raise ValueError(f"unknown outcome {outcome!r}")
        t = self._get(topic)
        oks: list[bool] = []
        wake_any, op = False, 0
        with t.locked():  # one lock (and at most one fsync) for the batch
            owner_id = self.owners.id
            for token in tokens:
                ok, wake, op = settle_locked(t, token, outcome, 0.0, None, owner_id)
                oks.append(ok)
                wake_any = wake_any or wake
                if self.fsync_take:
                    t.dirty(MAIN, token[0])
        if wake_any:
            _wake.ring(t.bell_fd)
        if tokens:
            self._after_write(t, op, self.fsync_take)
        return oks

    # -- looking --------------------------------------------------------------------
    def topics(self) -> list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return [n for n in names if not n.startswith(".") and os.path.exists(os.path.join(self.root, n, "meta"))]

    def _look(self, t: _Topic) -> bool:
        """Before counts or messages are read (stats, info, messages, peek):
        delayed retries that came due, and leases that ended, so that the
        messages of a holder that closed or died show as ready without a
        take (lock held). Skipped, as a take's look is, while no deadline
        passed and no owner went; the owner files are probed at most every
        RECLAIM_INTERVAL by these calls (see leases_may_have_ended), and
        while the earliest deadline is not known (the look would read the
        log) it runs at most that often too. Whether waiting takers should
        be woken."""
        m = t.meta
        self._promote(t)
        if m.in_progress <= 0:
            return False
        now = _now()
        if not m.lease_min and 0 <= now - m.last_reclaim < RECLAIM_INTERVAL:
            return False
        # A look skipped here is not noted as the last look (takes would
        # skip theirs on the word of owner probes up to RECLAIM_INTERVAL old).
        if not self.owners.leases_may_have_ended(t, now, recent=RECLAIM_INTERVAL):
            return False
        before = int(m.in_progress)
        self._reclaim(t)
        return bool(m.in_progress < before and m.waiters > 0)

    def stats(self, topic: str) -> dict[str, int]:
        t = self._get(topic)
        with t.locked():
            wake = self._look(t)
            counts = browse.counts(t)
        if wake:
            _wake.ring(t.bell_fd)
        return counts

    def info(self, topic: str) -> dict[str, Any]:
        t = self._topic(topic, create=False)
        if t is None:  # looking never creates a topic
            return {"bytes": 0, "dropped": 0, "oldest_ready_at": None}
        size = browse.bytes_used(t)
        with t.locked():
            wake = self._look(t)
            oldest = browse.oldest_ready_at(t)
            dropped = int(t.meta.dropped)
        if wake:
            _wake.ring(t.bell_fd)
        return {"bytes": size, "dropped": dropped, "oldest_ready_at": oldest}

    def messages(self, topic: str, state: str | None, after: int | None, limit: int) -> list[Record]:
        t = self._topic(topic, create=False)
        if t is None:
            return []
        states = {state} if state else {"ready", "delayed", "in_progress", "failed"}
        with t.locked():
            wake = self._look(t)
            out = [browse.record(e, s, self.owners) for e, s in browse.scan(t, states, after or 0, limit)]
        if wake:
            _wake.ring(t.bell_fd)
        return out

    def peek(self, topic: str, id: int) -> Record:
        t = self._topic(topic, create=False)
        if t is None:
            raise MessageNotFound(topic, id)
        with t.locked():
            wake = self._look(t)
            e, state = browse.find(t, id)
            record = browse.record(e, state, self.owners)
        if wake:
            _wake.ring(t.bell_fd)
        return record

    def check(self, fix: bool) -> dict[str, Any]:
        return check_topics(self, fix)

    # -- an operator's changes ------------------------------------------------------
    def _admin_done(self, t: _Topic, wake: bool) -> None:
        """After an operator's change: wake whoever it concerns, then sync
        as a put would."""
        if wake:
            _wake.ring(t.bell_fd)
        self._after_write(t, int(t.meta.op_seq), self.fsync_put)

    def requeue(self, topic: str, id: int) -> None:
        t = self._topic(topic, create=False)
        if t is None:
            raise MessageNotFound(topic, id)
        with t.locked():
            requeue_message(t, id, self.fsync_put)
            wake = t.meta.waiters > 0
        self._admin_done(t, wake)

    def requeue_failed(self, topic: str) -> int:
        t = self._topic(topic, create=False)
        if t is None:
            return 0
        with t.locked():
            n = requeue_failed_messages(t, self.fsync_put)
            wake = t.meta.waiters > 0
        if n:
            self._admin_done(t, wake)
        return n

    def delete(self, topic: str, id: int) -> None:
        t = self._topic(topic, create=False)
        if t is None:
            raise MessageNotFound(topic, id)
        with t.locked():
            delete_message(t, id, self.fsync_put)
            wake = t.meta.room_waiters > 0
        self._admin_done(t, wake)

    def purge(self, topic: str, state: str | None) -> int:
        t = self._topic(topic, create=False)
        if t is None:
            return 0
        states = {"ready", "delayed"} if state is None else {state}
        with t.locked():
            self._promote(t)
            n = purge_messages(t, states, self.fsync_put)
            wake = t.meta.room_waiters > 0
        if n:
            self._admin_done(t, wake)
        return n

    # -- the end --------------------------------------------------------------------
    def fsync(self) -> None:
        for t in list(self._topics.values()):
            sync_topic(t, meta=True)

    def close(self) -> None:
        if self._pid != os.getpid():
            self._forked()
        for t in list(self._topics.values()):
            try:
                if self.durable or self.fsync_interval is not None or self.fsync_threshold:
                    sync_topic(t)
            finally:
                t.close()
        self._topics.clear()
        self.owners.close()
        _instances.discard(self)
