"""One slab file, mapped: opening it (its header checked, tolerating one
damaged copy of the salt), creating it (reserved, renamed into place,
synced), and the entries in it: reading one, checking its CRC, finding the
next sound one after damage, the skip records that mark damage stepped
over, and a lease's new deadline (written so that a kill never tears it
from its CRC, and mended if a copy did). Also the two system-call helpers
every part uses (a folder's fsync, an OSError as a queuecore error).

One file at a time: nothing here knows the logs, the meta file, the lock
or the counters, and nothing here decides when a slab is made or deleted.
"""

from __future__ import annotations

import errno
import math
import mmap
import os
import secrets
import struct
import zlib
from typing import Any

from queuecore.errors import CorruptSlab, DiskFull, StorageError
from queuecore.slab.crashpoints import CRASH_AT, crash
from queuecore.slab.format import (
    ENTRY_MAGIC,
    ENTRY_MAGIC_BYTES,
    HEADER_SIZE,
    LEASE_END,
    LEASE_END_OFF,
    MUT_OFF,
    READY,
    SKIP_MAGIC,
    SLAB_HEADER_SIZE,
    SLAB_MAGIC,
    STATUS_NAMES,
    TAKEN,
    _align,
    _header_crc,
    _hint_crc,
    _mut_bytes,
    _now,
    _pack_immutable,
    _slab_name,
    _SlabHeader,
    _unpack_head,
    _unpack_mut,
    unpack_extra,
)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _disk_error(path: str, exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(path, exc.strerror or "")
    return StorageError(path, f"{exc.strerror or exc} (errno {exc.errno})")


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
                    os.fsync(fd)  # blocks and header on disk before the name is
            finally:
                os.close(fd)
            if CRASH_AT:
                crash("slab.before_rename")
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
            _magic, plen, xlen, _crc, mid, enq, nb = _unpack_head(slab.mm, off)
        else:
            plen, xlen, mid, enq, nb = head
        status, attempts, owner, token, deadline, mcrc = _unpack_mut(slab.mm, off + MUT_OFF)
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

    def history(self) -> tuple[dict[str, Any] | None, tuple[dict[str, Any], ...]]:
        """``(origin, errors)`` kept in the entry's extra."""
        if not self.xlen:
            return None, ()
        start = self.off + HEADER_SIZE + self.plen
        return unpack_extra(self.slab.mv[start : start + self.xlen])

    def errors(self) -> tuple[dict[str, Any], ...]:
        if not self.xlen:
            return ()
        start = self.off + HEADER_SIZE + self.plen
        mv = self.slab.mv
        if self.xlen > 3 and mv[start] == 0x81 and mv[start + 1] == 0xA1 and mv[start + 2] == 0x6F:
            return ()  # {"o": origin} alone, as every put writes it: no need to unpack it
        return unpack_extra(mv[start : start + self.xlen])[1]

    def set(self, status: int, attempts: int | None = None, owner: int = 0, token: int = 0,
            deadline: float = 0.0) -> None:
        self.slab.mm[self.off + MUT_OFF : self.off + MUT_OFF + 36] = _mut_bytes(
            status, self.attempts if attempts is None else attempts, owner, token, deadline
        )
        self.status = status


def _set_deadline(slab: _Slab, off: int, deadline: float) -> None:
    """Give the lease of the entry at ``off`` a new deadline. Only the last
    16 bytes of the header change (the deadline, the CRC of the mutable
    part, and four unused bytes written back as they are), in one copy:
    glibc's memcpy moves 16 bytes with whole 16-byte stores, so a process
    killed around it leaves the old deadline with its CRC or the new one
    with its own. A copy that tore them apart is mended by recovery
    (``_mend_deadline``): status, attempts, owner and token are not written."""
    base = off + MUT_OFF
    end = base + LEASE_END_OFF
    body = bytearray(slab.mv[base:end])
    body += struct.pack("<d", deadline)
    slab.mm[end : end + LEASE_END.size] = LEASE_END.pack(
        deadline, zlib.crc32(body), slab.mm[end + 12 : end + 16]
    )


def _mend_deadline(slab: _Slab, off: int) -> bool:
    """After a holder died extending the lease at ``off``: if the mutable
    part fails its CRC (a ``_set_deadline`` whose copy tore), give it the
    CRC of what it holds, with the deadline as found (the new one when the
    copy wrote the deadline before the CRC; 0, passed, if it is no number).
    The fields an extend does not write are as the take left them, and the
    owner died with the holder, so the lease ends at the next look either
    way; mended, it reads as that lease, not as damage. Whether it mended."""
    e = _check_entry(slab, off, slab.size)
    if e is None or e.mut_ok or slab.mm[off + MUT_OFF] != TAKEN:
        return False
    (deadline,) = struct.unpack_from("<d", slab.mm, off + MUT_OFF + LEASE_END_OFF)
    _set_deadline(slab, off, deadline if math.isfinite(deadline) else 0.0)
    return True


def _check_entry(slab: _Slab, off: int, end: int) -> _Entry | None:
    """The entry at ``off`` if its header and CRC are sound, else None."""
    if off + HEADER_SIZE > end:
        return None
    magic, plen, xlen, crc, mid, enq, nb = _unpack_head(slab.mm, off)
    if magic != ENTRY_MAGIC or off + HEADER_SIZE + plen + xlen > end:
        return None
    c = zlib.crc32(_pack_immutable(magic, plen, xlen, mid, enq, nb), slab.salt_crc)
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

