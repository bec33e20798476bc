"""The bytes on disk: magics, entry statuses, the layouts of an entry, of a
slab's header and of a topic's meta file (counters, log positions, the undo
record, the lock's place), and the CRCs that guard them. docs/queuecore.md
("The on-disk format") describes them for people.

Layout only: nothing here opens, maps, locks or syncs a file, and nothing
here may change without every process that shares a directory agreeing.
"""

from __future__ import annotations

import ctypes
import os
import struct
import time
import zlib
from typing import Any

import msgpack

from queuecore import _mutex, identity

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

# Entry header, 80 bytes, then payload, then extra (the message's history,
# see pack_extra), padded to 8 bytes. The CRC covers every field that never changes
# (magic, lengths, id, enqueue time, due time), the payload and the extra,
# seeded with the slab's salt so a payload that holds an image of an entry
# never passes for one. The mutable part (status, attempts, lease) has a CRC
# of its own.
HEAD = struct.Struct("<IIIIQdd")  # magic plen xlen crc id enqueued_at not_before
IMMUTABLE = struct.Struct("<IIIQdd")  # the same without the crc, for computing it
MUT = struct.Struct("<B3xIQQdI")  # status attempts owner token deadline mcrc
MUT_BODY = struct.Struct("<B3xIQQd")
MUT_SIZE = MUT.size
# The end of the mutable part, 16 bytes from byte 64: the deadline, the
# mutable part's CRC, and the header's last four bytes (unused). A lease
# extended rewrites these alone, in one copy (see slabfile._set_deadline).
LEASE_END = struct.Struct("<dI4s")
LEASE_END_OFF = 24  # from MUT_OFF
# The struct calls of the put, take and complete paths, as plain functions:
# CPython compiles a method call on a name that a module imported as the
# load of a module's attribute, which makes a bound method at every call.
_pack_immutable = IMMUTABLE.pack
_pack_head_into = HEAD.pack_into
_unpack_head = HEAD.unpack_from
_unpack_mut = MUT.unpack_from
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
        # have ended and the look is skipped (see owners.leases_may_have_ended).
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
# What a change is about, as the undo record names it.
OP_PUT, OP_COMPLETE, OP_RETRY, OP_FAIL, OP_RECLAIM, OP_MOVE, OP_OTHER, OP_EXTEND = range(1, 9)


def _slab_name(log: int, seq: int) -> str:
    return f"{LOG_PREFIX[log]}{seq:012d}.slab"


def _align(n: int) -> int:
    return (n + 7) & ~7


def _now() -> float:
    """The clock of every time the format stores (enqueue times, lease
    deadlines, due times): wall-clock seconds, as every process reads it."""
    return time.time()


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


# The extra of an entry: its history, a msgpack map {"o": the origin (the
# process that put it, queuecore.identity), "e": the errors, the last
# MAX_ERRORS_KEPT}, each key left out when empty, and nothing at all when
# both are. An extra that is a msgpack list is the errors alone (what
# entries held before origins were kept), read as such.
def pack_extra(origin: dict[str, Any] | None, errors: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> bytes:
    value: dict[str, Any] = {}
    if origin:
        value["o"] = origin
    if errors:
        value["e"] = list(errors)
    if not value:
        return b""
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
    except (UnicodeEncodeError, TypeError, ValueError):
        # A string msgpack cannot encode (a surrogate from a traceback or a
        # file name) must not leave the message unable to be retried.
        packed = msgpack.packb(_packable(value), use_bin_type=True)
    return packed


def _packable(value: Any) -> Any:
    """``value`` with every string made encodable and anything else that is
    not plain data turned into its text."""
    if isinstance(value, str):
        return identity.clean(value)
    if isinstance(value, dict):
        return {_packable(k): _packable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_packable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, bytes)):
        return value
    return identity.clean(str(value))


def unpack_extra(data: bytes | memoryview) -> tuple[dict[str, Any] | None, tuple[dict[str, Any], ...]]:
    """``(origin, errors)`` of an extra; what cannot be read is left out."""
    if not data:
        return None, ()
    try:
        value = msgpack.unpackb(data, raw=False)
    except Exception:
        return None, ()
    if isinstance(value, list):
        return None, tuple(e for e in value if isinstance(e, dict))
    if not isinstance(value, dict):
        return None, ()
    origin = value.get("o")
    errors = value.get("e")
    return (origin if isinstance(origin, dict) else None,
            tuple(e for e in errors if isinstance(e, dict)) if isinstance(errors, list) else ())


_put_extra: tuple[int, bytes] = (0, b"")


def put_extra() -> bytes:
    """The extra of every entry this process puts: its origin, packed once
    (again in a forked child)."""
    global _put_extra
    pid = os.getpid()
    if _put_extra[0] != pid:
        _put_extra = (pid, pack_extra(identity.current(), ()))
    return _put_extra[1]
