"""The topic's three logs of slabs (main, delayed, failed): which slabs
exist, which are mapped, reading a log's entries in order, appending an
entry at a log's tail (sealing the tail slab and starting the next when it
is full), and deleting a slab once every entry in it is finished.

``_Logs`` is the part of a topic that knows its slabs; ``_Topic`` (topic.py)
builds on it, maps the meta file and sets ``meta`` and ``lms`` before any
call. What a change does to the logs is noted in the lists below, for
change.py to commit or undo: nothing here snapshots or restores counters,
takes a lock or syncs a file (the caller holds the topic's lock).
"""

from __future__ import annotations

import os
import sys
import zlib
from collections.abc import Iterator
from typing import Any

from queuecore.errors import CorruptSlab
from queuecore.slab.crashpoints import CRASH_AT, crash
from queuecore.slab.format import (
    ENTRY_MAGIC,
    HEADER_SIZE,
    MAIN,
    MUT_OFF,
    READY,
    SLAB_HEADER_SIZE,
    TAKEN,
    _hint_crc,
    _LogMeta,
    _Meta,
    _pack_head_into,
    _pack_immutable,
    _slab_name,
    _unowned_mut,
)
from queuecore.slab.slabfile import _check_entry, _disk_error, _Entry, _resync, _skip_len, _Slab

SIDE_SLAB_SIZE = 1024 * 1024  # slab size of the delayed and failed logs
# Slabs a topic keeps mapped when nothing else refers to them: each mapped
# slab holds one file descriptor, so a backlog of hundreds of slabs must not
# hold hundreds (a scan maps the ones it reads in turn and lets them go).
MAPPED_SLABS = 16


def _refcounts(d: dict[Any, Any]) -> list[tuple[Any, int]]:
    """Each key of ``d`` with the reference count of its value as read here."""
    getrefcount = sys.getrefcount
    return [(key, getrefcount(v)) for key, v in list(d.items())]


# The count _refcounts reads for a value only the dict refers to (it differs
# between Python versions: measured, not assumed).
_IDLE_REFS = _refcounts({0: object()})[0][1]


class _Logs:
    """The slabs of one topic's logs, mapped as they are needed."""

    # Set by the topic once its meta file is mapped.
    meta: _Meta
    lms: tuple[_LogMeta, ...]  # meta.logs[i], one object each

    def __init__(self, path: str, slab_size: int, durable: bool) -> None:
        self.path = path
        self.slab_size = slab_size
        self.durable = durable  # new slabs and their names are synced as they are made
        self.slabs: dict[tuple[int, int], _Slab] = {}
        self.slab_gen = -1
        self.known: list[list[int]] = [[], [], []]  # existing slab seqs per log
        # What the change in progress did to the logs (see change.py):
        self.appended: list[tuple[_Slab, int]] = []
        self.created: list[_Slab] = []  # slabs it made
        self.hints: dict[_Slab, tuple[int, int]] = {}  # id ranges before it
        # Slabs it emptied: deleted when it commits (an undone change must
        # find every slab it started from).
        self.dropping: list[_Slab] = []
        # The tail slab it sealed (it started the next): unsealed if the
        # change is undone (and so kept mapped till then).
        self.sealed: list[_Slab] = []

    def _list_slabs_any(self) -> bool:
        return any(n.endswith(".slab") for n in os.listdir(self.path))

    def refresh(self) -> None:
        if self.slab_gen == self.meta.slab_gen:
            return
        known: list[list[int]] = [[], [], []]
        for name in os.listdir(self.path):
            if name.endswith(".slab") and name[0] in "mdf" and name[1:-5].isdigit():
                known["mdf".index(name[0])].append(int(name[1:-5]))
        for seqs in known:
            seqs.sort()
        self.known = known
        self.slab_gen = self.meta.slab_gen
        # Forget slabs that were deleted, or deleted and made again under
        # the same name (a change undone, then redone by another process).
        for key in [k for k, s in self.slabs.items() if k[1] not in known[k[0]] or not s.is_at_path()]:
            self.slabs.pop(key).close()

    def slab(self, log: int, seq: int) -> _Slab | None:
        if self.slab_gen != self.meta.slab_gen:
            self.refresh()
        s = self.slabs.get((log, seq))
        if s is not None:
            return s
        path = os.path.join(self.path, _slab_name(log, seq))
        self._unmap_idle()
        try:
            s = _Slab(path, log, seq)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _disk_error(path, exc) from exc
        self.slabs[(log, seq)] = s
        return s

    def _unmap_idle(self) -> None:
        """Let go of the oldest mapped slabs nothing refers to, past
        MAPPED_SLABS: not a log's head, cursor or tail, and not held by an
        entry, a scan or the change in progress (an object still referred to
        stays, so no slab is ever mapped twice: the undo record and the
        deletion of emptied slabs know a slab by its object)."""
        if len(self.slabs) < MAPPED_SLABS:
            return
        keep: set[tuple[int, int]] = set()
        for log, lm in enumerate(self.lms):
            keep.update(((log, int(lm.head_seq)), (log, int(lm.cursor_seq)), (log, int(lm.tail_seq))))
        excess = len(self.slabs) - MAPPED_SLABS + 1
        for key, refs in _refcounts(self.slabs):
            if excess <= 0:
                break
            if key not in keep and refs <= _IDLE_REFS:
                self.slabs.pop(key).close()
                excess -= 1

    def seqs(self, log: int) -> list[int]:
        self.refresh()
        return self.known[log]

    def tail(self, log: int) -> tuple[int, int]:
        lm = self.lms[log]
        return int(lm.tail_seq), int(lm.tail_off)

    def entries(self, log: int, start: tuple[int, int] | None = None,
                on_damage: Any = None, ends: dict[tuple[int, int], int] | None = None) -> Iterator[_Entry]:
        """Every sound entry of a log from ``start`` on, in log order. Damage
        is stepped over (never ends the scan early) and reported to
        ``on_damage(slab, offset, next_offset)``; ``ends`` gets, per slab,
        the offset where its records stop."""
        tail = self.tail(log)
        for seq in list(self.seqs(log)):
            if start is not None and seq < start[0]:
                continue
            try:
                slab = self.slab(log, seq)
            except CorruptSlab:
                if on_damage is not None:
                    on_damage(None, 0, 0)
                continue
            if slab is None:
                continue
            off = start[1] if start is not None and seq == start[0] else SLAB_HEADER_SIZE
            off = max(off, SLAB_HEADER_SIZE)
            end = slab.end(tail)
            while off + HEADER_SIZE <= end:
                e = _check_entry(slab, off, end)
                if e is not None:
                    yield e
                    off += e.size
                    continue
                skip = _skip_len(slab, off, end)
                if skip is not None:
                    off += skip
                    continue
                nxt = _resync(slab, off, end)
                if seq != tail[0] and nxt >= end and not any(slab.mm[off : off + HEADER_SIZE]):
                    break  # zeros and nothing sound after them: a sealed slab's unused end
                if on_damage is not None:
                    on_damage(slab, off, nxt)
                off = nxt
            if ends is not None:
                ends[(log, seq)] = min(off, end)

    def entry_at(self, log: int, seq: int, off: int) -> _Entry | None:
        """The entry at a position a scan under the same lock found sound,
        read again (None if its slab is gone)."""
        slab = self.slab(log, seq)
        return None if slab is None else _Entry(slab, off)

    def entries_at(self, log: int, positions: list[tuple[int, int]]) -> Iterator[_Entry]:
        """``entry_at`` for each position, one at a time."""
        for seq, off in positions:
            e = self.entry_at(log, seq, off)
            if e is not None:
                yield e

    def append(self, log: int, mid: int, payload: bytes, extra: bytes, enqueued_at: float,
               not_before: float = 0.0, attempts: int = 0, status: int = READY) -> tuple[int, int]:
        """Write one entry at the log's tail (lock held); returns (seq, offset)."""
        plen, elen = len(payload), len(extra)
        size = (HEADER_SIZE + plen + elen + 7) & ~7  # _align
        lm = self.lms[log]
        tail_seq = lm.tail_seq
        slab = self.slab(log, tail_seq) if tail_seq else None
        off = lm.tail_off
        if slab is None or off + size > slab.size:
            slab = self._new_slab(log, size)
            off = lm.tail_off
        crc32 = zlib.crc32
        crc = crc32(payload, crc32(
            _pack_immutable(ENTRY_MAGIC, plen, elen, mid, enqueued_at, not_before),
            slab.salt_crc,
        ))
        if elen:
            crc = crc32(extra, crc)
        body = off + HEADER_SIZE
        mm = slab.mm
        mm[body : body + plen] = payload
        if elen:
            mm[body + plen : body + plen + elen] = extra
        mm[off + MUT_OFF : off + MUT_OFF + 36] = _unowned_mut(status, attempts)
        if CRASH_AT:
            crash("append.before_header")
        _pack_head_into(mm, off, ENTRY_MAGIC, plen, elen, crc, mid, enqueued_at, not_before)
        hdr = slab.hdr
        lo, hi = hdr.min_id, hdr.max_id
        hints = self.hints
        if slab not in hints:
            hints[slab] = (lo, hi)  # put back if the change is undone
        hdr.live += 1
        if not lo or mid < lo:
            lo = hdr.min_id = mid
        if mid > hi:
            hi = hdr.max_id = mid
        hdr.pad = _hint_crc(lo, hi)
        if CRASH_AT:
            crash("append.after_header")
        lm.tail_off = off + size
        self.appended.append((slab, off))
        return slab.seq, off

    def _new_slab(self, log: int, size: int) -> _Slab:
        lm = self.meta.logs[log]
        old = self.slab(log, int(lm.tail_seq)) if lm.tail_seq else None
        seq = int(lm.tail_seq) + 1 if lm.tail_seq else max(self.seqs(log) or [0]) + 1
        # The delayed and failed logs are usually small: smaller slabs, so a
        # topic with one failed message does not reserve another 64 MiB.
        base = self.slab_size if log == MAIN else min(self.slab_size, SIDE_SLAB_SIZE)
        slab = _Slab.create(self.path, log, seq, max(base, SLAB_HEADER_SIZE + size), self.durable)
        self._unmap_idle()
        self.slabs[(log, seq)] = slab
        self.created.append(slab)
        if old is not None:
            old.hdr.end = lm.tail_off  # sealed: scanners stop here
            self.sealed.append(old)
            if lm.tail_off + HEADER_SIZE <= old.size:
                # Whatever a killed writer left past the tail is no entry:
                # zeros there end every scan of the sealed slab.
                old.mm[lm.tail_off : lm.tail_off + HEADER_SIZE] = bytes(HEADER_SIZE)
        lm.tail_seq, lm.tail_off = seq, SLAB_HEADER_SIZE
        if not lm.head_seq:
            lm.head_seq, lm.head_off = seq, SLAB_HEADER_SIZE
        if not lm.cursor_seq:
            lm.cursor_seq, lm.cursor_off = seq, SLAB_HEADER_SIZE
        self.meta.slab_gen += 1
        if old is not None and old.hdr.live <= 0:
            self.dropping.append(old)
        return slab

    def finished(self, e: _Entry) -> None:
        """An entry stopped being live: its slab may be empty now."""
        self.finished_at(e.slab)

    def finished_at(self, slab: _Slab) -> None:
        hdr = slab.hdr
        hdr.live = max(0, hdr.live - 1)
        if hdr.live == 0 and slab.seq != self.lms[slab.log].tail_seq and slab not in self.dropping:
            self.dropping.append(slab)  # deleted when the change commits

    def _drop_if_finished(self, slab: _Slab) -> None:
        # The live count says empty; a damaged count must not delete a slab
        # that still holds messages, so look before deleting (once a slab).
        live = 0
        for e in self.entries(slab.log, (slab.seq, SLAB_HEADER_SIZE)):
            if e.slab.seq != slab.seq:
                break
            if e.status in (READY, TAKEN):
                live += 1
        if live:
            slab.hdr.live = live
        else:
            self._drop_slab(slab)

    def _drop_slab(self, slab: _Slab) -> None:
        # Every entry is finished: the file goes. Processes that still map it
        # keep a valid mapping and see only finished entries there.
        lm = self.lms[slab.log]
        if CRASH_AT:
            crash("slab.before_delete")
        try:
            if slab.is_at_path():  # never another file given the same name
                os.unlink(slab.path)
        except FileNotFoundError:
            pass
        except OSError:
            return  # it stays, every entry finished, until a rebuild deletes it
        if CRASH_AT:
            crash("slab.after_delete")
        self.slabs.pop((slab.log, slab.seq), None)
        slab.close()
        self.meta.slab_gen += 1
        remaining = [s for s in self.seqs(slab.log) if s != slab.seq]
        # Head and cursor go to the first slab left at or after them (a
        # slab between them and the deleted one still holds entries).
        if lm.head_seq not in remaining:
            nxt = [s for s in remaining if s >= lm.head_seq]
            if nxt:
                lm.head_seq, lm.head_off = nxt[0], SLAB_HEADER_SIZE
        if lm.cursor_seq not in remaining:
            nxt = [s for s in remaining if s >= lm.cursor_seq]
            if nxt:
                lm.cursor_seq, lm.cursor_off = nxt[0], SLAB_HEADER_SIZE

