"""Durability: the group commit. One fsync covers every change made before
it, by any process: a caller whose change is covered returns, one thread
per process leads and one process at a time syncs (the ``sync`` flock).
The leader reads what to sync under the topic's lock (each log's slabs from
``synced_seq`` to the tail, and the older slabs durable changes marked
dirty), syncs outside it, and records the success, or a failed range that
no later success can erase (after a failed fsync the kernel may have
dropped the pages, and report the next fsync as fine). Also the sync of
every slab that comes before the clean mark of the last close.

Nothing here changes an entry or a counter a change counts; whether a
write must wait for the disk is the caller's choice (the fsync options).
"""

from __future__ import annotations

import fcntl
import os
import time
from typing import TYPE_CHECKING

from queuecore.errors import StorageError
from queuecore.slab.format import _slab_name
from queuecore.slab.slabfile import _disk_error, _fsync_dir

if TYPE_CHECKING:
    from queuecore.slab.topic import _Topic


def covered(t: _Topic, target_op: int) -> bool:
    """Whether an fsync that finished covers change ``target_op``;
    StorageError if one that failed covers it. ``synced_op`` is read
    first: the failed range only grows, so a failure that came before
    the success read here is seen by the check after it."""
    m = t.meta
    synced = m.synced_op
    if m.sync_error_from < target_op <= m.sync_error_op:
        raise StorageError(t.path, "an earlier fsync failed for this write")
    return bool(synced >= target_op)


def sync_topic(t: _Topic, target_op: int | None = None, meta: bool = False) -> None:
    """Group commit: one fsync covers every change made before it, by any
    process. A caller whose change is already covered returns at once."""
    if target_op is not None and covered(t, target_op):
        return
    leader = False
    try:
        with t.sync_cond:
            while True:
                if target_op is not None and covered(t, target_op):
                    return
                if not t.sync_leading:
                    leader = True
                    t.sync_leading = True
                    break
                t.sync_cond.wait()
        _sync_as_leader(t, target_op, meta)
    finally:
        if leader:
            with t.sync_cond:
                t.sync_leading = False
                t.sync_cond.notify_all()


def _sync_as_leader(t: _Topic, target_op: int | None, meta: bool) -> None:
    m = t.meta
    fcntl.flock(t.sync_fd, fcntl.LOCK_EX)  # one fsync at a time across processes
    try:
        if target_op is not None and covered(t, target_op):
            return  # another process's fsync covered it
        # What this fsync covers, read under the topic lock so that no
        # change is half made: every op up to op_seq, in the slabs from
        # each log's synced_seq to its tail, and from the lowest older
        # slab a durable change wrote (see dirty(); a write there from
        # now on marks it again, for the next fsync).
        with t.locked():
            upto = int(m.op_seq)
            low, using = t.dirty_low, t.dirty_using
            tails = [0, 0, 0]
            names: list[str] = []
            for log, lm in enumerate(t.lms):
                tail = tails[log] = int(lm.tail_seq)
                if not tail:
                    continue  # no slab in this log
                start = int(lm.synced_seq)
                mark = low[log]
                if mark or using[log]:
                    if using[log] and (not mark or using[log] < mark):
                        mark = int(using[log])
                    using[log], low[log] = mark, 0
                    start = min(start, mark)
                if start >= tail:  # the common case: the tail slab alone
                    names.append(_slab_name(log, tail))
                else:
                    names.extend(_slab_name(log, seq) for seq in t.seqs(log) if seq >= start)
            # A slab deleted since the last sync (its entries all
            # finished): the deletion is durable once the folder is.
            gen = int(m.slab_gen)
            sync_dir = gen != m.dir_synced_gen
        # Each file is opened by its name outside the lock and synced in
        # turn (a range of hundreds of slabs must not need hundreds of
        # descriptors at once). A file deleted meanwhile (its entries
        # all finished) is not synced, but its deletion must then be on
        # disk before this sync reports success: the folder is synced
        # too (whoever deleted it may sync it later, or never).
        opened: OSError | None = None
        try:
            for name in names:
                path = os.path.join(t.path, name)
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    sync_dir = True  # the deletion, instead of the file
                    continue
                except OSError as exc:
                    opened = exc
                    raise
                try:
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
            if sync_dir:
                _fsync_dir(t.path)
            if meta:
                # Counters are rebuilt from the slabs after a reboot, so
                # a put or take never waits for this one.
                t.meta_mm.flush()
        except OSError as exc:
            if exc is opened:  # EMFILE: no fsync failed, the marks are kept
                raise _disk_error(t.path, exc) from exc
            # Never retried into a false success: after a failed fsync
            # the kernel may drop the dirty pages and report the next
            # fsync as fine. The failed range only grows (a false error,
            # never a false success): it starts where the first failure
            # did and covers every change made until the failure was seen.
            with t.locked():
                if not m.sync_error_op:
                    m.sync_error_from = int(m.synced_op)
                m.sync_error_op = max(int(m.sync_error_op), upto, int(m.op_seq))
            raise _disk_error(t.path, exc) from exc
        with t.locked():
            m.synced_op = max(int(m.synced_op), upto)
            if sync_dir:
                m.dir_synced_gen = gen
            for log, lm in enumerate(t.lms):
                if tails[log] > lm.synced_seq:
                    lm.synced_seq = tails[log]
                if using[log]:
                    using[log] = 0
        t.ops_since_sync = 0
        t.last_sync = time.monotonic()
    finally:
        fcntl.flock(t.sync_fd, fcntl.LOCK_UN)


def sync_files(t: _Topic) -> bool:
    """Every slab and the folder on disk (lock held); False if an fsync
    failed. The last close runs it before it writes the clean mark: a
    first opener that finds the mark trusts the counters, even after a
    reboot, so the slabs they count must be on disk first."""
    try:
        for name in os.listdir(t.path):
            if name.endswith(".slab"):
                try:
                    fd = os.open(os.path.join(t.path, name), os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                try:
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
        _fsync_dir(t.path)
    except OSError:
        return False
    return True
