"""Group commit and undone changes of the slab backend, at their edges: an
fsync that fails while other changes commit, a change undone after a failed
fsync, writes to older slabs, slabs deleted or made while a sync runs, and a
change undone after it made a slab (found by a review of the engine; each
test failed before its fix). Faults that cannot be produced for real (EIO,
ENOSPC) are injected into ``os.fdatasync`` and ``os.posix_fallocate``."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from queuecore import DiskFull, Queues, StorageError
from queuecore.slab import SlabBackend

from .conftest import HAS_SLAB, NO_SLAB

pytestmark = pytest.mark.skipif(not HAS_SLAB, reason=NO_SLAB)


def _eio(fd: int) -> None:
    raise OSError(errno.EIO, "Input/output error")


def _name(fd: int) -> str:
    return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))


def test_a_put_committed_while_a_failing_fsync_runs_is_not_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    qs = Queues(str(tmp_path), fsync_put=True)
    qs.put("q", "warm")
    t = qs.backend._get("q")  # type: ignore[attr-defined]
    real = os.fdatasync
    results: list[tuple[str, Any]] = []
    calls = [0]

    def put_b() -> None:
        try:
            results.append(("B", qs.put("q", "B")))
        except StorageError as exc:
            results.append(("B", exc))

    def fdatasync(fd: int) -> None:
        calls[0] += 1
        if calls[0] == 1:
            op0 = int(t.meta.op_seq)
            threading.Thread(target=put_b).start()
            while int(t.meta.op_seq) == op0:  # B commits during this fsync ...
                time.sleep(0.001)
            raise OSError(errno.EIO, "EIO")  # ... which fails
        real(fd)  # a later fsync says "fine": the kernel reported the error once

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    with pytest.raises(StorageError):
        qs.put("q", "A")
    deadline = time.monotonic() + 10
    while not results and time.monotonic() < deadline:
        time.sleep(0.01)
    assert results and isinstance(results[0][1], StorageError), results
    qs.close()


def test_an_undone_change_keeps_the_failed_fsync_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = str(tmp_path)
    qs = Queues(d, fsync_put=False)
    qs.put("q", "warm")
    qs.put("q", "A")
    b = qs.backend
    t = b._get("q")  # type: ignore[attr-defined]
    op_a = int(t.meta.op_seq)
    # Another process dies in the middle of a put: its change is undone later.
    code = f"from queuecore import Queues\nQueues({d!r}, fsync_put=False).put('q', 'B')"
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "DQ_CRASH_AT": "put.before_counters"})
    assert t.intent.active
    monkeypatch.setattr(os, "fdatasync", _eio)
    with pytest.raises(StorageError):
        b._sync_topic(t, op_a)  # type: ignore[attr-defined]
    monkeypatch.undo()
    assert qs.stats()["q"]["ready"] >= 2  # the next lock holder undid the dead put
    with pytest.raises(StorageError):
        b._sync_topic(t, op_a)  # type: ignore[attr-defined]  # still not durable
    qs.close()


def test_a_write_to_the_old_tail_after_its_fsync_is_synced_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = str(tmp_path)
    a = Queues(d, fsync_put=True, slab_size=8192, serializer="raw")
    a.put("q", b"w" * 100)
    t = a.backend._get("q")  # type: ignore[attr-defined]
    other = SlabBackend(d, fsync_put=False, slab_size=8192)  # as another process would
    real = os.fdatasync
    synced: list[str] = []
    x_op: list[int] = []

    def fdatasync(fd: int) -> None:
        real(fd)
        synced.append(_name(fd))
        if not x_op:
            other.put("q", [b"X" * 100], None)  # lands in slab 1 after its fsync
            x_op.append(int(t.meta.op_seq))
            other.put("q", [b"Y" * 7900], None)  # does not fit: slab 2

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    a.put("q", b"a" * 100)
    synced.clear()
    a.backend._sync_topic(t, x_op[0])  # type: ignore[attr-defined]  # X's wait
    assert "m000000000001.slab" in synced
    other.close()
    a.close()


def test_fsync_take_syncs_the_slab_a_complete_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    qs = Queues(str(tmp_path), fsync_put=True, fsync_take=True, slab_size=8192, serializer="raw")
    qs.put("q", b"a" * 100)
    qs.put("q", b"b" * 100)
    qs.put("q", b"c" * 8000)  # slab 2 is the tail now
    task = qs.take("q", timeout=0)
    assert task is not None
    real = os.fdatasync
    synced: list[str] = []
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(_name(fd)), real(fd))[1])
    assert task.complete()  # its entry is in slab 1, which stays (b is live there)
    assert "m000000000001.slab" in synced
    qs.close()


def test_a_slab_deleted_while_a_sync_runs_is_no_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    qs = Queues(str(tmp_path), slab_size=8192, serializer="raw")  # fsync_put=True
    qs.put("q", b"a" * 100)
    task = qs.take("q", timeout=0)
    assert task is not None
    real = os.fdatasync
    first = [True]

    def fdatasync(fd: int) -> None:
        if first[0]:
            first[0] = False
            th = threading.Thread(target=task.complete)  # slab 1 finished: deleted
            th.start()
            th.join()
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    qs.put("q", b"b" * 8000)  # makes slab 2; the sync covers both
    t = qs.backend._get("q")  # type: ignore[attr-defined]
    assert int(t.meta.sync_error_op) == 0
    assert qs.stats()["q"]["ready"] == 1
    qs.close()


def _full_after(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.posix_fallocate
    calls = [0]

    def fallocate(fd: int, off: int, size: int) -> None:
        calls[0] += 1
        if calls[0] > n:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, off, size)

    monkeypatch.setattr(os, "posix_fallocate", fallocate)


def test_an_undone_put_many_leaves_no_slab_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The undone change made slab 2: it must go, or another process making
    slab 2 again would have its message deleted through this one's mapping."""
    d = str(tmp_path)
    kw: dict[str, Any] = {"slab_size": 8192, "serializer": "raw"}
    a, b = Queues(d, **kw), Queues(d, **kw)
    a.put("q", b"a" * 8000)
    _full_after(1, monkeypatch)
    with pytest.raises(DiskFull):
        a.put_many("q", [b"b" * 8000, b"c" * 8000])  # slab 2 made, slab 3 refused
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "q").glob("*.slab")) == ["m000000000001.slab"]
    assert a.check()["ok"]
    b.put("q", b"B" * 8000)  # slab 2 again
    a.put("q", b"A2")  # a finds the tail slab is another file now
    got = []
    while (task := b.take("q", timeout=0)) is not None:
        got.append(bytes(task.value[:2]))
        assert task.complete()
    assert got == [b"aa", b"BB", b"A2"]
    assert b.check()["ok"] and a.check()["ok"]
    a.close()
    b.close()


def test_check_is_clean_after_an_undone_put_many(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Queues(str(tmp_path), slab_size=8192, serializer="raw") as qs:
        qs.put("q", b"a" * 100)
        _full_after(0, monkeypatch)
        with pytest.raises(DiskFull):
            qs.put_many("q", [b"b" * 100, b"c" * 8000])
        monkeypatch.undo()
        assert qs.check() == {**qs.check(), "ok": True, "problems": []}
        qs.put("q", b"d" * 8000)  # seals slab 1 where the undone entry was
        assert qs.check()["problems"] == []
        assert qs.stats()["q"]["ready"] == 2


def test_check_is_clean_after_a_kill_in_a_put_and_a_sealing_put(tmp_path: Path) -> None:
    d = str(tmp_path)
    with Queues(d, slab_size=8192, serializer="raw") as qs:
        qs.put("q", b"a" * 100)
    code = textwrap.dedent(
        f"""
        from queuecore import Queues
        Queues({d!r}, slab_size=8192, serializer="raw").put("q", b"k" * 100)
        """
    )
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "DQ_CRASH_AT": "append.before_header"})
    with Queues(d, slab_size=8192, serializer="raw") as qs:
        qs.put("q", b"b" * 8000)  # seals slab 1 over what the killed put left
        assert qs.check()["problems"] == []
        assert qs.stats()["q"]["ready"] == 2


def test_a_head_past_a_live_lease_is_reported_and_fixed(tmp_path: Path) -> None:
    d = str(tmp_path)
    kw: dict[str, Any] = {"slab_size": 8192, "serializer": "raw", "visibility_timeout": 0.2}
    with Queues(d, **kw) as qs:
        qs.put("q", b"x" * 3000)
        qs.put("q", b"y" * 3000)  # slab 1: ids 1, 2
        qs.put("q", b"z" * 3000)  # slab 2: id 3
        for _ in range(2):
            task = qs.take("q", timeout=0)
            assert task is not None and task.complete()
        held = qs.take("q", timeout=0)
        assert held is not None and held.id == 3
        t = qs.backend._get("q")  # type: ignore[attr-defined]
        t.lms[0].head_off = 3208  # a torn position, past id 3's entry
        problems = qs.check()["problems"]
        assert problems == ["q: the head of log m is past a live entry"]
        assert qs.check(fix=True)["fixed"]
        assert qs.check()["problems"] == []
