"""Recovery: what the counters are worth when a topic is opened, and making
them right when they are not. At open, within one boot of the machine the
counters are exact whatever processes died (meta and slabs share the page
cache, and every cut change is undone by the next lock holder); after a
reboot, or for a copied meta file, they are rebuilt from the slabs. A lock
holder that died mid-change left the undo record: its counters are put
back, the whole entries it appended adopted, its change counted if the
entry shows it was made. A rebuild reads every log (stepping over damage,
counted as dropped) and sets every gauge, position and slab hint.

Runs with the topic's lock held (lock.py calls in when it finds a dead
holder or a rebuild left pending); never syncs the slabs, never decides
what a message's next state is.
"""

from __future__ import annotations

import mmap
from typing import TYPE_CHECKING

from queuecore.slab.format import (
    DELAYED,
    DONE,
    FAILED,
    HEADER_SIZE,
    MAIN,
    META_HDR,
    META_MAGIC,
    MOVED,
    OP_COMPLETE,
    OP_EXTEND,
    OP_FAIL,
    OP_MOVE,
    OP_RECLAIM,
    OP_RETRY,
    READY,
    SLAB_HEADER_SIZE,
    SNAPSHOT_OFF,
    TAKEN,
)
from queuecore.slab.slabfile import (
    _check_entry,
    _disk_error,
    _Entry,
    _fsync_dir,
    _mend_deadline,
    _Slab,
    _write_skip,
)

if TYPE_CHECKING:
    from queuecore.slab.topic import _Topic


def _read_boot_id() -> tuple[int, int]:
    """This boot of the machine as two 64-bit halves; (0, 0) if unknown."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            n = int(fh.read().strip().replace("-", ""), 16)
    except (OSError, ValueError):
        return 0, 0
    return n >> 64, n & 0xFFFFFFFFFFFFFFFF


_BOOT = _read_boot_id()


def open_counters(t: _Topic, meta_path: str, meta_file: tuple[int, int], alone: bool) -> None:
    """At open (lock held): a new meta file is made a topic's; counters a
    dead holder's change or a reboot may have left wrong are undone or
    rebuilt; the boot and the meta file are noted; a clean mark is written
    away (to disk) before any change."""
    if t.meta.magic != META_MAGIC:
        if t._list_slabs_any():
            # Counters lost but slabs are there: rebuild from the slabs.
            t.meta.needs_recount = 1
        t.meta.magic = META_MAGIC
        if t.meta.next_id == 0:
            t.meta.next_id = 1
        # The new meta file's name on disk: a topic is listed by its meta.
        _fsync_dir(t.path)
    # The first process to open the topic since everyone closed it
    # checks that the last one closed cleanly; if not, and the
    # machine rebooted since (an OS crash, a power loss: the slabs on
    # disk may be older or newer than the counters), it rebuilds the
    # counters from the slabs. Processes killed in this boot left
    # exact counters (every change is undone or finished by the next
    # lock holder), so they need no rebuild.
    m = t.meta
    same_boot = _BOOT != (0, 0) and (m.boot_hi, m.boot_lo) == _BOOT
    same_boot = same_boot and (m.meta_dev, m.meta_ino) == meta_file
    if t.intent.active:
        t._recover_crash()
    elif m.needs_recount or (alone and not m.clean and not same_boot):
        t._recount()
        if alone and not same_boot:
            # A new boot: the counters are those of the slabs on disk
            # now, and no one waits on a failed fsync any more.
            m.sync_error_from = m.sync_error_op = 0
    m.boot_hi, m.boot_lo = _BOOT
    m.meta_dev, m.meta_ino = meta_file
    if alone:
        m.waiters = m.room_waiters = 0
    if m.clean:
        # On disk now, before any change: a power loss must never
        # leave 'clean' there with the counters of the last close
        # and slabs written since (the next open would trust them).
        m.clean = 0
        try:
            t.meta_mm.flush()
        except OSError as exc:
            raise _disk_error(meta_path, exc) from exc


def recover_crash(t: _Topic) -> None:
    """The last lock holder died mid-change: put back the counters it
    started from, count its change if the entry shows it was made, adopt
    whole entries it appended, and rebuild every gauge from the slabs."""
    i = t.intent
    op, log, seq, off = i.op, i.log, i.seq, i.off
    gen_before = int(t.meta.slab_gen)
    t.meta_mm[0:META_HDR] = t.meta_mm[SNAPSHOT_OFF : SNAPSHOT_OFF + META_HDR]
    # The dead change may have made or deleted slabs: every process
    # lists them again (the restored generation may be one they hold).
    t.meta.slab_gen = max(int(t.meta.slab_gen), gen_before) + 1
    first_new_id = int(t.meta.next_id)
    t.slab_gen = -1
    _lost, adopted = adopt_beyond_tails(t)
    t.meta.enqueued += sum(1 for lg, mid in adopted if lg == MAIN and mid >= first_new_id)
    slab = t.slab(log, seq) if seq else None
    if seq and slab is None:
        # The change's slab is gone: slabs a change empties are deleted
        # when it commits, after every write of it, so it was made.
        if op == OP_COMPLETE:
            t.meta.completed += 1
        elif op == OP_RETRY:
            t.meta.retried += 1
    elif slab is not None and off + HEADER_SIZE <= slab.size:
        if op == OP_EXTEND:
            _mend_deadline(slab, off)  # its holder, the lease's owner, died: it ends at the next look
        e = _Entry(slab, off)
        if op in (OP_RETRY, OP_RECLAIM, OP_FAIL, OP_MOVE) and e.status != MOVED and any(
            mid == e.id for _, mid in adopted
        ):
            # The copy was written whole: finish the move rather than
            # leave the message in two places.
            e.set(MOVED)
        if op == OP_COMPLETE and e.status == DONE:
            t.meta.completed += 1
        elif op == OP_RETRY and e.status == MOVED:
            t.meta.retried += 1
    t._recount()
    t.meta.op_seq += 1
    i.active = 0


def recount(t: _Topic) -> None:
    """Rebuild every gauge and cursor from the slabs (lock held): after a
    crash, a power loss, or damage found at run time."""
    m = t.meta
    m.needs_recount = 1  # until it is done: a rebuild cut short by a kill is started again
    t.slab_gen = -1
    t.refresh()
    dropped = 0

    def damaged(slab: _Slab | None, off: int, nxt: int) -> None:
        nonlocal dropped
        dropped += 1
        if slab is not None:
            _write_skip(slab, off, nxt)

    lost_tails, _ = adopt_beyond_tails(t)
    counts = [0, 0, 0]
    taken = 0
    next_due = 0.0
    max_id = 0
    for log in (MAIN, DELAYED, FAILED):
        lm = m.logs[log]
        first_live: tuple[int, int] | None = None
        first_ready: tuple[int, int] | None = None
        live: dict[int, int] = {}
        ids: dict[int, tuple[int, int]] = {}
        ends: dict[tuple[int, int], int] = {}
        # Entries come slab by slab: keep each slab's figures in locals
        # (this loop runs once per message after a reboot).
        cur, lo, hi, n_live = -1, 0, 0, 0
        for e in t.entries(log, None, damaged, ends):
            mid, seq, status = e.id, e.slab.seq, e.status
            if seq != cur:
                if cur >= 0:
                    ids[cur], live[cur] = (lo, hi), n_live
                cur, lo, hi, n_live = seq, mid, mid, 0
            elif mid < lo:
                lo = mid
            elif mid > hi:
                hi = mid
            if mid > max_id:
                max_id = mid
            if status == READY or status == TAKEN:
                n_live += 1
                if first_live is None:
                    first_live = (seq, e.off)
                if status == READY:
                    counts[log] += 1
                    if first_ready is None:
                        first_ready = (e.slab.seq, e.off)
                    if log == DELAYED:
                        next_due = e.not_before if not next_due else min(next_due, e.not_before)
                elif log == MAIN:
                    taken += 1
                else:  # only the main log leases
                    e.set(READY)
                    counts[log] += 1
        if cur >= 0:
            ids[cur], live[cur] = (lo, hi), n_live
        for seq in list(t.seqs(log)):
            slab = t.slab(log, seq)
            if slab is not None:
                slab.hdr.live = live.get(seq, 0)
                slab.set_hints(*ids.get(seq, (0, 0)))
                slab.hdr.end = 0 if seq == lm.tail_seq else ends.get((log, seq), slab.hdr.end)
                if not slab.hdr.live and seq != lm.tail_seq:
                    t._drop_slab(slab)  # left behind by a crash
        tail = (int(lm.tail_seq), int(lm.tail_off))
        lm.head_seq, lm.head_off = first_live or tail
        lm.cursor_seq, lm.cursor_off = first_ready or tail
    m.ready, m.delayed, m.failed, m.in_progress = counts[MAIN], counts[DELAYED], counts[FAILED], taken
    m.next_due = next_due
    m.next_id = max(int(m.next_id), max_id + 1)
    m.enqueued = max(int(m.enqueued), 0)
    # A slab that lost its end with no partial entry left to see.
    m.dropped += max(dropped, lost_tails)
    m.needs_recount = 0
    m.lease_min = 0.0  # not known: the next look for ended leases scans
    m.slab_gen += 1  # every process lists the slabs again
    t.slab_gen = -1
    # The scan mapped every page of every slab into this process: let
    # them go (the data stays in the page cache, and on disk), so a
    # consumer's memory does not grow with the backlog it recounted.
    for slab in t.slabs.values():
        try:
            slab.mm.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError, AttributeError):
            pass  # only an optimisation


def adopt_beyond_tails(t: _Topic) -> tuple[int, list[tuple[int, int]]]:
    """Sound entries past a log's recorded tail were written by a process
    that died before recording them (or before a power loss): keep them.
    Returns how many tail slabs were found shorter than their tail, and
    the (log, id) of each entry adopted."""
    lost = 0
    adopted: list[tuple[int, int]] = []
    for log in (MAIN, DELAYED, FAILED):
        lm = t.meta.logs[log]
        seqs = t.seqs(log)
        if not seqs:
            lm.tail_seq = lm.tail_off = 0
            continue
        if lm.tail_seq not in seqs:
            lm.tail_seq, lm.tail_off = seqs[-1], SLAB_HEADER_SIZE
        for seq in [s for s in seqs if s >= lm.tail_seq]:
            slab = t.slab(log, seq)
            if slab is None:
                continue
            if seq == lm.tail_seq and lm.tail_off > slab.size:
                lm.tail_off = slab.size  # the file was cut short
                lost += 1
            off = int(lm.tail_off) if seq == lm.tail_seq else SLAB_HEADER_SIZE
            if seq != lm.tail_seq:
                cur = t.slab(log, int(lm.tail_seq))
                if _check_entry(slab, off, slab.size) is None:
                    break
                if cur is not None:
                    cur.hdr.end = lm.tail_off
                lm.tail_seq = seq
            while True:
                e = _check_entry(slab, off, slab.size)
                if e is None:
                    break
                adopted.append((log, e.id))
                off += e.size
            lm.tail_off = off
        if not lm.head_seq or lm.head_seq not in seqs:
            lm.head_seq, lm.head_off = seqs[0], SLAB_HEADER_SIZE
        if not lm.cursor_seq or lm.cursor_seq not in seqs:
            lm.cursor_seq, lm.cursor_off = seqs[0], SLAB_HEADER_SIZE
    return lost, adopted
