"""Lease owners: a process that takes is an owner, known by a random id and
by the file ``<root>/.owners/<id>.lock``, flock'ed for as long as the
process lives (the kernel drops the lock on any death, kill -9 included).
Others probe the file to know whether the owner of a lease lives, count an
owner seen dead (or closing) in ``.owners/gone`` before its file is
deleted, and from the two know whether any lease can have ended since the
last look. Reclaim is that look: leases whose owner died or whose deadline
passed go back to the topic.

Knows nothing of the fsync options or the wait for messages; changes a
topic only through operations.move, under the topic's lock.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import secrets
import socket
import threading
import time
from typing import TYPE_CHECKING

from queuecore import identity
from queuecore.backend import LEASE_EXPIRED, OWNER_DIED, lost_lease
from queuecore.slab.format import MAIN, OP_RECLAIM, READY, TAKEN, _now, _set_head
from queuecore.slab.operations import move
from queuecore.slab.slabfile import _disk_error

if TYPE_CHECKING:
    from queuecore.slab.topic import _Topic

_HOST = socket.gethostname()

_OWNER_ALIVE, _OWNER_DEAD, _OWNER_MISSING, _OWNER_UNKNOWN = range(4)  # what probe() found
# A gone owner's file stays this long as <owner>.dead, so whichever process
# takes its leases back names it in their history.
DEAD_NAMES_KEPT = 24 * 3600.0
# Seconds between two sweeps of old .dead files by one process.
_SWEEP_INTERVAL = 3600.0


def _label(data: bytes) -> str:
    """An owner's name from its file's first bytes ("" if unreadable)."""
    try:
        info = json.loads(data.split(b"\x00")[0] or b"{}")
    except ValueError:
        return ""
    return identity.label(info) if isinstance(info, dict) and "pid" in info else ""


class _Owners:
    """This process's identity as a lease owner, and what it knows of the
    other owners of one queue directory."""

    def __init__(self, root: str) -> None:
        self.folder = os.path.join(root, ".owners")
        self.gone_path = os.path.join(self.folder, "gone")  # read at every look, stats() included
        self.id = 0  # this process's owner id; 0 until its first take
        self.fd = -1  # its owner file, locked
        self._lock = threading.Lock()
        self._seen: dict[int, bool] = {}  # owner -> alive, found since the last reclaim
        self._all_held_at = -math.inf  # monotonic time of the last probe that found every owner held
        self._names: dict[int, str] = {}  # owner -> its name (an owner's file never changes)
        self._swept_at = -math.inf  # monotonic time of the last sweep of .dead files

    def mine(self) -> int:
        """This process's owner id, made (with its file) at the first call."""
        if self.id:
            return self.id
        with self._lock:  # two threads' first takes must share one identity
            if not self.id:
                self._make()
            return self.id

    def _make(self) -> None:
        owner = secrets.randbits(63) | 1
        path = self.path(owner)
        tmp = os.path.join(self.folder, f"{owner:016x}.new")
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
                me = identity.current()
                os.pwrite(fd, json.dumps({"pid": me["pid"], "host": me["host"], "cmd": me["cmd"],
                                          "started": _now()}).encode(), 0)
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
        self.fd, self.id = fd, owner
        try:
            self._sweep(os.listdir(self.folder))  # a new owner tidies up after old ones
        except OSError:
            pass

    def forked(self) -> None:
        """In a forked child: the parent's owner file is not this process's
        (the inherited descriptor shares the parent's flock, and would keep
        a dead parent looking alive). Dropped, not unlocked."""
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
        self.fd, self.id = -1, 0
        self._lock = threading.Lock()
        self._all_held_at = -math.inf

    def close(self) -> None:
        """This process stops being an owner. Leases still held are ended by
        whoever looks next: this owner stops looking alive, then is counted
        gone, then its file goes (a look in between sees the file unlocked,
        or the count moved: see leases_may_have_ended)."""
        if self.fd < 0:
            return
        path = self.path(self.id)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        if self.count_gone():
            self._retire(path)
        os.close(self.fd)
        self.fd, self.id = -1, 0

    def path(self, owner: int) -> str:
        return os.path.join(self.folder, f"{owner:016x}.lock")

    @staticmethod
    def _dead_path(path: str) -> str:
        """Where an owner file (``<owner>.lock``) goes once its owner is gone."""
        return path[: -len(".lock")] + ".dead"

    def _retire(self, path: str) -> None:
        """A gone owner's file (counted gone) stops being a ``.lock`` file; it
        stays as ``.dead`` for its name (see DEAD_NAMES_KEPT), touched so its
        age counts from now."""
        dead = self._dead_path(path)
        try:
            os.rename(path, dead)
        except FileNotFoundError:
            return  # another process retired it
        except OSError:
            try:
                os.unlink(path)
            except OSError:
                pass
            return
        try:
            os.utime(dead)
        except OSError:
            pass

    def _sweep(self, names: list[str]) -> None:
        """Delete the ``.dead`` files older than DEAD_NAMES_KEPT (at most
        once an hour per process)."""
        now = time.monotonic()
        if 0 <= now - self._swept_at < _SWEEP_INTERVAL:
            return
        self._swept_at = now
        limit = time.time() - DEAD_NAMES_KEPT
        for name in names:
            if name.endswith(".dead"):
                path = os.path.join(self.folder, name)
                try:
                    if os.stat(path).st_mtime < limit:
                        os.unlink(path)
                except OSError:
                    pass

    def probe(self, path: str) -> int:
        """The state of an owner file: held (alive); not held (dead: an
        owner's file gets its name only once locked), which is counted gone
        and then deleted here (see leases_may_have_ended); missing (deleted
        by whoever saw it dead, counted); or unknown (cannot open or lock it:
        EMFILE, EACCES)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return _OWNER_MISSING
        except OSError:
            return _OWNER_UNKNOWN
        try:
            # Shared and not waiting: granted only if the owner holds none.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return _OWNER_ALIVE
        except OSError:
            os.close(fd)
            return _OWNER_UNKNOWN
        os.close(fd)
        if self.count_gone():  # before the file goes, else it must stay for others to see
            self._retire(path)
        return _OWNER_DEAD

    def alive(self, owner: int) -> bool:
        if owner == self.id:
            return True
        known = self._seen.get(owner)
        if known is not None:
            return known
        state = self.probe(self.path(owner))
        if state == _OWNER_UNKNOWN:
            return True  # never take a live lease away
        alive = state == _OWNER_ALIVE
        self._seen[owner] = alive
        return alive

    def name(self, owner: int) -> str:
        """How the dashboard and a message's history name a lease's owner:
        from its file, live (``.lock``) or gone (``.dead``); its id if
        neither can be read."""
        known = self._names.get(owner)
        if known:
            return known
        path = self.path(owner)
        for candidate in (path, self._dead_path(path)):
            try:
                with open(candidate, "rb") as fh:
                    found = _label(fh.read(512))
            except OSError:
                continue
            if found:
                if len(self._names) >= 1024:
                    self._names.clear()
                self._names[owner] = found
                return found
        return f"{owner:016x}"

    def gone_count(self) -> int:
        try:
            return os.stat(self.gone_path).st_size
        except FileNotFoundError:
            return 0

    def count_gone(self) -> bool:
        """Count one owner gone (before its file is deleted); False if it
        could not be counted (then the file must stay, for others to see)."""
        try:
            fd = os.open(self.gone_path,
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                return os.write(fd, b"x") == 1
            finally:
                os.close(fd)
        except OSError:
            return False

    # -- ended leases ------------------------------------------------------------
    def leases_may_have_ended(self, t: _Topic, now: float, recent: float = 0.0) -> bool:
        """Whether the look for ended leases (a scan of the main log from its
        head, which a lease held long at the head of a big backlog makes
        slow) can find anything: a deadline passed, or an owner is gone since
        the last look. An owner that dies leaves its file unlocked until
        someone sees it; whoever sees it (or an owner closing) counts it in
        .owners/gone before deleting the file, so the file or the count
        tells. Read in that order: a file deleted is already counted.

        ``recent``: a probe of the owner files that found every one held
        less than this many seconds ago stands in for a new one (the count
        is read every time, so an owner that closes is seen at once, one
        that was killed at most ``recent`` seconds late). stats() passes it:
        the dashboard asks for every topic every second, and one listing and
        one probe per owner serve them all."""
        m = t.meta
        if not m.lease_min or now >= m.lease_min:
            return True
        if not recent or not 0 <= time.monotonic() - self._all_held_at < recent:
            probed_at = time.monotonic()
            if self._an_owner_file_is_not_held():
                return True
            self._all_held_at = probed_at
        return bool(self.gone_count() != m.reclaim_gone)

    def _an_owner_file_is_not_held(self) -> bool:
        """Whether another owner's file is there and not held (or cannot be
        probed); one found dead is counted and deleted on the way."""
        try:
            names = os.listdir(self.folder)
        except OSError:
            return True
        self._sweep(names)
        for name in names:
            if not name.endswith(".lock"):
                continue
            try:
                owner = int(name[:-5], 16)
            except ValueError:
                continue
            if owner == self.id:
                continue
            # A dead owner's file is counted and deleted by the probe, whether
            # or not it held a lease (an idle worker that was killed must not
            # make every later look a scan); then this topic looks.
            if self.probe(os.path.join(self.folder, name)) not in (_OWNER_ALIVE, _OWNER_MISSING):
                return True
        return False

    def reclaim(self, t: _Topic) -> None:
        """Leases whose owner died (its flock is gone) or whose deadline
        passed go back to the queue (lock held)."""
        m = t.meta
        lm = m.logs[MAIN]
        now = _now()
        m.last_reclaim = now
        gone = self.gone_count()  # before any owner is looked at
        self._seen = {}
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
                if e.deadline <= now or not self.alive(e.owner):
                    expired.append((e.slab.seq, e.off))
                    continue
                if e.deadline < lease_min:
                    lease_min = e.deadline
            if e.status in (READY, TAKEN) and first_live is None:
                first_live = (e.slab.seq, e.off)
        for e in t.entries_at(MAIN, expired):
            why = LEASE_EXPIRED if e.deadline <= now else OWNER_DIED
            move(t, e, MAIN, OP_RECLAIM, lost_lease(e.attempts, why, self.name(e.owner), now))
        # Every lease was seen (else the counters are off: look every time).
        m.lease_min = lease_min if seen >= total else 0.0
        m.reclaim_gone = gone
        if first_live is not None and first_live[0] in t.seqs(MAIN):
            _set_head(lm, *first_live)
