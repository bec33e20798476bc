"""The slab backend: a directory of preallocated, memory-mapped slab files.

Layout of a queue directory (see docs/queuecore.md for the byte formats)::

    <root>/<topic>/meta            fixed-size counters, cursors and an undo record
    <root>/<topic>/lock            flock'ed around every change of the topic
    <root>/<topic>/users           flock'ed shared by every process that opened the topic
    <root>/<topic>/bell            written to wake takers waiting in other processes
    <root>/<topic>/m000000000001.slab   the main log: ready, in-progress and done entries
    <root>/<topic>/d000000000001.slab   the delayed log: retries waiting for their time
    <root>/<topic>/f000000000001.slab   the failed log: failed messages with their errors
    <root>/.owners/<owner>.lock    flock'ed by each taking process while it lives
    <root>/.consumers/<key>.json   consumer heartbeats

Every change happens under the topic's ``flock`` (never ``lockf``: closing any
descriptor of the file would drop a POSIX lock) plus a thread lock. A message
becomes ready only by being appended, so the take cursor only moves forward.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import math
import mmap
import os
import random
import secrets
import socket
import struct
import sys
import threading
import time
import weakref
import zlib
from collections.abc import Iterator
from typing import Any

import msgpack

from queuecore import _mutex, _wake
from queuecore.backend import Backend, Delivery, Lease, Record
from queuecore.defaults import DEFAULTS, MAX_ERRORS_KEPT
from queuecore.errors import (
    CorruptSlab,
    DiskFull,
    InvalidOption,
    InvalidTopic,
    MessageNotFound,
    QueueError,
    QueueFull,
    StorageError,
)

# -- on-disk format ------------------------------------------------------------

META_MAGIC = b"DQMETA01"
SLAB_MAGIC = b"DQSLAB01"
ENTRY_MAGIC = 0x31455144  # b"DQE1" little-endian
SKIP_MAGIC = 0x50494B53  # b"SKIP": a damaged region recovery stepped over
ENTRY_MAGIC_BYTES = struct.pack("<I", ENTRY_MAGIC)

# Entry statuses: any two differ in at least four bits, so one flipped bit
# never turns a status into another; an unknown status reads as READY
# (a duplicate delivery is acceptable, a loss is not).
READY = 0x3C
TAKEN = 0xC3
DONE = 0xA5
MOVED = 0x5A
STATUS_NAMES = {READY: "ready", TAKEN: "in_progress", DONE: "completed", MOVED: "moved"}

MAIN, DELAYED, FAILED = 0, 1, 2
LOG_PREFIX = ("m", "d", "f")

# Entry header, 80 bytes, then payload, then extra (msgpack of the errors),
# padded to 8 bytes. The CRC covers every field that never changes
# (magic, lengths, id, enqueue time, due time), the payload and the extra,
# seeded with the slab's salt so a payload that holds an image of an entry
# never passes for one. The mutable part (status, attempts, lease) has a CRC
# of its own.
HEAD = struct.Struct("<IIIIQdd")  # magic plen xlen crc id enqueued_at not_before
IMMUTABLE = struct.Struct("<IIIQdd")  # the same without the crc, for computing it
MUT = struct.Struct("<B3xIQQdI")  # status attempts owner token deadline mcrc
MUT_BODY = struct.Struct("<B3xIQQd")
MUT_SIZE = MUT.size
HEADER_SIZE = 80
MUT_OFF = 40
SLAB_HEADER_SIZE = 128


class _SlabHeader(ctypes.Structure):
    _fields_ = [
        ("magic", ctypes.c_char * 8),
        ("seq", ctypes.c_uint64),
        ("salt", ctypes.c_uint64),
        ("created", ctypes.c_double),
        ("live", ctypes.c_int64),  # entries not finished (ready/taken in main; live in others)
        ("min_id", ctypes.c_uint64),
        ("max_id", ctypes.c_uint64),
        ("end", ctypes.c_uint64),  # set when the slab is sealed (a hint: scans go past it)
        # A second copy of the salt and a CRC of the fields that never change,
        # so one flipped bit in the header cannot make every entry unreadable.
        ("salt2", ctypes.c_uint64),
        ("hcrc", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),  # CRC of min_id and max_id: whether lookups may trust them
    ]


_HINTS = struct.Struct("<QQ")


def _hint_crc(lo: int, hi: int) -> int:
    return zlib.crc32(_HINTS.pack(lo, hi))


def _header_crc(seq: int, salt: int, created: float) -> int:
    return zlib.crc32(struct.pack("<QQd", seq, salt, created))


class _LogMeta(ctypes.Structure):
    _fields_ = [
        ("head_seq", ctypes.c_uint64),  # first slab that may hold unfinished entries
        ("head_off", ctypes.c_uint64),
        ("cursor_seq", ctypes.c_uint64),  # main log: nothing before the cursor is ready
        ("cursor_off", ctypes.c_uint64),
        ("tail_seq", ctypes.c_uint64),  # where the next entry goes (0: no slab yet)
        ("tail_off", ctypes.c_uint64),
        ("synced_seq", ctypes.c_uint64),  # slabs before this one are on disk
    ]


class _Meta(ctypes.Structure):
    _fields_ = [
        ("magic", ctypes.c_char * 8),
        ("next_id", ctypes.c_uint64),
        ("enqueued", ctypes.c_uint64),
        ("completed", ctypes.c_uint64),
        ("retried", ctypes.c_uint64),
        ("ready", ctypes.c_int64),
        ("delayed", ctypes.c_int64),
        ("in_progress", ctypes.c_int64),
        ("failed", ctypes.c_int64),
        ("dropped", ctypes.c_uint64),
        ("op_seq", ctypes.c_uint64),
        ("synced_op", ctypes.c_uint64),
        ("next_due", ctypes.c_double),
        ("last_reclaim", ctypes.c_double),
        ("waiters", ctypes.c_int64),
        ("slab_gen", ctypes.c_uint64),
        ("sync_error_op", ctypes.c_uint64),
        ("clean", ctypes.c_uint32),
        ("needs_recount", ctypes.c_uint32),
        ("room_waiters", ctypes.c_int64),  # puts waiting for room under max_queue_size
        ("logs", _LogMeta * 3),
        ("sync_error_from", ctypes.c_uint64),  # a failed fsync covered ops in (from, sync_error_op]
        # The boot of the machine that last opened the topic: meta and slabs
        # share the page cache, so within one boot the counters are exact
        # whatever processes died; after a reboot they are rebuilt.
        ("boot_hi", ctypes.c_uint64),
        ("boot_lo", ctypes.c_uint64),
        ("dir_synced_gen", ctypes.c_uint64),  # slab_gen when the folder was last fsynced
        # The meta file itself (device, inode) when the boot was noted: a
        # copy or a restored backup is another file, and is rebuilt.
        ("meta_dev", ctypes.c_uint64),
        ("meta_ino", ctypes.c_uint64),
        # Per log, the lowest slab before the tail that a change which must
        # be durable wrote since the sync leader last looked (0: none). The
        # next fsync covers it, even if an fsync running meanwhile synced
        # that slab before the write.
        ("dirty_low", ctypes.c_uint64 * 3),
        # The marks the running sync took over from dirty_low, kept until it
        # succeeds: a leader that was killed or failed leaves them for the
        # next one (one leader at a time: the 'sync' flock).
        ("dirty_using", ctypes.c_uint64 * 3),
        # The earliest deadline of any lease (0: not known), and the count
        # of owners seen gone (the size of .owners/gone) when the last look
        # for ended leases began: until one of the two moves, no lease can
        # have ended and the look is skipped (see _leases_may_have_ended).
        ("lease_min", ctypes.c_double),
        ("reclaim_gone", ctypes.c_uint64),
    ]


class _Intent(ctypes.Structure):
    # The undo record: a copy of the counters taken before a change, and the
    # entry the change is about. A process that finds ``active`` set when it
    # gets the lock knows the last holder died in the middle of a change.
    _fields_ = [
        ("active", ctypes.c_uint32),
        ("op", ctypes.c_uint32),
        ("log", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("seq", ctypes.c_uint64),
        ("off", ctypes.c_uint64),
    ]


META_SIZE = 4096
META_HDR = (ctypes.sizeof(_Meta) + 63) & ~63  # bytes of _Meta copied into the undo snapshot
INTENT_OFF = 1024
SNAPSHOT_OFF = 2048
MUTEX_OFF = 3072  # the topic's lock, when a process-shared mutex (see _mutex)
LOCK_KIND_OFF = MUTEX_OFF + _mutex.SIZE  # _mutex.KIND there if so, else zeros
assert ctypes.sizeof(_Meta) <= META_HDR <= INTENT_OFF
OP_PUT, OP_COMPLETE, OP_RETRY, OP_FAIL, OP_RECLAIM, OP_MOVE, OP_OTHER = range(1, 8)

SIDE_SLAB_SIZE = 1024 * 1024  # slab size of the delayed and failed logs
PROMOTE_COST_FACTOR = 20  # delayed-log scans take at most ~5% of the lock's time
PROMOTE_MAX_WAIT = 2.0  # ... and a retry that came due waits at most this for it
RECLAIM_INTERVAL = 0.5  # seconds between two looks for leases of dead owners
MAX_WAIT_SLICE = 2.0  # a waiting take looks again at least this often
# Slabs a topic keeps mapped when nothing else refers to them: each mapped
# slab holds one file descriptor, so a backlog of hundreds of slabs must not
# hold hundreds (a scan maps the ones it reads in turn and lets them go).
MAPPED_SLABS = 16

_HOST = socket.gethostname()


def _read_boot_id() -> tuple[int, int]:
    """This boot of the machine as two 64-bit halves; (0, 0) if unknown."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            n = int(fh.read().strip().replace("-", ""), 16)
    except (OSError, ValueError):
        return 0, 0
    return n >> 64, n & 0xFFFFFFFFFFFFFFFF


_BOOT = _read_boot_id()

# Named crash points for the reliability tests: with DQ_CRASH_AT=<name> in
# the environment, the process kills itself (SIGKILL) at that step.
_CRASH_AT = os.environ.get("DQ_CRASH_AT", "")


def _crash(point: str) -> None:
    if _CRASH_AT == point:
        os.kill(os.getpid(), 9)


def _align(n: int) -> int:
    return (n + 7) & ~7


def _set_head(lm: _LogMeta, seq: int, off: int) -> None:
    """Move a log's head outside a change. A process killed between two
    stores must leave a position that is never past the real one: the
    offset goes to the slab's start first, then the slab, then the offset."""
    lm.head_off = SLAB_HEADER_SIZE
    lm.head_seq = seq
    lm.head_off = off


def _set_cursor(lm: _LogMeta, seq: int, off: int) -> None:
    """``_set_head`` for the take cursor."""
    lm.cursor_off = SLAB_HEADER_SIZE
    lm.cursor_seq = seq
    lm.cursor_off = off


def _now() -> float:
    return time.time()


def _mut_bytes(status: int, attempts: int, owner: int, token: int, deadline: float) -> bytes:
    body = MUT_BODY.pack(status, attempts, owner, token, deadline)
    return body + struct.pack("<I", zlib.crc32(body))


_unowned_cache: dict[tuple[int, int], bytes] = {}


def _unowned_mut(status: int, attempts: int) -> bytes:
    """``_mut_bytes(status, attempts, 0, 0, 0.0)``, computed once per pair
    (every put and complete writes one of a handful of these)."""
    b = _unowned_cache.get((status, attempts))
    if b is None:
        b = _mut_bytes(status, attempts, 0, 0, 0.0)
        if len(_unowned_cache) < 4096:
            _unowned_cache[(status, attempts)] = b
    return b


# -- files ---------------------------------------------------------------------


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _slab_name(log: int, seq: int) -> str:
    return f"{LOG_PREFIX[log]}{seq:012d}.slab"


def _disk_error(path: str, exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(path, exc.strerror or "")
    return StorageError(path, f"{exc.strerror or exc} (errno {exc.errno})")


def _refcounts(d: dict[Any, Any]) -> list[tuple[Any, int]]:
    """Each key of ``d`` with the reference count of its value as read here."""
    getrefcount = sys.getrefcount
    return [(key, getrefcount(v)) for key, v in list(d.items())]


# The count _refcounts reads for a value only the dict refers to (it differs
# between Python versions: measured, not assumed).
_IDLE_REFS = _refcounts({0: object()})[0][1]


class _Slab:
    """One mapped slab file."""

    __slots__ = ("path", "closed", "mm", "mv", "size", "hdr", "salt", "salt_crc", "seq", "log", "ident")

    def __init__(self, path: str, log: int, seq: int) -> None:
        self.path = path
        self.log = log
        self.seq = seq
        self.closed = True
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            self.ident = (st.st_dev, st.st_ino)  # which file: a name can be given to another
            size = st.st_size
            if size < SLAB_HEADER_SIZE:
                raise CorruptSlab(path, 0, f"file of {size} bytes is shorter than a slab header")
            self.size = size
            # The map keeps a descriptor of its own: one per mapped slab, not
            # two. An fsync opens the file again by name.
            self.mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.closed = False
        self.mv = memoryview(self.mm)
        self.hdr = h = _SlabHeader.from_buffer(self.mm)
        if _header_crc(h.seq, h.salt, h.created) == h.hcrc:
            salt = h.salt
        elif _header_crc(h.seq, h.salt2, h.created) == h.hcrc:
            salt = h.salt2
        elif h.salt == h.salt2 and h.magic == SLAB_MAGIC:
            salt = h.salt  # only the header CRC itself was damaged
        else:
            self.close()
            raise CorruptSlab(path, 0, "damaged slab header")
        self.salt = salt
        self.salt_crc = zlib.crc32(struct.pack("<Q", salt))

    def header_problems(self, sealed_end: int | None) -> list[str]:
        """What is wrong with this slab's header (``check``): fields the
        open tolerated (one copy of the salt, the CRC, the magic, the
        sequence number) and the sealed end (``sealed_end``: where the
        records stop in a sealed slab; None for the tail slab)."""
        h, out = self.hdr, []
        if h.magic != SLAB_MAGIC:
            out.append("bad magic")
        if h.seq != self.seq:
            out.append(f"sequence number {h.seq} (file name says {self.seq})")
        if h.salt != self.salt or h.salt2 != self.salt:
            out.append("the two copies of the salt differ")
        if _header_crc(h.seq, self.salt, h.created) != h.hcrc:
            out.append("header checksum mismatch")
        expected_end = 0 if sealed_end is None else sealed_end
        if h.end != expected_end:
            out.append(f"end {h.end} (records end at {expected_end})")
        if not self.hints_ok():
            out.append("id range checksum mismatch")
        return out

    def fix_header(self, sealed_end: int | None) -> None:
        h = self.hdr
        h.magic, h.seq, h.salt, h.salt2 = SLAB_MAGIC, self.seq, self.salt, self.salt
        h.end = 0 if sealed_end is None else sealed_end
        h.hcrc = _header_crc(self.seq, self.salt, h.created)
        h.pad = _hint_crc(h.min_id, h.max_id)

    def set_hints(self, lo: int, hi: int) -> None:
        h = self.hdr
        h.min_id, h.max_id, h.pad = lo, hi, _hint_crc(lo, hi)

    def hints_ok(self) -> bool:
        """Whether min_id/max_id are as last written (a lookup may skip this
        slab on their word); else every lookup reads the slab."""
        h = self.hdr
        return bool(h.pad == _hint_crc(h.min_id, h.max_id))

    @classmethod
    def create(cls, directory: str, log: int, seq: int, size: int, durable: bool) -> _Slab:
        path = os.path.join(directory, _slab_name(log, seq))
        tmp = path + ".tmp"
        try:
            # Built under a temporary name and renamed, so a crash never
            # leaves a half-made slab under a real name.
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                # Reserve every block now: a sparse file written through
                # mmap on a full disk kills the process with SIGBUS.
                os.posix_fallocate(fd, 0, size)
                salt, created = secrets.randbits(64), _now()
                header = _SlabHeader(SLAB_MAGIC, seq, salt, created, 0, 0, 0, 0, salt,
                                     _header_crc(seq, salt, created), _hint_crc(0, 0))
                os.pwrite(fd, bytes(header), 0)
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if _CRASH_AT:
                _crash("slab.before_rename")
            os.rename(tmp, path)
            if durable:
                _fsync_dir(directory)  # the rename is durable only once the folder is
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise _disk_error(path, exc) from exc
        return cls(path, log, seq)

    def end(self, tail: tuple[int, int] | None) -> int:
        """Where this slab's entries stop: the recorded tail for the tail
        slab; for a sealed slab its size (zeros mark the end, and a damaged
        'end' field must never hide entries)."""
        if tail is not None and tail[0] == self.seq:
            return min(tail[1], self.size)
        return self.size

    def is_at_path(self) -> bool:
        """Whether the file at this slab's name is still this one."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self.ident

    def close(self) -> None:
        # No local reference to the header may live on here: it is a view
        # of the map, and the map cannot close while one exists.
        if getattr(self, "hdr", None) is not None:
            del self.hdr
        if getattr(self, "mv", None) is not None:
            self.mv.release()
        try:
            self.mm.close()
        except (BufferError, AttributeError):
            pass
        self.closed = True


class _Entry:
    """An entry's header as read at one moment."""

    __slots__ = (
        "slab", "off", "size", "plen", "xlen", "id", "enqueued_at", "not_before",
        "status", "attempts", "owner", "token", "deadline", "mut_ok",
    )

    def __init__(self, slab: _Slab, off: int,
                 head: tuple[int, int, int, float, float] | None = None) -> None:
        if head is None:
            _magic, plen, xlen, _crc, mid, enq, nb = HEAD.unpack_from(slab.mm, off)
        else:
            plen, xlen, mid, enq, nb = head
        status, attempts, owner, token, deadline, mcrc = MUT.unpack_from(slab.mm, off + MUT_OFF)
        self.slab, self.off = slab, off
        self.plen, self.xlen = plen, xlen
        self.size = _align(HEADER_SIZE + plen + xlen)
        self.id, self.enqueued_at, self.not_before = mid, enq, nb
        self.mut_ok = zlib.crc32(slab.mv[off + MUT_OFF : off + MUT_OFF + 32]) == mcrc
        if not self.mut_ok or status not in STATUS_NAMES:
            status = READY  # unknown reads as ready: a duplicate, never a loss
        self.status, self.attempts, self.owner, self.token, self.deadline = (
            status, attempts, owner, token, deadline,
        )

    def payload(self) -> bytes:
        start = self.off + HEADER_SIZE
        return bytes(self.slab.mv[start : start + self.plen])

    def errors(self) -> tuple[dict[str, Any], ...]:
        if not self.xlen:
            return ()
        start = self.off + HEADER_SIZE + self.plen
        try:
            value = msgpack.unpackb(self.slab.mv[start : start + self.xlen], raw=False)
        except Exception:
            return ()
        return tuple(value) if isinstance(value, list) else ()

    def set(self, status: int, attempts: int | None = None, owner: int = 0, token: int = 0,
            deadline: float = 0.0) -> None:
        self.slab.mm[self.off + MUT_OFF : self.off + MUT_OFF + 36] = _mut_bytes(
            status, self.attempts if attempts is None else attempts, owner, token, deadline
        )
        self.status = status


def _check_entry(slab: _Slab, off: int, end: int) -> _Entry | None:
    """The entry at ``off`` if its header and CRC are sound, else None."""
    if off + HEADER_SIZE > end:
        return None
    magic, plen, xlen, crc, mid, enq, nb = HEAD.unpack_from(slab.mm, off)
    if magic != ENTRY_MAGIC or off + HEADER_SIZE + plen + xlen > end:
        return None
    c = zlib.crc32(IMMUTABLE.pack(magic, plen, xlen, mid, enq, nb), slab.salt_crc)
    body = off + HEADER_SIZE
    if zlib.crc32(slab.mv[body : body + plen + xlen], c) != crc:
        return None
    return _Entry(slab, off, (plen, xlen, mid, enq, nb))


def _skip_len(slab: _Slab, off: int, end: int) -> int | None:
    """Length of a skip record at ``off`` (a region recovery stepped over)."""
    if off + 16 > end:
        return None
    magic, length, check = struct.unpack_from("<IQI", slab.mm, off)
    if magic == SKIP_MAGIC and check == (zlib.crc32(struct.pack("<Q", length), slab.salt_crc)) and (
        off + length <= end and length >= 16
    ):
        return int(length)
    return None


def _resync(slab: _Slab, off: int, end: int) -> int:
    """Offset of the next sound entry after a damaged one at ``off`` (or ``end``)."""
    pos = off + 8
    while pos < end:
        found = slab.mm.find(ENTRY_MAGIC_BYTES, pos, end)
        if found < 0:
            return end
        if found % 8 == 0 and _check_entry(slab, found, end) is not None:
            return found
        pos = found + 1
    return end


def _write_skip(slab: _Slab, off: int, upto: int) -> None:
    length = min(upto, slab.size) - off
    if length >= 16:
        slab.mm[off : off + 16] = struct.pack(
            "<IQI", SKIP_MAGIC, length, zlib.crc32(struct.pack("<Q", length), slab.salt_crc)
        )


# -- one topic in one process ----------------------------------------------------


_OWNER_ALIVE, _OWNER_DEAD, _OWNER_MISSING, _OWNER_UNKNOWN = range(4)  # _probe_owner
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


class _Change:
    __slots__ = ("t",)

    def __init__(self, t: _Topic) -> None:
        self.t = t

    def __enter__(self) -> None:
        pass

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.t._commit()
        else:
            self.t._rollback()


class _Topic:
    def __init__(self, backend: SlabBackend, name: str, path: str) -> None:
        self.backend = backend
        self.name = name
        self.path = path
        self.tlock = threading.RLock()
        # Group commit inside the process: one thread (the leader) fsyncs,
        # the others wait on the condition and return when it covered them.
        self.sync_cond = threading.Condition(threading.Lock())
        self.sync_leading = False
        self.slabs: dict[tuple[int, int], _Slab] = {}
        self.slab_gen = -1
        self.known: list[list[int]] = [[], [], []]  # existing slab seqs per log
        self.ops_since_sync = 0
        self.last_sync = time.monotonic()
        self.appended: list[tuple[_Slab, int]] = []
        self.created: list[_Slab] = []  # slabs made by the change in progress
        self.hints: dict[_Slab, tuple[int, int]] = {}  # id ranges before it
        # Slabs the change in progress emptied: deleted when it commits (an
        # undone change must find every slab it started from).
        self.dropping: list[_Slab] = []
        # The tail slab the change in progress sealed (it started the next):
        # unsealed if the change is undone (and so kept mapped till then).
        self.sealed: list[_Slab] = []
        # The entry the change is about, and its state before it, put back
        # if the change is undone (a move undone must not lose the message).
        self.undo_slab: _Slab | None = None
        self.undo_off = 0
        self.undo_mut = b""
        self._locked = _Locked(self)
        self._change = _Change(self)
        os.makedirs(path, exist_ok=True)
        self.lock_fd = self.sync_fd = self.bell_fd = self.users_fd = -1
        self.mutex = 0  # the address of the topic's mutex; 0: a flock instead
        try:
            self._open(path)
        except BaseException:
            self._abandon()  # the flocks held go with their files
            raise

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
            # (no other holds 'users') makes its lock new: see _choose_lock.
            alone = True
            try:
                fcntl.flock(self.users_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                alone = False
            self._choose_lock(alone)
            with self.locked():
                self._open_locked(path, meta_path, meta_file, alone)
        finally:
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)

    def _choose_lock(self, alone: bool) -> None:
        """A robust process-shared mutex in the meta file when this platform
        has one (see _mutex), else a flock of the lock file. The first
        opener chooses and, for a mutex, makes it new (a mutex left looking
        held by a reboot, or by a copy of the file, is never waited on);
        every later opener follows its choice."""
        kind = slice(LOCK_KIND_OFF, LOCK_KIND_OFF + len(_mutex.KIND))
        if alone:
            if _mutex.wanted():
                try:
                    _mutex.init(self.meta_addr + MUTEX_OFF)
                except OSError as exc:
                    raise StorageError(self.path, f"cannot make the topic's lock: {exc}") from exc
                self.meta_mm[kind] = _mutex.KIND
            else:
                self.meta_mm[kind] = bytes(len(_mutex.KIND))
        if self.meta_mm[kind] != _mutex.KIND:
            self.mutex = 0
        elif _mutex.AVAILABLE:
            self.mutex = self.meta_addr + MUTEX_OFF
        else:
            raise StorageError(self.path, "the processes that have this topic open lock it with a "
                                          "process-shared mutex, which this process cannot use")

    def _open_locked(self, path: str, meta_path: str, meta_file: tuple[int, int], alone: bool) -> None:
        if self.meta.magic != META_MAGIC:
            if self._list_slabs_any():
                # Counters lost but slabs are there: rebuild from the slabs.
                self.meta.needs_recount = 1
            self.meta.magic = META_MAGIC
            if self.meta.next_id == 0:
                self.meta.next_id = 1
            _fsync_dir(path)
        # The first process to open the topic since everyone closed it
        # checks that the last one closed cleanly; if not, and the
        # machine rebooted since (an OS crash, a power loss: the slabs on
        # disk may be older or newer than the counters), it rebuilds the
        # counters from the slabs. Processes killed in this boot left
        # exact counters (every change is undone or finished by the next
        # lock holder), so they need no rebuild.
        m = self.meta
        same_boot = _BOOT != (0, 0) and (m.boot_hi, m.boot_lo) == _BOOT
        same_boot = same_boot and (m.meta_dev, m.meta_ino) == meta_file
        if self.intent.active:
            self._recover_crash()
        elif m.needs_recount or (alone and not m.clean and not same_boot):
            self._recount()
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
                self.meta_mm.flush()
            except OSError as exc:
                raise _disk_error(meta_path, exc) from exc
        fcntl.flock(self.users_fd, fcntl.LOCK_SH)

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

    def dirty(self, log: int, seq: int) -> None:
        """A change that must be durable wrote to slab ``seq`` (lock held):
        the next fsync covers it even if that slab was synced before (the
        group commit syncs the slabs from ``synced_seq`` to the tail, and
        from the lowest slab marked here)."""
        low = self.dirty_low
        if seq > 0 and (not low[log] or seq < low[log]):
            low[log] = seq

    def give_back(self, w: _wake.Watch) -> None:
        if w.fd < 0:
            return  # inotify refused (too many instances): try again next time
        if self.closed:
            w.close()
        else:
            self.watches.append(w)

    def watch(self) -> _wake.Watch:
        """A watch of the bell for one waiting thread, rings before now
        forgotten; give it back with ``t.watches.append(w)``."""
        try:
            w = self.watches.pop()
        except IndexError:
            return _wake.Watch(self.bell_path)
        w.drain()
        return w

    # -- locking and the undo record ------------------------------------------
    def locked(self) -> _Locked:
        """``with t.locked():`` holds the topic's thread lock and flock."""
        return self._locked

    def change(self, op: int, slab: _Slab | None = None, off: int = 0) -> _Change:
        """``with t.change(...):`` one change of the topic (lock held). The
        counters are copied first; a process killed in the middle leaves the
        copy and the record of what it was doing for the next lock holder. An
        exception inside rolls the change back (a put that raised DiskFull
        half-way must never reappear). ``slab`` and ``off``: the entry the
        change is about, which recovery looks at and an undo puts back."""
        # memmove, not slicing: this runs for every put, take and settle.
        ctypes.memmove(self.meta_addr + SNAPSHOT_OFF, self.meta_addr, META_HDR)
        i = self.intent
        if slab is None:
            i.op, i.log, i.seq, i.off = op, 0, 0, 0
        else:
            i.op, i.log, i.seq, i.off = op, slab.log, slab.seq, off
        i.active = 1
        self.appended.clear()
        if self.created:
            self.created.clear()
        if self.hints:
            self.hints.clear()
        if self.dropping:
            self.dropping.clear()
        if self.sealed:
            self.sealed.clear()
        self.undo_slab = slab
        if slab is not None:
            self.undo_off = off
            self.undo_mut = slab.mm[off + MUT_OFF : off + MUT_OFF + MUT_SIZE]
        return self._change

    def _commit(self) -> None:
        if self.dropping:
            self._drop_emptied()
        self.meta.op_seq += 1
        self.intent.active = 0

    def _drop_emptied(self) -> None:
        """Delete the slabs the committing change emptied. Never raises: a
        slab that cannot be read or deleted now stays (its entries are all
        finished; the next rebuild deletes it)."""
        for slab in self.dropping:
            if slab.closed or slab.hdr.live > 0:
                continue
            try:
                self._drop_if_finished(slab)
            except (OSError, QueueError):
                pass
        self.dropping.clear()

    def _rollback(self) -> None:
        gen_before = int(self.meta.slab_gen)
        for slab, off in reversed(self.appended):
            if not slab.closed:
                slab.mm[off : off + HEADER_SIZE] = bytes(HEADER_SIZE)  # no longer an entry, never adopted
                slab.hdr.live = max(0, slab.hdr.live - 1)
        self.appended.clear()
        self.dropping.clear()
        u = self.undo_slab
        if u is not None:
            self.undo_slab = None
            if not u.closed:
                off = self.undo_off + MUT_OFF
                # The slab's live count is left as it is: one too low is
                # found out (a slab is scanned before it is deleted).
                u.mm[off : off + MUT_SIZE] = self.undo_mut
        for slab, (lo, hi) in self.hints.items():
            if not slab.closed:
                slab.set_hints(lo, hi)
        self.hints.clear()
        ctypes.memmove(self.meta_addr, self.meta_addr + SNAPSHOT_OFF, META_HDR)
        # Slabs this change made go: left behind, another process could make
        # one again under the same name while this one still maps the first.
        for slab in self.created:
            self.slabs.pop((slab.log, slab.seq), None)
            if slab.is_at_path():
                try:
                    os.unlink(slab.path)
                except OSError:
                    pass
            slab.close()
        if self.created:
            self.created.clear()
        # Other processes list the slabs again (the restored counters would
        # otherwise show them the generation of the list they hold).
        restored = int(self.meta.slab_gen)
        if restored != gen_before:
            self.meta.slab_gen = max(restored, gen_before) + 1
        self.intent.active = 0
        self._unseal_tails()

    def _unseal_tails(self) -> None:
        """A change that sealed a slab and started the next one was undone:
        the slab that is the tail again is not sealed."""
        for slab in self.sealed:
            if not slab.closed and slab.seq == self.lms[slab.log].tail_seq:
                slab.hdr.end = 0
        self.sealed.clear()

    def _recover_crash(self) -> None:
        """The last lock holder died mid-change: put back the counters it
        started from, count its change if the entry shows it was made, adopt
        whole entries it appended, and rebuild every gauge from the slabs."""
        i = self.intent
        op, log, seq, off = i.op, i.log, i.seq, i.off
        gen_before = int(self.meta.slab_gen)
        self.meta_mm[0:META_HDR] = self.meta_mm[SNAPSHOT_OFF : SNAPSHOT_OFF + META_HDR]
        # The dead change may have made or deleted slabs: every process
        # lists them again (the restored generation may be one they hold).
        self.meta.slab_gen = max(int(self.meta.slab_gen), gen_before) + 1
        first_new_id = int(self.meta.next_id)
        self.slab_gen = -1
        _lost, adopted = self._adopt_beyond_tails()
        self.meta.enqueued += sum(1 for lg, mid in adopted if lg == MAIN and mid >= first_new_id)
        slab = self.slab(log, seq) if seq else None
        if seq and slab is None:
            # The change's slab is gone: slabs a change empties are deleted
            # when it commits, after every write of it, so it was made.
            if op == OP_COMPLETE:
                self.meta.completed += 1
            elif op == OP_RETRY:
                self.meta.retried += 1
        elif slab is not None and off + HEADER_SIZE <= slab.size:
            e = _Entry(slab, off)
            if op in (OP_RETRY, OP_RECLAIM, OP_FAIL, OP_MOVE) and e.status != MOVED and any(
                mid == e.id for _, mid in adopted
            ):
                # The copy was written whole: finish the move rather than
                # leave the message in two places.
                e.set(MOVED)
            if op == OP_COMPLETE and e.status == DONE:
                self.meta.completed += 1
            elif op == OP_RETRY and e.status == MOVED:
                self.meta.retried += 1
        self._recount()
        self.meta.op_seq += 1
        i.active = 0

    # -- slabs -------------------------------------------------------------------
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
            IMMUTABLE.pack(ENTRY_MAGIC, plen, elen, mid, enqueued_at, not_before),
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
        if _CRASH_AT:
            _crash("append.before_header")
        HEAD.pack_into(mm, off, ENTRY_MAGIC, plen, elen, crc, mid, enqueued_at, not_before)
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
        if _CRASH_AT:
            _crash("append.after_header")
        lm.tail_off = off + size
        self.appended.append((slab, off))
        return slab.seq, off

    def _new_slab(self, log: int, size: int) -> _Slab:
        lm = self.meta.logs[log]
        old = self.slab(log, int(lm.tail_seq)) if lm.tail_seq else None
        seq = int(lm.tail_seq) + 1 if lm.tail_seq else max(self.seqs(log) or [0]) + 1
        b = self.backend
        # The delayed and failed logs are usually small: smaller slabs, so a
        # topic with one failed message does not reserve another 64 MiB.
        base = b.slab_size if log == MAIN else min(b.slab_size, SIDE_SLAB_SIZE)
        slab = _Slab.create(self.path, log, seq, max(base, SLAB_HEADER_SIZE + size), b.durable)
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
        if _CRASH_AT:
            _crash("slab.before_delete")
        try:
            if slab.is_at_path():  # never another file given the same name
                os.unlink(slab.path)
        except FileNotFoundError:
            pass
        except OSError:
            return  # it stays, every entry finished, until a rebuild deletes it
        if _CRASH_AT:
            _crash("slab.after_delete")
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

    # -- rebuilding -----------------------------------------------------------
    def _recount(self) -> None:
        """Rebuild every gauge and cursor from the slabs (lock held): after a
        crash, a power loss, or damage found at run time."""
        m = self.meta
        m.needs_recount = 1  # until it is done: a rebuild cut short by a kill is started again
        self.slab_gen = -1
        self.refresh()
        dropped = 0

        def damaged(slab: _Slab | None, off: int, nxt: int) -> None:
            nonlocal dropped
            dropped += 1
            if slab is not None:
                _write_skip(slab, off, nxt)

        lost_tails, _ = self._adopt_beyond_tails()
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
            for e in self.entries(log, None, damaged, ends):
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
            for seq in list(self.seqs(log)):
                slab = self.slab(log, seq)
                if slab is not None:
                    slab.hdr.live = live.get(seq, 0)
                    slab.set_hints(*ids.get(seq, (0, 0)))
                    slab.hdr.end = 0 if seq == lm.tail_seq else ends.get((log, seq), slab.hdr.end)
                    if not slab.hdr.live and seq != lm.tail_seq:
                        self._drop_slab(slab)  # left behind by a crash
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
        self.slab_gen = -1
        # The scan mapped every page of every slab into this process: let
        # them go (the data stays in the page cache, and on disk), so a
        # consumer's memory does not grow with the backlog it recounted.
        for slab in self.slabs.values():
            try:
                slab.mm.madvise(mmap.MADV_DONTNEED)
            except (OSError, ValueError, AttributeError):
                pass  # only an optimisation

    def _adopt_beyond_tails(self) -> tuple[int, list[tuple[int, int]]]:
        """Sound entries past a log's recorded tail were written by a process
        that died before recording them (or before a power loss): keep them.
        Returns how many tail slabs were found shorter than their tail, and
        the (log, id) of each entry adopted."""
        lost = 0
        adopted: list[tuple[int, int]] = []
        for log in (MAIN, DELAYED, FAILED):
            lm = self.meta.logs[log]
            seqs = self.seqs(log)
            if not seqs:
                lm.tail_seq = lm.tail_off = 0
                continue
            if lm.tail_seq not in seqs:
                lm.tail_seq, lm.tail_off = seqs[-1], SLAB_HEADER_SIZE
            for seq in [s for s in seqs if s >= lm.tail_seq]:
                slab = self.slab(log, seq)
                if slab is None:
                    continue
                if seq == lm.tail_seq and lm.tail_off > slab.size:
                    lm.tail_off = slab.size  # the file was cut short
                    lost += 1
                off = int(lm.tail_off) if seq == lm.tail_seq else SLAB_HEADER_SIZE
                if seq != lm.tail_seq:
                    cur = self.slab(log, int(lm.tail_seq))
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

    def _sync_files(self) -> bool:
        """Every slab and the folder on disk (lock held); False if an fsync
        failed."""
        try:
            for name in os.listdir(self.path):
                if name.endswith(".slab"):
                    try:
                        fd = os.open(os.path.join(self.path, name), os.O_RDONLY | os.O_CLOEXEC)
                    except FileNotFoundError:
                        continue
                    try:
                        os.fdatasync(fd)
                    finally:
                        os.close(fd)
            _fsync_dir(self.path)
        except OSError:
            return False
        return True

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
                    if last and trusted and self._sync_files():
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


# -- the backend -------------------------------------------------------------------

_instances: weakref.WeakSet[SlabBackend] = weakref.WeakSet()


def _after_fork() -> None:
    for backend in list(_instances):
        backend._forked()


os.register_at_fork(after_in_child=_after_fork)


class SlabBackend(Backend):
    """Slab files in a directory; safe for many processes and threads."""

    name = "slab"

    def __init__(self, directory: str, **options: Any) -> None:
        opts = {**DEFAULTS, **options}
        self.root = os.path.abspath(os.fspath(directory))
        self.slab_size = int(opts["slab_size"])
        if self.slab_size < 4096:
            raise InvalidOption("slab_size", "must be at least 4096 bytes")
        self.fsync_put = bool(opts["fsync_put"])
        self.fsync_take = bool(opts["fsync_take"])
        self.fsync_interval = opts["fsync_interval"]
        self.fsync_threshold = opts["fsync_threshold"]
        self.max_queue_size = opts["max_queue_size"]
        if self.max_queue_size is not None and int(self.max_queue_size) < 1:
            raise InvalidOption("max_queue_size", "must be at least 1 (or None)")
        self.visibility_timeout = float(opts["visibility_timeout"])
        if self.visibility_timeout <= 0:
            raise InvalidOption("visibility_timeout", "must be > 0")
        self.durable = self.fsync_put or self.fsync_take
        try:
            os.makedirs(self.root, exist_ok=True)
            os.makedirs(os.path.join(self.root, ".owners"), exist_ok=True)
            os.makedirs(os.path.join(self.root, ".consumers"), exist_ok=True)
        except OSError as exc:
            raise _disk_error(self.root, exc) from exc
        self._lock = threading.Lock()
        self._topics: dict[str, _Topic] = {}
        self._owner_id = 0
        self._owner_fd = -1
        self._pid = os.getpid()
        self._rng = random.Random(secrets.randbits(128))  # lease tokens
        self._dead_owners: dict[int, bool] = {}
        _instances.add(self)

    # -- process identity ---------------------------------------------------------
    def _forked(self) -> None:
        # A child must not use its parent's locks, maps or owner identity:
        # flock is shared through inherited descriptors, so keeping them
        # would let parent and child both "hold" a topic's lock, and keep a
        # dead parent looking alive. Drop (don't unlock) and start afresh.
        for t in self._topics.values():
            for fd in (t.lock_fd, t.sync_fd, t.bell_fd, t.users_fd, *(w.fd for w in t.watches)):
                try:
                    os.close(fd)
                except OSError:
                    pass
            for slab in t.slabs.values():  # the child maps what it reads itself
                slab.close()
            t.slabs.clear()
            t.mutex = 0  # nor takes its parent's topic locks (flock(-1) raises if it tries)
        self._topics = {}
        if self._owner_fd >= 0:
            try:
                os.close(self._owner_fd)
            except OSError:
                pass
        self._owner_fd, self._owner_id = -1, 0
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._rng = random.Random(secrets.randbits(128))

    def _owner(self) -> int:
        if self._owner_id:
            return self._owner_id
        with self._lock:  # two threads' first takes must share one identity
            if not self._owner_id:
                self._make_owner()
            return self._owner_id

    def _make_owner(self) -> None:
        owner = secrets.randbits(63) | 1
        path = self._owner_path(owner)
        tmp = os.path.join(self.root, ".owners", f"{owner:016x}.new")
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise _disk_error(path, exc) from exc
        try:
            # Held for the life of the process: the kernel drops it on any
            # death, kill -9 included, which is how other processes know the
            # owner died. Locked before it gets its name: a '.lock' file
            # nobody holds is always a dead owner's (others delete it).
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": _HOST, "started": _now()}).encode(), 0)
            except OSError:
                pass  # only a label for the dashboard; the lock is what counts
            os.rename(tmp, path)
        except OSError as exc:
            os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise _disk_error(path, exc) from exc
        self._owner_fd, self._owner_id = fd, owner

    def _owner_path(self, owner: int) -> str:
        return os.path.join(self.root, ".owners", f"{owner:016x}.lock")

    def _probe_owner(self, path: str) -> int:
        """The state of an owner file: held (alive); not held (dead: an
        owner's file gets its name only once locked), which is counted gone
        and then deleted here (see _leases_may_have_ended); missing (deleted
        by whoever saw it dead, counted); or unknown (cannot open or lock it:
        EMFILE, EACCES)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return _OWNER_MISSING
        except OSError:
            return _OWNER_UNKNOWN
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _OWNER_ALIVE
        except OSError:
            return _OWNER_UNKNOWN
        finally:
            os.close(fd)
        if self._count_gone():  # before the file goes, else it must stay for others to see
            try:
                os.unlink(path)
            except OSError:
                pass
        return _OWNER_DEAD

    def _owner_alive(self, owner: int) -> bool:
        if owner == self._owner_id:
            return True
        known = self._dead_owners.get(owner)
        if known is not None:
            return known
        state = self._probe_owner(self._owner_path(owner))
        if state == _OWNER_UNKNOWN:
            return True  # never take a live lease away
        alive = state == _OWNER_ALIVE
        self._dead_owners[owner] = alive
        return alive

    def _owner_name(self, owner: int) -> str:
        path = self._owner_path(owner)
        try:
            with open(path, "rb") as fh:
                info = json.loads(fh.read(512).split(b"\x00")[0] or b"{}")
            return f"pid {info.get('pid')} on {info.get('host')}"
        except (OSError, ValueError):
            return f"{owner:016x}"

    def _topic(self, name: str, create: bool = True) -> _Topic | None:
        # A forked child is handled by the os.register_at_fork hook.
        t = self._topics.get(name)
        if t is not None:
            return t
        path = os.path.join(self.root, name)
        # The name was validated by Queues; refuse anything that would leave
        # the directory anyway.
        if os.path.dirname(os.path.abspath(path)) != self.root or name.startswith("."):
            raise InvalidTopic(name, "resolves outside the queue directory")
        if not create and not os.path.exists(os.path.join(path, "meta")):
            return None
        with self._lock:
            t = self._topics.get(name)
            if t is None:
                try:
                    t = self._topics[name] = _Topic(self, name, path)
                except OSError as exc:
                    if isinstance(exc, (DiskFull, StorageError)):
                        raise
                    raise _disk_error(path, exc) from exc
            return t

    def _get(self, name: str) -> _Topic:
        t = self._topics.get(name) or self._topic(name)
        assert t is not None
        return t

    # -- durability ---------------------------------------------------------------
    @staticmethod
    def _covered(t: _Topic, target_op: int) -> bool:
        """Whether an fsync that finished covers change ``target_op``;
        StorageError if one that failed covers it. ``synced_op`` is read
        first: the failed range only grows, so a failure that came before
        the success read here is seen by the check after it."""
        m = t.meta
        synced = m.synced_op
        if m.sync_error_from < target_op <= m.sync_error_op:
            raise StorageError(t.path, "an earlier fsync failed for this write")
        return bool(synced >= target_op)

    def _sync_topic(self, t: _Topic, target_op: int | None = None, meta: bool = False) -> None:
        """Group commit: one fsync covers every change made before it, by any
        process. A caller whose change is already covered returns at once."""
        if target_op is not None and self._covered(t, target_op):
            return
        leader = False
        try:
            with t.sync_cond:
                while True:
                    if target_op is not None and self._covered(t, target_op):
                        return
                    if not t.sync_leading:
                        leader = True
                        t.sync_leading = True
                        break
                    t.sync_cond.wait()
            self._sync_as_leader(t, target_op, meta)
        finally:
            if leader:
                with t.sync_cond:
                    t.sync_leading = False
                    t.sync_cond.notify_all()

    def _sync_as_leader(self, t: _Topic, target_op: int | None, meta: bool) -> None:
        m = t.meta
        fcntl.flock(t.sync_fd, fcntl.LOCK_EX)  # one fsync at a time across processes
        try:
            if target_op is not None and self._covered(t, target_op):
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

    def _after_write(self, t: _Topic, op: int, durable: bool) -> None:
        if durable:
            self._sync_topic(t, op)
            return
        if not self.fsync_threshold and self.fsync_interval is None:
            return  # syncs only when asked (or at close)
        t.ops_since_sync += 1
        if (self.fsync_threshold and t.ops_since_sync >= self.fsync_threshold) or (
            self.fsync_interval is not None and time.monotonic() - t.last_sync >= self.fsync_interval
        ):
            self._sync_topic(t)

    # -- the contract ----------------------------------------------------------
    def put(self, topic: str, payloads: list[bytes], timeout: float | None) -> list[int]:
        t = self._topics.get(topic) or self._get(topic)
        limit = self.max_queue_size
        if limit is None:  # the common case: no waiting for room
            with t.locked():
                ids = self._append_ready(t, payloads)
                op, waiters = t.meta.op_seq, t.meta.waiters
        else:
            ids, op, waiters = self._put_when_room(t, topic, payloads, timeout, limit)
        if waiters > 0:
            _wake.ring(t.bell_fd)
        self._after_write(t, op, self.fsync_put)
        if _CRASH_AT:
            _crash("put.after_return")
        return ids

    def _put_when_room(self, t: _Topic, topic: str, payloads: list[bytes], timeout: float | None,
                       limit: int) -> tuple[list[int], int, int]:
        """Put once the topic has room under ``max_queue_size`` (waiting up
        to ``timeout``); returns (ids, op number, waiting takers)."""
        n = len(payloads)
        if n > limit:
            raise QueueFull(topic, int(limit))
        deadline = None if timeout is None else time.monotonic() + timeout
        watch: _wake.Watch | None = None
        registered = False
        try:
            while True:
                with t.locked():
                    m = t.meta
                    if m.ready + m.delayed + m.in_progress + n > limit:
                        self._promote(t)
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            raise QueueFull(topic, int(limit))
                        if watch is None:
                            watch = t.watch()
                            continue  # look again now that the watch is set
                        if not registered:
                            m.room_waiters += 1
                            registered = True
                    else:
                        return self._append_ready(t, payloads), m.op_seq, m.waiters
                watch.wait(MAX_WAIT_SLICE if left is None else min(left, MAX_WAIT_SLICE))
        finally:
            if registered:
                with t.locked():
                    t.meta.room_waiters = max(0, t.meta.room_waiters - 1)
            if watch is not None:
                t.give_back(watch)

    def _append_ready(self, t: _Topic, payloads: list[bytes]) -> list[int]:
        m = t.meta
        now = time.time()
        first = m.next_id
        n = len(payloads)
        append = t.append
        with t.change(OP_PUT):
            mid = first
            for payload in payloads:
                append(MAIN, mid, payload, b"", now)
                mid += 1
            m.next_id = mid
            if _CRASH_AT:
                _crash("put.before_counters")
            m.enqueued += n
            m.ready += n
        return [first] if n == 1 else list(range(first, mid))

    def restore(self, topic: str, records: list[Record]) -> list[int]:
        t = self._get(topic)
        ids: list[int] = []
        now = _now()
        with t.locked():
            m = t.meta
            for r in records:
                extra = msgpack.packb(list(r.errors), use_bin_type=True) if r.errors else b""
                with t.change(OP_PUT):
                    mid = int(m.next_id)
                    if r.state == "failed":
                        t.append(FAILED, mid, r.payload, extra, r.enqueued_at, 0.0, r.attempts)
                        m.failed += 1
                    elif r.state == "delayed" and r.not_before and r.not_before > now:
                        t.append(DELAYED, mid, r.payload, extra, r.enqueued_at, r.not_before, r.attempts)
                        m.delayed += 1
                        m.next_due = r.not_before if not m.next_due else min(m.next_due, r.not_before)
                    else:
                        t.append(MAIN, mid, r.payload, extra, r.enqueued_at, 0.0, r.attempts)
                        m.ready += 1
                    m.next_id = mid + 1
                    m.enqueued += 1
                ids.append(mid)
            waiters = m.waiters
        if waiters:
            _wake.ring(t.bell_fd)
        self._after_write(t, int(t.meta.op_seq), self.fsync_put)
        return ids

    def take(self, topic: str, limit: int, timeout: float | None) -> list[Delivery]:
        t = self._get(topic)
        owner = self._owner()
        deadline = None if timeout is None else time.monotonic() + timeout
        watch: _wake.Watch | None = None
        registered = False
        try:
            while True:
                with t.locked():
                    self._housekeep(t)
                    m = t.meta
                    if m.ready > 0:
                        out = self._claim(t, limit, owner)
                        if out:
                            op = int(m.op_seq)
                            if self.fsync_take:
                                for d in out:
                                    t.dirty(MAIN, d.token[0])
                            break
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return []
                    if watch is None:
                        watch = t.watch()
                        continue  # look again now that the watch is set
                    if not registered:
                        m.waiters += 1
                        registered = True
                    wait = MAX_WAIT_SLICE if left is None else min(left, MAX_WAIT_SLICE)
                    if m.in_progress > 0:
                        wait = min(wait, RECLAIM_INTERVAL)
                    if m.next_due:
                        wait = min(wait, max(0.0, m.next_due - _now()) + 0.001)
                watch.wait(wait)
        finally:
            if registered:
                with t.locked():
                    t.meta.waiters = max(0, t.meta.waiters - 1)
            if watch is not None:
                t.give_back(watch)
        if self.fsync_take:
            self._sync_topic(t, op)
        return out

    def _claim(self, t: _Topic, limit: int, owner: int) -> list[Delivery]:
        out = self._claim_once(t, limit, owner)
        if not out and t.meta.ready > 0:
            out = self._claim_once(t, limit, owner)  # after a rebuild
        return out

    def _lease(self, t: _Topic, e: _Entry, owner: int, lease_until: float) -> Delivery:
        m = t.meta
        lm = t.lms[MAIN]
        token = self._rng.getrandbits(63) | 1
        attempts = e.attempts + 1
        with t.change(OP_OTHER, e.slab, e.off):
            e.set(TAKEN, attempts, owner, token, lease_until)
            if lease_until < m.lease_min:  # 0 (not known) stays 0
                m.lease_min = lease_until
            m.ready -= 1
            m.in_progress += 1
            lm.cursor_seq, lm.cursor_off = e.slab.seq, e.off + e.size
        return Delivery(e.id, e.payload(), attempts, e.enqueued_at, (e.slab.seq, e.off, token), e.errors())

    def _claim_once(self, t: _Topic, limit: int, owner: int) -> list[Delivery]:
        m = t.meta
        lm = t.lms[MAIN]
        out: list[Delivery] = []
        lease_until = _now() + self.visibility_timeout
        if limit == 1:
            # The common case: the entry at the cursor is the one to take.
            seq = int(lm.cursor_seq)
            slab = t.slabs.get((MAIN, seq))
            if slab is not None:
                e = _check_entry(slab, int(lm.cursor_off), slab.end(t.tail(MAIN)))
                if e is not None and e.status == READY:
                    return [self._lease(t, e, owner, lease_until)]
        damaged = False

        def on_damage(slab: _Slab | None, off: int, nxt: int) -> None:
            nonlocal damaged
            damaged = True

        start = (int(lm.cursor_seq), int(lm.cursor_off))
        pos = start
        for e in t.entries(MAIN, start, on_damage):
            if damaged:
                break
            if e.status != READY:
                pos = (e.slab.seq, e.off + e.size)
                continue
            if len(out) >= limit:
                pos = (e.slab.seq, e.off)
                break
            out.append(self._lease(t, e, owner, lease_until))
            pos = (e.slab.seq, e.off + e.size)
            if len(out) >= limit:
                break
        else:
            pos = self.tail_pos(t) if not damaged else pos
        if damaged:
            # Damage between the cursor and the tail: rebuild everything,
            # stepping over the damaged entries (counted in 'dropped').
            t._recount()
            return out
        if pos > (int(lm.cursor_seq), int(lm.cursor_off)):
            _set_cursor(lm, *pos)
        if not out and m.ready > 0:
            t._recount()  # the counter said ready but none was found
        return out

    @staticmethod
    def tail_pos(t: _Topic) -> tuple[int, int]:
        return t.tail(MAIN)

    def _housekeep(self, t: _Topic) -> None:
        m = t.meta
        now = _now()
        if m.next_due and m.next_due <= now:
            self._promote(t)
        # A last look in the future means the clock was stepped back: look now.
        if m.in_progress > 0 and not 0 <= now - m.last_reclaim < RECLAIM_INTERVAL:
            if self._leases_may_have_ended(t, now):
                self._reclaim(t)
            else:
                m.last_reclaim = now

    def _leases_may_have_ended(self, t: _Topic, now: float) -> bool:
        """Whether the look for ended leases (a scan of the main log from its
        head, which a lease held long at the head of a big backlog makes
        slow) can find anything: a deadline passed, or an owner is gone since
        the last look. An owner that dies leaves its file unlocked until
        someone sees it; whoever sees it (or an owner closing) counts it in
        .owners/gone before deleting the file, so the file or the count
        tells. Read in that order: a file deleted is already counted."""
        m = t.meta
        if not m.lease_min or now >= m.lease_min:
            return True
        owners = os.path.join(self.root, ".owners")
        try:
            names = os.listdir(owners)
        except OSError:
            return True
        for name in names:
            if not name.endswith(".lock"):
                continue
            try:
                owner = int(name[:-5], 16)
            except ValueError:
                continue
            if owner == self._owner_id:
                continue
            # A dead owner's file is counted and deleted by the probe, whether
            # or not it held a lease (an idle worker that was killed must not
            # make every later look a scan); then this topic looks.
            if self._probe_owner(os.path.join(owners, name)) not in (_OWNER_ALIVE, _OWNER_MISSING):
                return True
        return bool(self._gone_count() != m.reclaim_gone)

    def _gone_count(self) -> int:
        try:
            return os.stat(os.path.join(self.root, ".owners", "gone")).st_size
        except FileNotFoundError:
            return 0

    def _count_gone(self) -> bool:
        """Count one owner gone (before its file is deleted); False if it
        could not be counted (then the file must stay, for others to see)."""
        try:
            fd = os.open(os.path.join(self.root, ".owners", "gone"),
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                return os.write(fd, b"x") == 1
            finally:
                os.close(fd)
        except OSError:
            return False

    def _promote(self, t: _Topic) -> None:
        """Delayed retries whose time has come go to the main log."""
        m = t.meta
        now = _now()
        if not m.next_due or m.next_due > now:
            return
        next_due = 0.0
        started = time.thread_time()  # this thread's work, not time it waited for the CPU
        due: list[tuple[int, int]] = []  # positions: entries would keep every slab mapped
        for e in t.entries(DELAYED):
            if e.status != READY:
                continue
            if e.not_before <= now:
                due.append((e.slab.seq, e.off))
            else:
                next_due = e.not_before if not next_due else min(next_due, e.not_before)
        scan_cost = time.thread_time() - started
        for e in t.entries_at(DELAYED, due):
            self._move(t, e, MAIN, OP_MOVE)
        if next_due:
            # That read the whole delayed log under the lock. Retries coming
            # due one after another (many at once after an outage) would run
            # it at every take: the next look waits PROMOTE_COST_FACTOR times
            # what the read cost (nothing for a short log; a retry in a log
            # of 100,000 is moved a second or two late rather than halting
            # every take).
            next_due = max(next_due, now + min(PROMOTE_MAX_WAIT, PROMOTE_COST_FACTOR * scan_cost))
        m.next_due = next_due

    def _reclaim(self, t: _Topic) -> None:
        """Leases whose owner died (its flock is gone) or whose deadline
        passed go back to the queue."""
        m = t.meta
        lm = m.logs[MAIN]
        now = _now()
        m.last_reclaim = now
        gone = self._gone_count()  # before any owner is looked at
        self._dead_owners = {}
        seen = 0
        total = int(m.in_progress)
        lease_min = math.inf  # of the leases that stay
        first_live: tuple[int, int] | None = None
        cursor = (int(lm.cursor_seq), int(lm.cursor_off))
        # Collect first, move after: a move can finish the last live entry of
        # a slab and drop (unmap) it, which a running scan must not see.
        # Positions, not entries: entries would keep every slab mapped.
        expired: list[tuple[int, int]] = []
        for e in t.entries(MAIN, (int(lm.head_seq), int(lm.head_off))):
            if (e.slab.seq, e.off) >= cursor or seen >= total:
                if first_live is None:
                    first_live = (e.slab.seq, e.off)
                break
            if e.status == TAKEN:
                seen += 1
                if e.deadline <= now or not self._owner_alive(e.owner):
                    expired.append((e.slab.seq, e.off))
                    continue
                if e.deadline < lease_min:
                    lease_min = e.deadline
            if e.status in (READY, TAKEN) and first_live is None:
                first_live = (e.slab.seq, e.off)
        for e in t.entries_at(MAIN, expired):
            self._move(t, e, MAIN, OP_RECLAIM)
        # Every lease was seen (else the counters are off: look every time).
        m.lease_min = lease_min if seen >= total else 0.0
        m.reclaim_gone = gone
        if first_live is not None and first_live[0] in t.seqs(MAIN):
            _set_head(lm, *first_live)

    def _move(self, t: _Topic, e: _Entry, to_log: int, op: int, error: dict[str, Any] | None = None,
              not_before: float = 0.0, final_status: int = MOVED) -> None:
        """Append a copy of ``e`` to ``to_log`` (same id, attempts, errors),
        then mark ``e`` finished, and fix the counters (lock held). The copy
        is written first: a crash in between leaves a duplicate, never a loss."""
        m = t.meta
        errors = list(e.errors())
        if error is not None:
            errors = (errors + [error])[-MAX_ERRORS_KEPT:]
        extra = msgpack.packb(errors, use_bin_type=True) if errors else b""
        from_log = e.slab.log
        with t.change(op, e.slab, e.off):
            t.append(to_log, e.id, e.payload(), extra, e.enqueued_at, not_before, e.attempts)
            old_status = e.status
            if _CRASH_AT:
                _crash("move.after_append")
            e.set(final_status)
            if _CRASH_AT:
                _crash("move.after_status")
            t.finished(e)
            if from_log == MAIN:
                if old_status == TAKEN:
                    m.in_progress = max(0, m.in_progress - 1)
                else:
                    m.ready = max(0, m.ready - 1)
            elif from_log == DELAYED:
                m.delayed = max(0, m.delayed - 1)
            else:
                m.failed = max(0, m.failed - 1)
            if to_log == MAIN:
                m.ready += 1
            elif to_log == DELAYED:
                m.delayed += 1
                m.next_due = not_before if not m.next_due else min(m.next_due, not_before)
            else:
                m.failed += 1
            if op == OP_RETRY:  # a lease that ran out is a redelivery, not a retry
                m.retried += 1

    def settle(self, topic: str, token: Any, outcome: str, delay: float = 0.0,
               error: dict[str, Any] | None = None) -> bool:
        if outcome not in ("complete", "retry", "fail"):
            raise ValueError(f"unknown outcome {outcome!r}")
        t = self._get(topic)
        with t.locked():
            ok, wake, op = self._settle_locked(t, token, outcome, delay, error)
            if self.fsync_take:
                t.dirty(MAIN, token[0])
        if wake:
            _wake.ring(t.bell_fd)
        self._after_write(t, op, self.fsync_take)
        return ok

    def settle_many(self, topic: str, tokens: list[Any], outcome: str) -> list[bool]:
        if outcome not in ("complete", "retry", "fail"):
            raise ValueError(f"unknown outcome {outcome!r}")
        t = self._get(topic)
        oks: list[bool] = []
        wake_any, op = False, 0
        with t.locked():  # one lock (and at most one fsync) for the batch
            for token in tokens:
                ok, wake, op = self._settle_locked(t, token, outcome, 0.0, None)
                oks.append(ok)
                wake_any = wake_any or wake
                if self.fsync_take:
                    t.dirty(MAIN, token[0])
        if wake_any:
            _wake.ring(t.bell_fd)
        if tokens:
            self._after_write(t, op, self.fsync_take)
        return oks

    def _settle_locked(self, t: _Topic, token: Any, outcome: str, delay: float,
                       error: dict[str, Any] | None) -> tuple[bool, bool, int]:
        seq, off, tok = token
        m = t.meta
        slab = t.slab(MAIN, seq)
        if slab is None or off + HEADER_SIZE > slab.size:
            return False, False, int(m.op_seq)
        status, attempts, owner, token_now, deadline, _mcrc = MUT.unpack_from(slab.mm, off + MUT_OFF)
        # The lease token is 63 random bits: a match means this lease.
        if status != TAKEN or token_now != tok or owner != self._owner_id:
            return False, False, int(m.op_seq)
        now = time.time()  # read once: a clock step between two reads must not fail a complete
        if outcome == "complete" and deadline > now:
            with t.change(OP_COMPLETE, slab, off):
                slab.mm[off + MUT_OFF : off + MUT_OFF + 36] = _unowned_mut(DONE, attempts)
                if _CRASH_AT:
                    _crash("complete.after_status")
                t.finished_at(slab)
                m.in_progress = max(0, m.in_progress - 1)
                m.completed += 1
            # Room was made: wake puts waiting under max_queue_size.
            return True, m.room_waiters > 0, int(m.op_seq)
        return self._settle_entry(t, _Entry(slab, off), outcome, delay, error, now)

    def _settle_entry(self, t: _Topic, e: _Entry, outcome: str, delay: float,
                      error: dict[str, Any] | None, now: float) -> tuple[bool, bool, int]:
        """Retry or fail a leased entry, or find its lease ran out (lock
        held; a complete in time never gets here, so a complete here is one
        whose lease ran out). Returns (settled, wake someone, op number)."""
        m = t.meta
        if outcome == "complete" or not e.deadline > now:
            # The lease ran out: the message belongs to the next taker.
            self._move(t, e, MAIN, OP_RECLAIM)
            return False, m.waiters > 0, int(m.op_seq)
        if outcome == "retry":
            if delay > 0:
                self._move(t, e, DELAYED, OP_RETRY, error, now + delay)
            else:
                self._move(t, e, MAIN, OP_RETRY, error)
            # Wake takers: a message became ready (or delayed: a waiter must
            # learn its due time).
            return True, m.waiters > 0, int(m.op_seq)
        self._move(t, e, FAILED, OP_FAIL, error)
        # Room was made: wake puts waiting under max_queue_size.
        return True, m.room_waiters > 0, int(m.op_seq)

    def topics(self) -> list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return [n for n in names if not n.startswith(".") and os.path.exists(os.path.join(self.root, n, "meta"))]

    def stats(self, topic: str) -> dict[str, int]:
        t = self._get(topic)
        with t.locked():
            self._promote(t)
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

    def info(self, topic: str) -> dict[str, Any]:
        t = self._topic(topic, create=False)
        if t is None:  # looking never creates a topic
            return {"bytes": 0, "dropped": 0, "oldest_ready_at": None}
        size = 0
        for name in os.listdir(t.path):
            try:
                size += os.stat(os.path.join(t.path, name)).st_blocks * 512
            except OSError:
                pass
        oldest = None
        with t.locked():
            lm = t.meta.logs[MAIN]
            if t.meta.ready > 0:
                for i, e in enumerate(t.entries(MAIN, (int(lm.cursor_seq), int(lm.cursor_off)))):
                    if e.status == READY:
                        oldest = e.enqueued_at
                        break
                    if i > 10000:
                        break
            dropped = int(t.meta.dropped)
        return {"bytes": size, "dropped": dropped, "oldest_ready_at": oldest}

    # -- browsing ----------------------------------------------------------------
    def _record(self, t: _Topic, e: _Entry, state: str) -> Record:
        lease = None
        if state == "in_progress":
            lease = Lease(self._owner_name(e.owner), e.deadline)
        return Record(
            id=e.id, payload=e.payload(), state=state, attempts=e.attempts,
            enqueued_at=e.enqueued_at, lease=lease, errors=e.errors(),
            not_before=e.not_before if state == "delayed" else None,
        )

    @staticmethod
    def _state_of(log: int, status: int) -> str | None:
        if log == MAIN:
            return {READY: "ready", TAKEN: "in_progress", DONE: "completed"}.get(status)
        if status == READY:
            return "delayed" if log == DELAYED else "failed"
        return None

    def _scan(self, t: _Topic, states: set[str], after: int, limit: int | None) -> Iterator[tuple[_Entry, str]]:
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
                    state = self._state_of(log, e.status)
                    if state in states:
                        found.append((e.id, log, seq, e.off, state))
        found.sort(key=lambda x: x[0])
        if limit is not None:
            del found[limit:]
        for _, log, seq, off, state in found:
            again = t.entry_at(log, seq, off)
            if again is not None:
                yield again, state

    def messages(self, topic: str, state: str | None, after: int | None, limit: int) -> list[Record]:
        t = self._topic(topic, create=False)
        if t is None:
            return []
        states = {state} if state else {"ready", "delayed", "in_progress", "failed"}
        with t.locked():
            self._promote(t)
            return [self._record(t, e, s) for e, s in self._scan(t, states, after or 0, limit)]

    def _find(self, t: _Topic, mid: int) -> tuple[_Entry, str]:
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
                            state = self._state_of(log, e.status)
                            if state is not None and state != "completed":
                                return e, state
                            if state == "completed":
                                best = (e, state)
            if best is not None:
                return best
        raise MessageNotFound(t.name, mid)

    def peek(self, topic: str, id: int) -> Record:
        t = self._topic(topic, create=False)
        if t is None:
            raise MessageNotFound(topic, id)
        with t.locked():
            self._promote(t)
            e, state = self._find(t, id)
            return self._record(t, e, state)

    def _find_unfinished(self, t: _Topic, mid: int) -> tuple[_Entry, str]:
        e, state = self._find(t, mid)
        if state == "completed":
            raise MessageNotFound(t.name, mid, "ready, delayed, in_progress or failed")
        return e, state

    def _admin_dirty(self, t: _Topic, e: _Entry) -> None:
        # An operator's change is synced as a put would be.
        if self.fsync_put:
            t.dirty(e.slab.log, e.slab.seq)

    def _admin_done(self, t: _Topic, wake: bool) -> None:
        """After an operator's change: wake whoever it concerns, then sync
        as a put would."""
        if wake:
            _wake.ring(t.bell_fd)
        self._after_write(t, int(t.meta.op_seq), self.fsync_put)

    def requeue(self, topic: str, id: int) -> None:
        t = self._topic(topic, create=False)
        if t is None:
            raise MessageNotFound(topic, id)
        with t.locked():
            e, state = self._find_unfinished(t, id)
            if state != "ready":
                self._move(t, e, MAIN, OP_MOVE)
                self._admin_dirty(t, e)
            wake = t.meta.waiters > 0
        self._admin_done(t, wake)

    def requeue_failed(self, topic: str) -> int:
        t = self._topic(topic, create=False)
        if t is None:
            return 0
        n = 0
        with t.locked():
            # Positions first (the moves empty and delete slabs as they go),
            # not entries (which would keep every slab mapped).
            failed = [(e.slab.seq, e.off) for e in t.entries(FAILED) if e.status == READY]
            for e in t.entries_at(FAILED, failed):
                if e.status == READY:
                    self._move(t, e, MAIN, OP_MOVE)
                    self._admin_dirty(t, e)
                    n += 1
            wake = t.meta.waiters > 0
        if n:
            self._admin_done(t, wake)
        return n

    def _remove(self, t: _Topic, e: _Entry, state: str) -> None:
        m = t.meta
        with t.change(OP_OTHER, e.slab, e.off):
            e.set(MOVED)
            t.finished(e)
            if state == "ready":
                m.ready = max(0, m.ready - 1)
            elif state == "in_progress":
                m.in_progress = max(0, m.in_progress - 1)
            elif state == "delayed":
                m.delayed = max(0, m.delayed - 1)
            elif state == "failed":
                m.failed = max(0, m.failed - 1)

    def delete(self, topic: str, id: int) -> None:
        t = self._topic(topic, create=False)
        if t is None:
            raise MessageNotFound(topic, id)
        with t.locked():
            e, state = self._find_unfinished(t, id)
            self._remove(t, e, state)
            self._admin_dirty(t, e)
            wake = t.meta.room_waiters > 0
        self._admin_done(t, wake)

    def purge(self, topic: str, state: str | None) -> int:
        t = self._topic(topic, create=False)
        if t is None:
            return 0
        states = {"ready", "delayed"} if state is None else {state}
        n = 0
        with t.locked():
            self._promote(t)
            for e, s in self._scan(t, states, 0, None):
                self._remove(t, e, s)
                self._admin_dirty(t, e)
                n += 1
            wake = t.meta.room_waiters > 0
        if n:
            self._admin_done(t, wake)
        return n

    def check(self, fix: bool) -> dict[str, Any]:
        problems: list[str] = []
        fixed: list[str] = []
        per_topic: dict[str, Any] = {}
        for name in sorted(self.topics()):
            t = self._get(name)
            damage: list[tuple[str, int, int]] = []

            def on_damage(slab: _Slab | None, off: int, nxt: int, damage: list[Any] = damage) -> None:
                damage.append((os.path.basename(slab.path) if slab else "slab header", off, nxt))

            with t.locked():
                counts = {"ready": 0, "in_progress": 0, "delayed": 0, "failed": 0}
                flips = 0
                # Per slab, by (log, seq): holding the slabs themselves would
                # keep every one of them mapped.
                spans: dict[tuple[int, int], list[int]] = {}
                ends: dict[tuple[int, int], int] = {}
                first_live: dict[int, tuple[int, int]] = {}  # per log
                first_ready: tuple[int, int] | None = None
                for log in (MAIN, DELAYED, FAILED):
                    for seq in t.seqs(log):
                        try:
                            slab = t.slab(log, seq)
                        except CorruptSlab:
                            continue  # reported by the scan below
                        if slab is not None:
                            spans[(log, seq)] = [0, 0, 0]
                    for e in t.entries(log, None, on_damage, ends):
                        span = spans.setdefault((log, e.slab.seq), [0, 0, 0])
                        span[0] = e.id if not span[0] else min(span[0], e.id)
                        span[1] = max(span[1], e.id)
                        if e.status in (READY, TAKEN):
                            span[2] += 1
                            first_live.setdefault(log, (e.slab.seq, e.off))
                            if log == MAIN and e.status == READY and first_ready is None:
                                first_ready = (e.slab.seq, e.off)
                        if not e.mut_ok:
                            flips += 1
                        state = self._state_of(log, e.status)
                        if state in counts:
                            counts[state] += 1
                m = t.meta
                recorded = {"ready": int(m.ready), "in_progress": int(m.in_progress),
                            "delayed": int(m.delayed), "failed": int(m.failed)}
                for slab_name, off, nxt in damage:
                    problems.append(f"{name}/{slab_name}: damaged entry at offset {off} ({nxt - off} bytes)")
                if flips:
                    problems.append(f"{name}: {flips} entries with a damaged status (read as ready)")
                # The header's id range and live count are hints no checksum
                # covers: compare them with what the slab holds.
                bad_spans = 0
                for key, (lo, hi, live) in spans.items():
                    slab = t.slab(*key)
                    if slab is None or (slab.hdr.min_id, slab.hdr.max_id, slab.hdr.live) == (lo, hi, live):
                        continue
                    bad_spans += 1
                    problems.append(
                        f"{name}/{os.path.basename(slab.path)}: header says ids "
                        f"{slab.hdr.min_id}..{slab.hdr.max_id} ({slab.hdr.live} live), "
                        f"the slab holds {lo}..{hi} ({live} live)")
                    if fix:
                        slab.set_hints(lo, hi)
                        slab.hdr.live = live
                if fix and bad_spans:
                    fixed.append(f"{name}: corrected the header hints of {bad_spans} slabs")
                # Every other header field: what the open tolerated, and the
                # end a sealed slab was given (where its records stop).
                headers_fixed = 0
                for key in spans:
                    slab = t.slab(*key)
                    if slab is None:
                        continue
                    sealed_end = None if slab.seq == t.lms[slab.log].tail_seq else ends.get(key)
                    if sealed_end is None and slab.seq != t.lms[slab.log].tail_seq:
                        continue  # not scanned (damaged beyond reading): reported above
                    for what in slab.header_problems(sealed_end):
                        problems.append(f"{name}/{os.path.basename(slab.path)}: slab header: {what}")
                        if fix:
                            slab.fix_header(sealed_end)
                            headers_fixed += 1
                if headers_fixed:
                    fixed.append(f"{name}: rewrote {headers_fixed} damaged slab header fields")
                if counts != recorded:
                    problems.append(f"{name}: counters {recorded} do not match the slabs {counts}")
                # Scans start at a log's head (reclaim) and the main log's
                # cursor (take): past a live entry, that entry is never seen.
                lost_from = False
                for log, pos in first_live.items():
                    lm = t.lms[log]
                    if (lm.head_seq, lm.head_off) > pos:
                        problems.append(f"{name}: the head of log {LOG_PREFIX[log]} is past a live entry")
                        lost_from = True
                if first_ready is not None and (t.lms[MAIN].cursor_seq, t.lms[MAIN].cursor_off) > first_ready:
                    problems.append(f"{name}: the take cursor is past a ready entry")
                    lost_from = True
                if fix and (damage or flips or counts != recorded or lost_from):
                    m.needs_recount = 1  # a kill before the rebuild below is done
                    for e_log in (MAIN, DELAYED, FAILED):
                        for e in t.entries(e_log):
                            if not e.mut_ok:
                                e.set(READY if e_log != MAIN or e.status != TAKEN else e.status,
                                      e.attempts, e.owner, e.token, e.deadline)
                    t._recount()
                    fixed.append(f"{name}: stepped over {len(damage)} damaged entries and rebuilt the counters")
                per_topic[name] = {"counts": counts, "damaged": len(damage), "dropped": int(m.dropped)}
        return {"ok": not problems or (fix and bool(fixed)), "problems": problems, "fixed": fixed,
                "topics": per_topic}

    def fsync(self) -> None:
        for t in list(self._topics.values()):
            self._sync_topic(t, meta=True)

    def close(self) -> None:
        if self._pid != os.getpid():
            self._forked()
        for t in list(self._topics.values()):
            try:
                if self.durable or self.fsync_interval is not None or self.fsync_threshold:
                    self._sync_topic(t)
            finally:
                t.close()
        self._topics.clear()
        if self._owner_fd >= 0:
            path = self._owner_path(self._owner_id)
            # Leases still held are ended by whoever looks next: this owner
            # stops looking alive, then is counted gone, then its file goes
            # (a look in between sees the file unlocked, or the count moved:
            # see _leases_may_have_ended).
            fcntl.flock(self._owner_fd, fcntl.LOCK_UN)
            if self._count_gone():
                try:
                    os.unlink(path)
                except OSError:
                    pass
            os.close(self._owner_fd)
            self._owner_fd, self._owner_id = -1, 0
        _instances.discard(self)

    # -- heartbeats ---------------------------------------------------------------
    def _beat_path(self, key: str) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)[:200]
        return os.path.join(self.root, ".consumers", f"{safe}.json")

    def write_heartbeat(self, key: str, record: dict[str, Any]) -> None:
        path = self._beat_path(key)
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as fh:
                json.dump(record, fh)
            os.replace(tmp, path)  # readers see the old beat or the new one, never half
        except OSError as exc:
            raise _disk_error(path, exc) from exc

    def remove_heartbeat(self, key: str) -> None:
        try:
            os.unlink(self._beat_path(key))
        except FileNotFoundError:
            pass

    def heartbeats(self) -> list[dict[str, Any]]:
        out = []
        folder = os.path.join(self.root, ".consumers")
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        for name in names:
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(folder, name)) as fh:
                    record = json.load(fh)
            except (OSError, ValueError):
                continue
            if isinstance(record, dict):
                out.append(record)
        return out
