"""Reading a topic without changing a message: its counters for
``stats``, the oldest ready message for ``info``, the messages in some
states in id order (``messages``, and the scans ``purge`` and ``check``
start from), one message by id (``peek``, and the lookups of ``requeue``
and ``delete``), and a message as the API's ``Record``.

Runs with the topic's lock held (counters and positions must not move
under a scan), but writes nothing; a scan holds positions, never entries,
so the slabs it read can be unmapped as it goes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from queuecore.backend import Lease, Record
from queuecore.errors import MessageNotFound
from queuecore.slab.format import DELAYED, DONE, FAILED, MAIN, READY, SLAB_HEADER_SIZE, TAKEN
from queuecore.slab.slabfile import _Entry

if TYPE_CHECKING:
    from queuecore.slab.owners import _Owners
    from queuecore.slab.topic import _Topic


def counts(t: _Topic) -> dict[str, int]:
    """``stats()`` of one topic (lock held)."""
    m = t.meta
    seqs = t.seqs(MAIN)
    active = 0
    for seq in seqs:
        slab = t.slab(MAIN, seq)
        if slab is not None and slab.hdr.live > 0:
            active += 1
    return {
        "enqueued": int(m.enqueued),
        "ready": max(0, int(m.ready)),
        "delayed": max(0, int(m.delayed)),
        "in_progress": max(0, int(m.in_progress)),
        "completed": int(m.completed),
        "retried": int(m.retried),
        "failed": max(0, int(m.failed)),
        "num_slabs": len(seqs),
        "num_active_slabs": active,
    }


def bytes_used(t: _Topic) -> int:
    """The disk space of the topic's files (no lock needed)."""
    size = 0
    for name in os.listdir(t.path):
        try:
            size += os.stat(os.path.join(t.path, name)).st_blocks * 512
        except OSError:
            pass
    return size


def oldest_ready_at(t: _Topic) -> float | None:
    """The enqueue time of the first ready message, looked for among the
    first 10,000 entries after the cursor (lock held)."""
    lm = t.meta.logs[MAIN]
    if t.meta.ready > 0:
        for i, e in enumerate(t.entries(MAIN, (int(lm.cursor_seq), int(lm.cursor_off)))):
            if e.status == READY:
                return float(e.enqueued_at)
            if i > 10000:
                break
    return None


def record(e: _Entry, state: str, owners: _Owners) -> Record:
    lease = None
    if state == "in_progress":
        lease = Lease(owners.name(e.owner), e.deadline)
    origin, errors = e.history()
    return Record(
        id=e.id, payload=e.payload(), state=state, attempts=e.attempts,
        enqueued_at=e.enqueued_at, lease=lease, errors=errors,
        not_before=e.not_before if state == "delayed" else None, origin=origin,
    )


def state_of(log: int, status: int) -> str | None:
    if log == MAIN:
        return {READY: "ready", TAKEN: "in_progress", DONE: "completed"}.get(status)
    if status == READY:
        return "delayed" if log == DELAYED else "failed"
    return None


def scan(t: _Topic, states: set[str], after: int, limit: int | None) -> Iterator[tuple[_Entry, str]]:
    """Entries in ``states`` with id > after, in id order (at most limit),
    read again one at a time as they are used: a scan of a big backlog
    holds positions, not entries, so the slabs it read can be unmapped."""
    logs = []
    if states & {"ready", "in_progress", "completed"}:
        logs.append(MAIN)
    if "delayed" in states:
        logs.append(DELAYED)
    if "failed" in states:
        logs.append(FAILED)
    found: list[tuple[int, int, int, int, str]] = []
    for log in logs:
        for seq in t.seqs(log):
            slab = t.slab(log, seq)
            if slab is None:
                continue
            trusted = slab.hints_ok()
            if trusted and slab.hdr.max_id and slab.hdr.max_id <= after:
                continue
            if limit is not None and len(found) >= limit:
                found.sort(key=lambda x: x[0])
                del found[limit:]
                if trusted and slab.hdr.min_id > found[-1][0]:
                    continue
            for e in t.entries(log, (seq, SLAB_HEADER_SIZE)):
                if e.slab.seq != seq:
                    break
                if e.id <= after:
                    continue
                state = state_of(log, e.status)
                if state in states:
                    found.append((e.id, log, seq, e.off, state))
    found.sort(key=lambda x: x[0])
    if limit is not None:
        del found[limit:]
    for _, log, seq, off, state in found:
        again = t.entry_at(log, seq, off)
        if again is not None:
            yield again, state


def find(t: _Topic, mid: int) -> tuple[_Entry, str]:
    # The slab headers' id ranges say where to look. A range whose
    # checksum does not match (a flipped bit) rules nothing out: those
    # slabs are read too, last.
    best: tuple[_Entry, str] | None = None
    for hinted in (True, False):
        for log in (FAILED, DELAYED, MAIN):
            for seq in t.seqs(log):
                slab = t.slab(log, seq)
                if slab is None:
                    continue
                trusted = slab.hints_ok()
                if hinted != (trusted and slab.hdr.min_id <= mid <= slab.hdr.max_id):
                    continue
                if not hinted and trusted:
                    continue  # a sound range that rules the id out
                for e in t.entries(log, (seq, SLAB_HEADER_SIZE)):
                    if e.slab.seq != seq:
                        break
                    if e.id == mid:
                        state = state_of(log, e.status)
                        if state is not None and state != "completed":
                            return e, state
                        if state == "completed":
                            best = (e, state)
        if best is not None:
            return best
    raise MessageNotFound(t.name, mid)


def find_unfinished(t: _Topic, mid: int) -> tuple[_Entry, str]:
    e, state = find(t, mid)
    if state == "completed":
        raise MessageNotFound(t.name, mid, "ready, delayed, in_progress or failed")
    return e, state
