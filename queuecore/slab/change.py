"""One change of a topic and its undo record: ``with t.change(op, slab, off):``
copies the counters into the meta file's snapshot and notes what the change
is about; leaving the block commits it (and deletes the slabs it emptied);
an exception undoes it: the entries it appended are invalidated, the slabs
it made are deleted, the entry it was about gets its state back and the
counters their copy. A process killed in the middle leaves the record for
the next lock holder (recovery.py).

The lock is held by the caller; nothing here takes it, syncs a file or
decides what a change writes.
"""

from __future__ import annotations

import ctypes
import os
from typing import TYPE_CHECKING

from queuecore.errors import QueueError
from queuecore.slab.format import HEADER_SIZE, META_HDR, MUT_OFF, MUT_SIZE, SNAPSHOT_OFF
from queuecore.slab.slabfile import _Slab

if TYPE_CHECKING:
    from queuecore.slab.topic import _Topic


class _Change:
    """The change in progress of one topic (one at a time: the lock)."""

    __slots__ = ("t", "undo_slab", "undo_off", "undo_mut")

    def __init__(self, t: _Topic) -> None:
        self.t = t
        # The entry the change is about, and its state before it, put back
        # if the change is undone (a move undone must not lose the message).
        self.undo_slab: _Slab | None = None
        self.undo_off = 0
        self.undo_mut = b""

    def begin(self, op: int, slab: _Slab | None = None, off: int = 0) -> _Change:
        """``t.change(op, slab, off)``: start a change (lock held). ``slab``
        and ``off``: the entry it is about, which recovery looks at and an
        undo puts back. An exception inside the ``with`` block rolls it back
        (a put that raised DiskFull half-way must never reappear)."""
        t = self.t
        # memmove, not slicing: this runs for every put, take and settle.
        ctypes.memmove(t.meta_addr + SNAPSHOT_OFF, t.meta_addr, META_HDR)
        i = t.intent
        if slab is None:
            i.op, i.log, i.seq, i.off = op, 0, 0, 0
        else:
            i.op, i.log, i.seq, i.off = op, slab.log, slab.seq, off
        i.active = 1
        t.appended.clear()
        if t.created:
            t.created.clear()
        if t.hints:
            t.hints.clear()
        if t.dropping:
            t.dropping.clear()
        if t.sealed:
            t.sealed.clear()
        self.undo_slab = slab
        if slab is not None:
            self.undo_off = off
            self.undo_mut = slab.mm[off + MUT_OFF : off + MUT_OFF + MUT_SIZE]
        return self

    def __enter__(self) -> None:
        pass

    def __exit__(self, exc_type: object, *exc: object) -> None:
        t = self.t
        if exc_type is None:
            if t.dropping:
                self._drop_emptied()
            t.meta.op_seq += 1
            t.intent.active = 0
        else:
            self._rollback()

    def _drop_emptied(self) -> None:
        """Delete the slabs the committing change emptied. Never raises: a
        slab that cannot be read or deleted now stays (its entries are all
        finished; the next rebuild deletes it)."""
        t = self.t
        for slab in t.dropping:
            if slab.closed or slab.hdr.live > 0:
                continue
            try:
                t._drop_if_finished(slab)
            except (OSError, QueueError):
                pass
        t.dropping.clear()

    def _rollback(self) -> None:
        t = self.t
        gen_before = int(t.meta.slab_gen)
        for slab, off in reversed(t.appended):
            if not slab.closed:
                slab.mm[off : off + HEADER_SIZE] = bytes(HEADER_SIZE)  # not an entry: never adopted
                slab.hdr.live = max(0, slab.hdr.live - 1)
        t.appended.clear()
        t.dropping.clear()
        u = self.undo_slab
        if u is not None:
            self.undo_slab = None
            if not u.closed:
                off = self.undo_off + MUT_OFF
                # The slab's live count is left as it is: one too low is
                # found out (a slab is scanned before it is deleted).
                u.mm[off : off + MUT_SIZE] = self.undo_mut
        for slab, (lo, hi) in t.hints.items():
            if not slab.closed:
                slab.set_hints(lo, hi)
        t.hints.clear()
        ctypes.memmove(t.meta_addr, t.meta_addr + SNAPSHOT_OFF, META_HDR)
        # Slabs this change made go: left behind, another process could make
        # one again under the same name while this one still maps the first.
        for slab in t.created:
            t.slabs.pop((slab.log, slab.seq), None)
            if slab.is_at_path():
                try:
                    os.unlink(slab.path)
                except OSError:
                    pass
            slab.close()
        if t.created:
            t.created.clear()
        # Other processes list the slabs again (the restored counters would
        # otherwise show them the generation of the list they hold).
        restored = int(t.meta.slab_gen)
        if restored != gen_before:
            t.meta.slab_gen = max(restored, gen_before) + 1
        t.intent.active = 0
        self._unseal_tails()

    def _unseal_tails(self) -> None:
        """A change that sealed a slab and started the next one was undone:
        the slab that is the tail again is not sealed."""
        t = self.t
        for slab in t.sealed:
            if not slab.closed and slab.seq == t.lms[slab.log].tail_seq:
                slab.hdr.end = 0
        t.sealed.clear()
