"""Process-shared robust mutexes, kept in a mapped file.

A topic's lock is taken around every put, take and settle. A ``flock`` is a
system call to take and another to release (~1.2 us the pair, with the
thread lock); a pthread mutex in the topic's mapped meta file is taken in
user space when nobody else holds it (~0.5 us through ctypes). It is
*robust*: when its holder dies (kill -9 included), the kernel marks it, and
the next taker gets EOWNERDEAD, takes it over and finds the undo record of
the dead holder's change, just as after a flock the kernel dropped. It is
initialised by the first process to open the topic (no other has it open:
a mutex a reboot left looking held, or a copied file, is made new).

Linux with glibc or musl only; elsewhere, or with ``DQ_LOCKING=flock`` in the
environment of the first process to open a topic, topics use flock. Every
process follows what the topic's first opener chose.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import threading
import time

SIZE = 64  # bytes reserved for a pthread_mutex_t (40 on x86-64, 48 on arm64)
KIND = b"PTHMTX01"  # written beside it when topics of the directory use it

_PTHREAD_PROCESS_SHARED = 1
_PTHREAD_MUTEX_ROBUST = 1

# A waiting lock wakes this often so that Python runs signal handlers (a
# Ctrl-C must interrupt a put stuck behind another process's lock).
_WAIT_SLICE = 0.05


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _glibc() -> bool:
    try:  # a confstr, not platform.libc_ver(), which reads the interpreter's binary
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):
        return False


AVAILABLE = False
_attr = ctypes.create_string_buffer(64)  # a pthread_mutexattr_t (4 bytes on Linux)
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    trylock = _libc.pthread_mutex_trylock
    unlock = _libc.pthread_mutex_unlock
    _consistent = _libc.pthread_mutex_consistent
    _timedlock = _libc.pthread_mutex_timedlock
    _init = _libc.pthread_mutex_init
    for _f in (trylock, unlock, _consistent):
        _f.argtypes = [ctypes.c_void_p]
        _f.restype = ctypes.c_int
    _timedlock.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Timespec)]
    _timedlock.restype = ctypes.c_int
    _init.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    _init.restype = ctypes.c_int
    AVAILABLE = (
        sys.platform.startswith("linux")
        # glibc's layout: the lock word holds the owner's thread id (see
        # release_if_mine); elsewhere, flock.
        and _glibc()
        and _libc.pthread_mutexattr_init(_attr) == 0
        and _libc.pthread_mutexattr_setpshared(_attr, _PTHREAD_PROCESS_SHARED) == 0
        and _libc.pthread_mutexattr_setrobust(_attr, _PTHREAD_MUTEX_ROBUST) == 0
    )
except (OSError, AttributeError):
    AVAILABLE = False


def wanted() -> bool:
    """Whether a first opener should lock a new topic with a mutex."""
    return AVAILABLE and os.environ.get("DQ_LOCKING", "").lower() != "flock"


def init(addr: int) -> None:
    """Make a fresh mutex at ``addr`` (only while no other process can use it)."""
    ctypes.memset(addr, 0, SIZE)
    rc = _init(addr, _attr)
    if rc:
        raise OSError(rc, os.strerror(rc))


def acquire(addr: int) -> None:
    """Take the mutex; a holder that died leaves its change to be undone by
    the caller (the topic's undo record), as after a flock was dropped."""
    rc = trylock(addr)
    if rc:
        locked_with(addr, rc)


def locked_with(addr: int, rc: int) -> None:
    """After ``trylock`` returned ``rc`` (not 0): wait for the mutex, in
    slices so that signal handlers run (an exception they raise leaves the
    mutex to ``release_if_mine``). EOWNERDEAD: taken over from a dead
    holder. Anything else is raised, the mutex not held."""
    while True:
        if rc == 0:
            return
        if rc == errno.EOWNERDEAD:
            _consistent(addr)
            return
        if rc not in (errno.EBUSY, errno.ETIMEDOUT):
            raise OSError(rc, os.strerror(rc))
        until = time.time() + _WAIT_SLICE
        ts = _Timespec(int(until), int((until % 1) * 1e9))
        rc = _timedlock(addr, ctypes.byref(ts))


def release_if_mine(addr: int) -> None:
    """After an exception between taking the mutex and its caller noting it
    (a KeyboardInterrupt raised as the ctypes call returned): let go of it
    if this thread holds it (glibc keeps the owner's thread id in the low 30
    bits of the lock word), so no process waits on it forever."""
    if addr and ctypes.c_uint32.from_address(addr).value & 0x3FFFFFFF == threading.get_native_id():
        _consistent(addr)  # taken with EOWNERDEAD and not yet marked: EINVAL otherwise, harmless
        unlock(addr)
