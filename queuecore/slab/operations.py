"""The message operations: each is one change of a topic, or a few, made
with its lock held. A put appends ready entries; a take leases the entry
at the cursor (or the next ready ones); an extend gives a lease a new
deadline; a complete marks its entry done; a retry, a failure, a promotion
of a delayed retry, a reclaim and a requeue append a copy to the log it
goes to and mark the old entry moved (a crash between the two leaves a
duplicate, never a loss); a delete or a purge marks entries moved.
Counters change in the same change as the entries.

Takes no lock, syncs nothing and rings no bell: the backend does those
around the call, as the fsync options and the waiters say.
"""

from __future__ import annotations

import random
import time
import zlib
from typing import TYPE_CHECKING, Any

from queuecore import identity
from queuecore.backend import LEASE_EXPIRED, Delivery, Record, lost_lease
from queuecore.defaults import MAX_ERRORS_KEPT
from queuecore.slab.browse import find_unfinished, scan
from queuecore.slab.crashpoints import CRASH_AT, crash
from queuecore.slab.format import (
    DELAYED,
    DONE,
    FAILED,
    HEADER_SIZE,
    MAIN,
    MOVED,
    MUT_OFF,
    OP_COMPLETE,
    OP_EXTEND,
    OP_FAIL,
    OP_MOVE,
    OP_OTHER,
    OP_PUT,
    OP_RECLAIM,
    OP_RETRY,
    READY,
    TAKEN,
    _now,
    _set_cursor,
    _unowned_mut,
    _unpack_mut,
    pack_extra,
    put_extra,
)
from queuecore.slab.slabfile import _check_entry, _Entry, _set_deadline, _Slab

if TYPE_CHECKING:
    from queuecore.slab.topic import _Topic

PROMOTE_COST_FACTOR = 20  # delayed-log scans take at most ~5% of the lock's time
PROMOTE_MAX_WAIT = 2.0  # ... and a retry that came due waits at most this for it


def append_ready(t: _Topic, payloads: list[bytes]) -> list[int]:
    """The change of a put: ready entries at the main log's tail; their ids."""
    m = t.meta
    now = time.time()
    first = m.next_id
    n = len(payloads)
    append = t.append
    extra = put_extra()
    with t.change(OP_PUT):
        mid = first
        for payload in payloads:
            append(MAIN, mid, payload, extra, now)
            mid += 1
        m.next_id = mid
        if CRASH_AT:
            crash("put.before_counters")
        m.enqueued += n
        m.ready += n
    return [first] if n == 1 else list(range(first, mid))


def restore_records(t: _Topic, records: list[Record]) -> list[int]:
    """Messages taken from another location, stored as they were there
    (same payload, state, attempts, enqueue time, due time and errors) under
    new ids, one change each (lock held). A ready one is ready from now: its
    wait here starts with its arrival."""
    ids: list[int] = []
    now = _now()
    m = t.meta
    for r in records:
        extra = pack_extra(r.origin, r.errors)
        with t.change(OP_PUT):
            mid = int(m.next_id)
            if r.state == "failed":
                t.append(FAILED, mid, r.payload, extra, r.enqueued_at, 0.0, r.attempts)
                m.failed += 1
            elif r.state == "delayed" and r.not_before and r.not_before > now:
                t.append(DELAYED, mid, r.payload, extra, r.enqueued_at, r.not_before, r.attempts)
                m.delayed += 1
                m.next_due = r.not_before if not m.next_due else min(m.next_due, r.not_before)
            else:
                t.append(MAIN, mid, r.payload, extra, r.enqueued_at, now, r.attempts)
                m.ready += 1
            m.next_id = mid + 1
            m.enqueued += 1
        ids.append(mid)
    return ids


def claim(t: _Topic, limit: int, owner: int, visibility_timeout: float, rng: random.Random) -> list[Delivery]:
    """Lease up to ``limit`` ready messages to ``owner`` (lock held)."""
    out = _claim_once(t, limit, owner, visibility_timeout, rng)
    if not out and t.meta.ready > 0:
        out = _claim_once(t, limit, owner, visibility_timeout, rng)  # after a rebuild
    return out


def _lease(t: _Topic, e: _Entry, owner: int, lease_until: float, rng: random.Random) -> Delivery:
    m = t.meta
    lm = t.lms[MAIN]
    token = rng.getrandbits(63) | 1
    attempts = e.attempts + 1
    with t.change(OP_OTHER, e.slab, e.off):
        e.set(TAKEN, attempts, owner, token, lease_until)
        if lease_until < m.lease_min:  # 0 (not known) stays 0
            m.lease_min = lease_until
        m.ready -= 1
        m.in_progress += 1
        lm.cursor_seq, lm.cursor_off = e.slab.seq, e.off + e.size
    # A main-log entry's not_before is when it became ready (0: at its put).
    return Delivery(e.id, e.payload(), attempts, e.enqueued_at, (e.slab.seq, e.off, token),
                    e.errors(), e.not_before or e.enqueued_at)


def _claim_once(t: _Topic, limit: int, owner: int, visibility_timeout: float,
                rng: random.Random) -> list[Delivery]:
    m = t.meta
    lm = t.lms[MAIN]
    out: list[Delivery] = []
    lease_until = _now() + visibility_timeout
    if limit == 1:
        # The common case: the entry at the cursor is the one to take.
        seq = int(lm.cursor_seq)
        slab = t.slabs.get((MAIN, seq))
        if slab is not None:
            e = _check_entry(slab, int(lm.cursor_off), slab.end(t.tail(MAIN)))
            if e is not None and e.status == READY:
                return [_lease(t, e, owner, lease_until, rng)]
    damaged = False

    def on_damage(slab: _Slab | None, off: int, nxt: int) -> None:
        nonlocal damaged
        damaged = True

    start = (int(lm.cursor_seq), int(lm.cursor_off))
    pos = start
    for e in t.entries(MAIN, start, on_damage):
        if damaged:
            break
        if e.status != READY:
            pos = (e.slab.seq, e.off + e.size)
            continue
        if len(out) >= limit:
            pos = (e.slab.seq, e.off)
            break
        out.append(_lease(t, e, owner, lease_until, rng))
        pos = (e.slab.seq, e.off + e.size)
        if len(out) >= limit:
            break
    else:
        pos = t.tail(MAIN) if not damaged else pos
    if damaged:
        # Damage between the cursor and the tail: rebuild everything,
        # stepping over the damaged entries (counted in 'dropped').
        t._recount()
        return out
    if pos > (int(lm.cursor_seq), int(lm.cursor_off)):
        _set_cursor(lm, *pos)
    if not out and m.ready > 0:
        t._recount()  # the counter said ready but none was found
    return out


def promote(t: _Topic) -> None:
    """Delayed retries whose time has come go to the main log (lock held)."""
    m = t.meta
    now = _now()
    if not m.next_due or m.next_due > now:
        return
    next_due = 0.0
    started = time.thread_time()  # this thread's work, not time it waited for the CPU
    due: list[tuple[int, int]] = []  # positions: entries would keep every slab mapped
    for e in t.entries(DELAYED):
        if e.status != READY:
            continue
        if e.not_before <= now:
            due.append((e.slab.seq, e.off))
        else:
            next_due = e.not_before if not next_due else min(next_due, e.not_before)
    scan_cost = time.thread_time() - started
    for e in t.entries_at(DELAYED, due):
        move(t, e, MAIN, OP_MOVE, not_before=e.not_before)  # ready since it came due
    if next_due:
        # That read the whole delayed log under the lock. Retries coming
        # due one after another (many at once after an outage) would run
        # it at every take: the next look waits PROMOTE_COST_FACTOR times
        # what the read cost (nothing for a short log; a retry in a log
        # of 100,000 is moved a second or two late rather than halting
        # every take).
        next_due = max(next_due, now + min(PROMOTE_MAX_WAIT, PROMOTE_COST_FACTOR * scan_cost))
    m.next_due = next_due


def move(t: _Topic, e: _Entry, to_log: int, op: int, error: dict[str, Any] | None = None,
         not_before: float = 0.0, final_status: int = MOVED) -> None:
    """Append a copy of ``e`` to ``to_log`` (same id, attempts, origin,
    errors, and ``error`` added), then mark ``e`` finished, and fix the
    counters (lock held). The copy is written first: a crash in between
    leaves a duplicate, never a loss. ``not_before`` is the due time in the
    delayed log, and in the main log when the message became ready (0: now)."""
    m = t.meta
    origin, kept = e.history()
    errors = list(kept)
    if error is not None:
        errors = (errors + [error])[-MAX_ERRORS_KEPT:]
    extra = pack_extra(origin, errors)
    if to_log == MAIN and not not_before:
        not_before = _now()
    from_log = e.slab.log
    with t.change(op, e.slab, e.off):
        t.append(to_log, e.id, e.payload(), extra, e.enqueued_at, not_before, e.attempts)
        old_status = e.status
        if CRASH_AT:
            crash("move.after_append")
        e.set(final_status)
        if CRASH_AT:
            crash("move.after_status")
        t.finished(e)
        if from_log == MAIN:
            if old_status == TAKEN:
                m.in_progress = max(0, m.in_progress - 1)
            else:
                m.ready = max(0, m.ready - 1)
        elif from_log == DELAYED:
            m.delayed = max(0, m.delayed - 1)
        else:
            m.failed = max(0, m.failed - 1)
        if to_log == MAIN:
            m.ready += 1
        elif to_log == DELAYED:
            m.delayed += 1
            m.next_due = not_before if not m.next_due else min(m.next_due, not_before)
        else:
            m.failed += 1
        if op == OP_RETRY:  # a lease that ran out is a redelivery, not a retry
            m.retried += 1


def settle_locked(t: _Topic, token: Any, outcome: str, delay: float, error: dict[str, Any] | None,
                  owner_id: int) -> tuple[bool, bool, int]:
    """Complete, retry or fail the lease ``token`` of this process
    (``owner_id``), lock held. Returns (settled, wake someone, op number)."""
    seq, off, tok = token
    m = t.meta
    slab = t.slab(MAIN, seq)
    if slab is None or off + HEADER_SIZE > slab.size:
        return False, False, int(m.op_seq)
    status, attempts, owner, token_now, deadline, _mcrc = _unpack_mut(slab.mm, off + MUT_OFF)
    # The lease token is 63 random bits: a match means this lease.
    if status != TAKEN or token_now != tok or owner != owner_id:
        return False, False, int(m.op_seq)
    now = time.time()  # read once: a clock step between two reads must not fail a complete
    if outcome == "complete" and deadline > now:
        with t.change(OP_COMPLETE, slab, off):
            slab.mm[off + MUT_OFF : off + MUT_OFF + 36] = _unowned_mut(DONE, attempts)
            if CRASH_AT:
                crash("complete.after_status")
            t.finished_at(slab)
            m.in_progress = max(0, m.in_progress - 1)
            m.completed += 1
        # Room was made: wake puts waiting under max_queue_size.
        return True, m.room_waiters > 0, int(m.op_seq)
    return _settle_entry(t, _Entry(slab, off), outcome, delay, error, now)


def extend_locked(t: _Topic, token: Any, seconds: float, owner_id: int) -> tuple[bool, bool, int]:
    """Give the lease ``token`` of this process (``owner_id``) a deadline
    ``seconds`` from now, lock held, if it is still that lease and its
    deadline has not passed; a lease found run out goes to the next taker
    at once, as a settle's does. Returns (extended, wake someone, the op
    number of the change made or 0 if none)."""
    seq, off, tok = token
    slab = t.slab(MAIN, seq)
    if slab is None or off + HEADER_SIZE > slab.size:
        return False, False, 0
    status, _attempts, owner, token_now, deadline, mcrc = _unpack_mut(slab.mm, off + MUT_OFF)
    if status != TAKEN or token_now != tok or owner != owner_id:
        return False, False, 0
    if zlib.crc32(slab.mv[off + MUT_OFF : off + MUT_OFF + 32]) != mcrc:
        return False, False, 0  # a damaged status reads as ready: no lease to keep
    m = t.meta
    now = _now()
    if not deadline > now:
        _expired(t, _Entry(slab, off), now)
        return False, m.waiters > 0, int(m.op_seq)
    until = now + seconds
    with t.change(OP_EXTEND, slab, off):
        _set_deadline(slab, off, until)
        if CRASH_AT:
            crash("extend.after_write")
        # The earliest deadline lets looks for ended leases be skipped
        # until it passes: an earlier one must lower it (0, not known,
        # stays 0). A later one leaves it low, which costs one look.
        if until < m.lease_min:
            m.lease_min = until
    return True, False, int(m.op_seq)


def _expired(t: _Topic, e: _Entry, now: float) -> None:
    """This process's lease on ``e`` ran out: back to the topic, kept in its history."""
    move(t, e, MAIN, OP_RECLAIM, lost_lease(e.attempts, LEASE_EXPIRED, identity.label(identity.current()), now))


def _settle_entry(t: _Topic, e: _Entry, outcome: str, delay: float,
                  error: dict[str, Any] | None, now: float) -> tuple[bool, bool, int]:
    """Retry or fail a leased entry, or find its lease ran out (lock
    held; a complete in time never gets here, so a complete here is one
    whose lease ran out). Returns (settled, wake someone, op number)."""
    m = t.meta
    if outcome == "complete" or not e.deadline > now:
        # The lease ran out: the message belongs to the next taker.
        _expired(t, e, now)
        return False, m.waiters > 0, int(m.op_seq)
    if outcome == "retry":
        if delay > 0:
            move(t, e, DELAYED, OP_RETRY, error, now + delay)
        else:
            move(t, e, MAIN, OP_RETRY, error)
        # Wake takers: a message became ready (or delayed: a waiter must
        # learn its due time).
        return True, m.waiters > 0, int(m.op_seq)
    move(t, e, FAILED, OP_FAIL, error)
    # Room was made: wake puts waiting under max_queue_size.
    return True, m.room_waiters > 0, int(m.op_seq)


def remove(t: _Topic, e: _Entry, state: str) -> None:
    """A ready, in-progress, delayed or failed message is gone (lock held)."""
    m = t.meta
    with t.change(OP_OTHER, e.slab, e.off):
        e.set(MOVED)
        t.finished(e)
        if state == "ready":
            m.ready = max(0, m.ready - 1)
        elif state == "in_progress":
            m.in_progress = max(0, m.in_progress - 1)
        elif state == "delayed":
            m.delayed = max(0, m.delayed - 1)
        elif state == "failed":
            m.failed = max(0, m.failed - 1)


# -- an operator's changes (the dashboard, the commands) ------------------------------


def _mark(t: _Topic, e: _Entry, durable: bool) -> None:
    # An operator's change is synced as a put would be.
    if durable:
        t.dirty(e.slab.log, e.slab.seq)


def requeue_message(t: _Topic, mid: int, durable: bool) -> None:
    """Message ``mid`` ready again, whatever its state but completed."""
    e, state = find_unfinished(t, mid)
    if state != "ready":
        move(t, e, MAIN, OP_MOVE)
        _mark(t, e, durable)


def requeue_failed_messages(t: _Topic, durable: bool) -> int:
    """Every failed message ready again; how many."""
    n = 0
    # Positions first (the moves empty and delete slabs as they go),
    # not entries (which would keep every slab mapped).
    failed = [(e.slab.seq, e.off) for e in t.entries(FAILED) if e.status == READY]
    for e in t.entries_at(FAILED, failed):
        if e.status == READY:
            move(t, e, MAIN, OP_MOVE)
            _mark(t, e, durable)
            n += 1
    return n


def delete_message(t: _Topic, mid: int, durable: bool) -> None:
    e, state = find_unfinished(t, mid)
    remove(t, e, state)
    _mark(t, e, durable)


def purge_messages(t: _Topic, states: set[str], durable: bool) -> int:
    """Every message in ``states`` removed; how many."""
    n = 0
    for e, s in scan(t, states, 0, None):
        remove(t, e, s)
        _mark(t, e, durable)
        n += 1
    return n
