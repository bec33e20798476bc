"""One topic in one process: its folder's files (``meta`` mapped, ``lock``,
``sync``, ``bell``, ``users``), opening and closing them, and the parts a
topic is made of: its logs of slabs (log.py), its lock (lock.py), its
change record (change.py), what recovery does at open (recovery.py), the
dirty marks the group commit reads (durability.py) and the bell waiting
takers watch (queuecore/_wake.py).

Knows no message operation (put, take, settle: operations.py) and no
option but the two the logs need; never fsyncs but at the last close.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import threading
import time

from queuecore import _mutex, _wake
from queuecore.slab.change import _Change
from queuecore.slab.durability import sync_files
from queuecore.slab.format import INTENT_OFF, META_SIZE, _Intent, _Meta
from queuecore.slab.lock import _Locked, choose_lock
from queuecore.slab.log import _Logs
from queuecore.slab.recovery import open_counters, recount, recover_crash
from queuecore.slab.slabfile import _disk_error


class _Topic(_Logs):
    def __init__(self, name: str, path: str, slab_size: int, durable: bool) -> None:
        super().__init__(path, slab_size, durable)
        self.name = name
        self.tlock = threading.RLock()
        # Group commit inside the process: one thread (the leader) fsyncs,
        # the others wait on the condition and return when it covered them.
        self.sync_cond = threading.Condition(threading.Lock())
        self.sync_leading = False
        self.ops_since_sync = 0
        self.last_sync = time.monotonic()
        self._locked = _Locked(self)
        self._change = _Change(self)
        # ``with t.change(op, slab, off):`` one change (see change.py).
        self.change = self._change.begin
        os.makedirs(path, exist_ok=True)
        self.lock_fd = self.sync_fd = self.bell_fd = self.users_fd = -1
        self.mutex = 0  # the address of the topic's mutex; 0: a flock instead
        try:
            self._open(path)
        except BaseException:
            self._abandon()  # the flocks held go with their files
            raise

    # After a dead holder's change, or with a rebuild pending (recovery.py).
    _recover_crash = recover_crash
    _recount = recount

    def _open(self, path: str) -> None:
        self.lock_fd = os.open(os.path.join(path, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.sync_fd = os.open(os.path.join(path, "sync"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.bell_path = os.path.join(path, "bell")
        self.bell_fd = os.open(self.bell_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.users_fd = os.open(os.path.join(path, "users"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        # Idle watches of the bell, one per thread that waited at once.
        self.watches: list[_wake.Watch] = []
        self.closed = False
        meta_path = os.path.join(path, "meta")
        # Openers and closers exclude each other: whether this one is the
        # first (below) must not change while it looks and chooses the lock.
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        try:
            fd = os.open(meta_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                if os.fstat(fd).st_size < META_SIZE:
                    try:
                        os.posix_fallocate(fd, 0, META_SIZE)
                    except OSError as exc:
                        raise _disk_error(meta_path, exc) from exc
                self.meta_mm = mmap.mmap(fd, META_SIZE)
                st = os.fstat(fd)
                meta_file = (st.st_dev & 0xFFFFFFFFFFFFFFFF, st.st_ino & 0xFFFFFFFFFFFFFFFF)
            finally:
                os.close(fd)
            self.meta = _Meta.from_buffer(self.meta_mm)
            # Each ``meta.logs[i]`` builds a new ctypes object: keep three.
            self.lms = tuple(self.meta.logs[i] for i in range(3))
            self.dirty_low = self.meta.dirty_low
            self.dirty_using = self.meta.dirty_using
            self.meta_addr = ctypes.addressof(self.meta)
            self.intent = _Intent.from_buffer(self.meta_mm, INTENT_OFF)
            # The first process to open the topic since everyone closed it
            # (no other holds 'users') makes its lock new: see choose_lock.
            alone = True
            try:
                fcntl.flock(self.users_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                alone = False
            choose_lock(self, alone)
            with self.locked():
                open_counters(self, meta_path, meta_file, alone)
                # Shared while this process has the topic open: the last to
                # close it is the one that can take it exclusively.
                fcntl.flock(self.users_fd, fcntl.LOCK_SH)
        finally:
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)

    def _abandon(self) -> None:
        """Close every file of the topic (a failed open, or a close), so no
        flock is left held."""
        self.mutex = 0  # it lives in the meta map, about to go: a late user's flock(-1) raises
        for s in self.slabs.values():
            s.close()
        self.slabs.clear()
        for name in ("meta", "lms", "dirty_low", "dirty_using", "intent"):
            self.__dict__.pop(name, None)
        mm = self.__dict__.pop("meta_mm", None)
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # a view is still referenced somewhere; freed with it
        for fd in (self.lock_fd, self.sync_fd, self.bell_fd, self.users_fd):
            if fd >= 0:
                os.close(fd)
        self.lock_fd = self.sync_fd = self.bell_fd = self.users_fd = -1

    def locked(self) -> _Locked:
        """``with t.locked():`` holds the topic's lock (see lock.py)."""
        return self._locked

    def dirty(self, log: int, seq: int) -> None:
        """A change that must be durable wrote to slab ``seq`` (lock held):
        the next fsync covers it even if that slab was synced before (the
        group commit syncs the slabs from ``synced_seq`` to the tail, and
        from the lowest slab marked here)."""
        low = self.dirty_low
        if seq > 0 and (not low[log] or seq < low[log]):
            low[log] = seq

    # -- waiting takers -----------------------------------------------------------
    def watch(self) -> _wake.Watch:
        """A watch of the bell for one waiting thread, rings before now
        forgotten; give it back with ``t.give_back(w)``."""
        try:
            w = self.watches.pop()
        except IndexError:
            return _wake.Watch(self.bell_path)
        w.drain()
        return w

    def give_back(self, w: _wake.Watch) -> None:
        if w.fd < 0:
            return  # inotify refused (too many instances): try again next time
        if self.closed:
            w.close()
        else:
            self.watches.append(w)

    def forget(self) -> None:
        """In a forked child: let go of the parent's files without unlocking
        them (see SlabBackend._forked); the child opens the topic afresh."""
        for fd in (self.lock_fd, self.sync_fd, self.bell_fd, self.users_fd, *(w.fd for w in self.watches)):
            try:
                os.close(fd)
            except OSError:
                pass
        for slab in self.slabs.values():  # the child maps what it reads itself
            slab.close()
        self.slabs.clear()
        self.mutex = 0  # nor takes its parent's topic locks (flock(-1) raises if it tries)

    def close(self) -> None:
        # Under the thread lock: no other thread of this process is in the
        # middle of a change (its mutex must never be made new by an opener
        # who finds this process gone), and none starts one on unmapped files.
        with self.tlock:
            self.closed = True
            for s in self.slabs.values():
                s.close()
            self.slabs.clear()
            try:
                # The last process out marks the topic clean, so the next first
                # opener can skip the rebuild, even after a reboot: the slabs
                # are on disk before the mark is.
                fcntl.flock(self.users_fd, fcntl.LOCK_UN)
                fcntl.flock(self.lock_fd, fcntl.LOCK_EX)  # against openers
                held = 0
                try:
                    if self.mutex and self._locked.depth:
                        # Closed from inside a change of this same thread (a
                        # signal handler): the mutex is ours already.
                        held = self.mutex
                    elif self.mutex:
                        _mutex.acquire(self.mutex)  # against changes
                        held = self.mutex
                    try:
                        fcntl.flock(self.users_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        last = True
                    except BlockingIOError:
                        last = False
                    m = self.meta
                    # Not after a failed fsync (the kernel may have dropped
                    # pages the counters count) nor with a rebuild pending.
                    trusted = not (self.intent.active or m.sync_error_op or m.needs_recount)
                    if last and trusted and sync_files(self):
                        m.waiters = m.room_waiters = 0
                        m.clean = 1
                        try:
                            self.meta_mm.flush()
                        except OSError:
                            m.clean = 0  # not known to be on disk: the next open decides
                finally:
                    if held:
                        _mutex.unlock(held)
                    elif self.mutex:
                        _mutex.release_if_mine(self.mutex)  # taken as a signal's exception came
                    fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
            finally:
                self._abandon()
                while self.watches:
                    self.watches.pop().close()
