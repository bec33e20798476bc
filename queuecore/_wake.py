"""Cross-process wake-ups: a taker waiting on an empty topic sleeps in
``select`` on an inotify watch of the topic's ``bell`` file; a producer that
sees waiters writes one byte to the bell. No busy loop, and a wake-up within
a fraction of a millisecond. Where inotify is missing (or the user's inotify
instances are used up), waiting falls back to looking every 20 ms."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import time

_IN_MODIFY = 0x00000002
_IN_ATTRIB = 0x00000004
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    _init1 = _libc.inotify_init1
    _add_watch = _libc.inotify_add_watch
    _add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    HAVE_INOTIFY = True
except (OSError, AttributeError):  # not Linux
    HAVE_INOTIFY = False


FALLBACK_POLL = 0.02  # seconds between looks of a waiter without a watch


class Watch:
    """Watches one bell file; created before the caller checks the topic so
    that a ring between the check and the wait is never missed."""

    __slots__ = ("fd",)

    def __init__(self, bell_path: str) -> None:
        self.fd = -1
        if not HAVE_INOTIFY:
            return
        fd = _init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            return
        if _add_watch(fd, os.fsencode(bell_path), _IN_MODIFY | _IN_ATTRIB) < 0:
            os.close(fd)
            return
        self.fd = fd

    def drain(self) -> None:
        """Forget the rings so far (the caller is about to look)."""
        if self.fd >= 0:
            try:
                while os.read(self.fd, 4096):
                    pass
            except BlockingIOError:
                pass

    def wait(self, timeout: float) -> None:
        if timeout <= 0:
            return
        if self.fd < 0:
            # No inotify here (or the per-user limit of instances reached):
            # look again soon, not so soon that idle waiters burn a core.
            time.sleep(min(timeout, FALLBACK_POLL))
            return
        # poll, not select: select refuses descriptors past 1024, which a
        # process with many topics, slabs or sockets soon has.
        p = select.poll()
        p.register(self.fd, select.POLLIN)
        if p.poll(timeout * 1000.0):
            self.drain()

    def close(self) -> None:
        # Slow (the kernel waits for a grace period, milliseconds): watches
        # are kept and reused, closed only with their topic.
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ring(bell_fd: int) -> None:
    """Wake every process waiting on this bell."""
    try:
        os.pwrite(bell_fd, b"\x01", 0)
    except OSError:
        pass  # a wake-up is an optimisation; waiters also wake on their timeout
