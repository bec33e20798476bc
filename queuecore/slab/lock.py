"""The topic's lock, held around every change and every read of its state:
a thread lock inside the process and, across processes, a robust
process-shared mutex in the meta file (queuecore/_mutex.py) or, where there
is none or ``DQ_LOCKING=flock``, a ``flock`` of the topic's ``lock`` file
(never ``lockf``: closing any descriptor of the file drops a POSIX lock).
The first process to open a topic chooses; every later opener follows.

Taking the lock is where a dead holder is found: its change is undone, or
a rebuild left pending is run, before the caller goes on (recovery.py does
both). Nothing here changes a counter or an entry itself.
"""

from __future__ import annotations

import fcntl
from typing import TYPE_CHECKING

from queuecore import _mutex
from queuecore.errors import StorageError
from queuecore.slab.format import LOCK_KIND_OFF, MUTEX_OFF

if TYPE_CHECKING:
    from queuecore.slab.topic import _Topic

_flock, _LOCK_EX, _LOCK_UN = fcntl.flock, fcntl.LOCK_EX, fcntl.LOCK_UN  # every change: no lookups
_mutex_lock, _mutex_unlock = _mutex.trylock if _mutex.AVAILABLE else None, _mutex.unlock if _mutex.AVAILABLE else None


class _Locked:
    """The topic's lock: a thread lock inside the process, and across
    processes a robust mutex in the meta file (or a flock of the lock file;
    see _mutex). Re-entrant: only the outermost level takes the second."""

    __slots__ = ("t", "depth")

    def __init__(self, t: _Topic) -> None:
        self.t = t
        self.depth = 0

    def __enter__(self) -> None:
        t = self.t
        t.tlock.acquire()
        if self.depth:
            self.depth += 1
            return
        try:
            mx = t.mutex
            if mx:
                rc = _mutex_lock(mx)  # type: ignore[misc]
                if rc:
                    _mutex.locked_with(mx, rc)  # held by another, or its holder died
            else:
                _flock(t.lock_fd, _LOCK_EX)
        except BaseException:
            if t.mutex:
                _mutex.release_if_mine(t.mutex)  # taken as a signal's exception came
            t.tlock.release()
            raise
        self.depth = 1
        try:
            if t.intent.active:
                t._recover_crash()
            elif t.meta.needs_recount:
                t._recount()
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1
        t = self.t
        if not self.depth:
            mx = t.mutex
            if mx:
                _mutex_unlock(mx)  # type: ignore[misc]
            elif t.lock_fd >= 0:  # not closed meanwhile (by a signal handler of this thread)
                _flock(t.lock_fd, _LOCK_UN)
        t.tlock.release()


def choose_lock(t: _Topic, alone: bool) -> None:
    """A robust process-shared mutex in the meta file when this platform
    has one (see _mutex), else a flock of the lock file: sets ``t.mutex``.
    The first opener (``alone``) chooses and, for a mutex, makes it new (a
    mutex left looking held by a reboot, or by a copy of the file, is never
    waited on); every later opener follows its choice."""
    kind = slice(LOCK_KIND_OFF, LOCK_KIND_OFF + len(_mutex.KIND))
    if alone:
        if _mutex.wanted():
            try:
                _mutex.init(t.meta_addr + MUTEX_OFF)
            except OSError as exc:
                raise StorageError(t.path, f"cannot make the topic's lock: {exc}") from exc
            t.meta_mm[kind] = _mutex.KIND
        else:
            t.meta_mm[kind] = bytes(len(_mutex.KIND))
    if t.meta_mm[kind] != _mutex.KIND:
        t.mutex = 0
    elif _mutex.AVAILABLE:
        t.mutex = t.meta_addr + MUTEX_OFF
    else:
        raise StorageError(t.path, "the processes that have this topic open lock it with a "
                                   "process-shared mutex, which this process cannot use")
