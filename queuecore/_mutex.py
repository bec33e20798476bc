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

SIZE = 64  # bytes reserved for a pthread_mutex_t (40 on x86-64, 48 on arm64)
KIND = b"PTHMTX01"  # written beside it when topics of the directory use it

_PTHREAD_PROCESS_SHARED = 1
_PTHREAD_MUTEX_ROBUST = 1

AVAILABLE = False
_attr = ctypes.create_string_buffer(64)  # a pthread_mutexattr_t (4 bytes on Linux)
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    lock = _libc.pthread_mutex_lock
    unlock = _libc.pthread_mutex_unlock
    _consistent = _libc.pthread_mutex_consistent
    _init = _libc.pthread_mutex_init
    for _f in (lock, unlock, _consistent):
        _f.argtypes = [ctypes.c_void_p]
        _f.restype = ctypes.c_int
    _init.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    _init.restype = ctypes.c_int
    AVAILABLE = (
        sys.platform.startswith("linux")
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
    rc = lock(addr)
    if rc:
        locked_with(addr, rc)


def locked_with(addr: int, rc: int) -> None:
    """After ``lock`` returned ``rc`` (not 0): EOWNERDEAD means taken over
    from a dead holder; anything else is raised (the mutex is not held)."""
    if rc == errno.EOWNERDEAD:
        _consistent(addr)
        return
    raise OSError(rc, os.strerror(rc))
