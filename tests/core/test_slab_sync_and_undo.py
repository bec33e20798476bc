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


# -- a second review ------------------------------------------------------------


def test_a_settle_to_an_old_slab_during_the_fsync_that_synced_it_is_synced_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader fsyncs slab 1, then a complete writes slab 1 before the
    leader records its success: the complete's own fsync must cover slab 1."""
    kw: dict[str, Any] = {"fsync_put": True, "fsync_take": True, "slab_size": 8192, "serializer": "raw"}
    qs = Queues(str(tmp_path), **kw)
    for v in (b"a", b"b", b"x"):
        qs.put("q", v * 100)  # slab 1 (x stays live: slab 1 is never deleted)
    qs.put("q", b"c" * 8000)  # slab 2 is the tail
    first, second = qs.take("q", timeout=0), qs.take("q", timeout=0)
    assert first is not None and second is not None
    t = qs.backend._get("q")  # type: ignore[attr-defined]
    real = os.fdatasync
    after: list[str] = []
    done: list[bool] = []

    def complete_first() -> None:
        done.append(first.complete())

    def fdatasync(fd: int) -> None:
        real(fd)
        if done:
            after.append(_name(fd))
        elif _name(fd) == "m000000000001.slab":
            op0 = int(t.meta.op_seq)
            threading.Thread(target=complete_first).start()
            while int(t.meta.op_seq) == op0:  # the complete wrote slab 1, after its fsync
                time.sleep(0.001)
            done.append(False)  # from here on, record what is synced

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    assert second.complete()  # leads the fsync that covers slab 1
    deadline = time.monotonic() + 10
    while len(done) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert done[-1] is True
    assert "m000000000001.slab" in after
    qs.close()


def test_a_change_undone_by_the_next_process_makes_every_process_list_slabs_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process killed after it made slab 2 (and wrote a whole entry
    there): the process that finishes its change adopts the entry; a third
    process must see slab 2 too, in its browse and in its fsyncs."""
    d = str(tmp_path)
    kw: dict[str, Any] = {"slab_size": 8192, "serializer": "raw"}
    b, other = Queues(d, **kw), Queues(d, fsync_put=True, **kw)
    b.put("q", b"a" * 8000)  # slab 1, full
    assert [r.id for r in other.messages("q")] == [1]  # other lists the slabs now
    code = textwrap.dedent(
        f"""
        from queuecore import Queues
        Queues({d!r}, slab_size=8192, serializer="raw").put("q", b"k" * 8000)
        """
    )
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "DQ_CRASH_AT": "append.after_header"})
    assert b.stats()["q"]["ready"] == 2  # b finishes the dead change: slab 2 adopted
    assert [r.id for r in other.messages("q")] == [1, 2]
    real = os.fdatasync
    synced: list[str] = []
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(_name(fd)), real(fd))[1])
    other.put("q", b"o" * 100)  # lands in slab 2: its fsync covers slab 2
    assert "m000000000002.slab" in synced
    b.close()
    other.close()


def test_an_undone_put_many_after_the_old_tail_emptied_keeps_the_old_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first entry of the batch made slab 2, which made the finished
    slab 1 deletable; the batch is undone: head, cursor and tail point to
    slab 1 again, so it must still be there, and leases keep working."""
    d = str(tmp_path)
    with Queues(d, slab_size=8192, serializer="raw", visibility_timeout=0.2) as qs:
        qs.put("q", b"a" * 8000)
        task = qs.take("q", timeout=0)
        assert task is not None and task.complete()  # slab 1: the tail, every entry done
        _full_after(1, monkeypatch)  # slab 2 made, slab 3 refused
        with pytest.raises(DiskFull):
            qs.put_many("q", [b"b" * 8000, b"c" * 8000])
        monkeypatch.undo()
        assert sorted(p.name for p in (tmp_path / "q").glob("*.slab")) == ["m000000000001.slab"]
        assert qs.check()["problems"] == []
        qs.put("q", b"d" * 8000)
        qs.put("q", b"e" * 8000)
        held = qs.take("q", timeout=0)
        assert held is not None and held.value[:1] == b"d"
        nxt = qs.take("q", timeout=0)
        assert nxt is not None and nxt.complete()
        again = qs.take("q", timeout=5)  # d's lease runs out: it is delivered again
        assert again is not None and again.id == held.id and again.complete()
        assert qs.stats()["q"] == {**qs.stats()["q"], "ready": 0, "in_progress": 0}
        assert qs.check()["problems"] == []


def test_a_move_whose_slab_cannot_be_scanned_keeps_the_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry empties slab 1 and the look before deleting it fails
    (EMFILE, EIO): the message is moved all the same, the slab stays."""
    from queuecore.slab import _Topic

    with Queues(str(tmp_path), slab_size=8192, serializer="raw") as qs:
        qs.put("q", b"a" * 8000)
        qs.put("q", b"b" * 100)  # slab 2 is the tail
        task = qs.take("q", timeout=0)
        assert task is not None and task.value[:1] == b"a"

        def scan_fails(self: _Topic, slab: Any) -> None:
            raise OSError(errno.EMFILE, "Too many open files")

        monkeypatch.setattr(_Topic, "_drop_if_finished", scan_fails)
        assert task.retry()
        monkeypatch.undo()
        assert qs.stats()["q"] == {**qs.stats()["q"], "ready": 2, "in_progress": 0}
        got = []
        while (t := qs.take("q", timeout=0)) is not None:
            got.append(t.value[:1])
            assert t.complete()
        assert sorted(got) == [b"a", b"b"]
        assert qs.check()["problems"] == []


def test_an_undone_move_puts_the_lease_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Anything raised after the entry was marked moved undoes the move:
    the copy goes and the entry is leased again, never lost."""
    from queuecore.slab import _Topic

    with Queues(str(tmp_path), serializer="raw") as qs:
        qs.put("q", b"a")
        task = qs.take("q", timeout=30)
        assert task is not None

        def boom(self: _Topic, e: Any) -> None:
            raise RuntimeError("injected after the entry was marked moved")

        monkeypatch.setattr(_Topic, "finished", boom)
        with pytest.raises(RuntimeError):
            task.retry()
        monkeypatch.undo()
        assert qs.stats()["q"] == {**qs.stats()["q"], "ready": 0, "in_progress": 1}
        assert [(r.id, r.state) for r in qs.messages("q")] == [(task.id, "in_progress")]
        assert task.complete()
        assert qs.check()["problems"] == []


def test_an_open_writes_not_clean_to_disk_before_any_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Power loss emulated: the meta file goes back to what was last
    flushed, and the machine boots again. A 'clean' mark left there by the
    last close must not be trusted once changes were made after it (a put
    would reuse an id and overwrite a message)."""
    import mmap as mmap_mod

    import queuecore.slab as slab_mod

    d = str(tmp_path)
    flushed: list[bytes] = []
    real_mmap = mmap_mod.mmap

    class Recording(real_mmap):  # type: ignore[misc, valid-type]
        def flush(self, *args: Any) -> None:
            super().flush(*args)
            if len(self) == slab_mod.META_SIZE:
                flushed.append(self[:])

    monkeypatch.setattr(mmap_mod, "mmap", Recording)
    with Queues(d, serializer="raw") as qs:
        assert qs.put("q", b"a") == 1
    with Queues(d, serializer="raw") as qs:  # fsync_put: the slabs are on disk
        assert qs.put("q", b"b") == 2
        assert qs.put("q", b"c") == 3
        on_disk = flushed[-1]  # the meta file as the disk holds it now
    monkeypatch.undo()
    with open(os.path.join(d, "q", "meta"), "r+b") as fh:
        fh.write(on_disk)
    monkeypatch.setattr(slab_mod.recovery, "_BOOT", (1, 2))  # another boot
    with Queues(d, serializer="raw") as qs:
        assert qs.put("q", b"d") == 4
        assert [r.value for r in qs.messages("q")] == [b"a", b"b", b"c", b"d"]


# -- a third review ---------------------------------------------------------------


@pytest.mark.parametrize("leader", ["killed", "emfile"])
def test_a_durable_write_to_an_old_slab_is_synced_after_a_leader_died_or_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leader: str
) -> None:
    """A complete marked slab 1 for the next fsync; before its own sync
    starts, another leader takes the mark over and is killed (or fails
    before any fsync): the complete's sync must still cover slab 1."""
    d = str(tmp_path)
    kw: dict[str, Any] = {"fsync_put": True, "fsync_take": True, "slab_size": 8192, "serializer": "raw"}
    qs = Queues(d, **kw)
    for v in (b"a", b"b", b"x"):
        qs.put("q", v * 100)  # slab 1 (x stays live: slab 1 is never deleted)
    qs.put("q", b"c" * 8000)  # slab 2 is the tail
    task = qs.take("q", timeout=0)
    assert task is not None
    # The complete is pre-empted between its change and its group commit.
    pending: list[tuple[Any, ...]] = []
    monkeypatch.setattr(SlabBackend, "_after_write", lambda *args: pending.append(args))
    assert task.complete()
    monkeypatch.undo()
    if leader == "killed":
        code = textwrap.dedent(
            f"""
            import os
            from queuecore import Queues
            qs = Queues({d!r}, fsync_put=True, slab_size=8192, serializer="raw")
            os.fdatasync = lambda fd: os.kill(os.getpid(), 9)  # dies in its fsync
            qs.put("q", b"z")
            """
        )
        assert subprocess.run([sys.executable, "-c", code]).returncode == -9
    else:
        real_open = os.open
        calls = [0]

        def open_(path: str, flags: int, *args: Any, **kw: Any) -> int:
            # The leader opens each slab again to fsync it outside the lock.
            if str(path).endswith(".slab") and flags & os.O_ACCMODE == os.O_RDONLY:
                calls[0] += 1
                if calls[0] == 1:
                    raise OSError(errno.EMFILE, "Too many open files")
            return real_open(path, flags, *args, **kw)

        monkeypatch.setattr(os, "open", open_)
        with pytest.raises(StorageError):  # typed, not a bare OSError
            qs.put("q", b"z")
        monkeypatch.undo()
    real = os.fdatasync
    synced: list[str] = []
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(_name(fd)), real(fd))[1])
    SlabBackend._after_write(*pending[0])  # the complete's own group commit
    assert "m000000000001.slab" in synced
    qs.close()


@pytest.mark.parametrize("outcome", ["complete", "retry"])
def test_a_kill_after_the_committing_change_deleted_its_slab_keeps_the_count(
    tmp_path: Path, outcome: str
) -> None:
    d = str(tmp_path)
    with Queues(d, slab_size=8192, serializer="raw") as qs:
        qs.put("q", b"a" * 8000)  # slab 1, full
        qs.put("q", b"b" * 100)  # slab 2 is the tail
        code = textwrap.dedent(
            f"""
            from queuecore import Queues
            task = Queues({d!r}, slab_size=8192, serializer="raw").take("q", timeout=0)
            assert task.value[:1] == b"a"
            task.{outcome}()  # empties slab 1: deleted as the change commits
            """
        )
        env = {**os.environ, "DQ_CRASH_AT": "slab.after_delete"}
        assert subprocess.run([sys.executable, "-c", code], env=env).returncode == -9
        st = qs.stats()["q"]
        if outcome == "complete":
            assert (st["completed"], st["ready"], st["in_progress"]) == (1, 1, 0)
        else:
            assert (st["retried"], st["ready"], st["in_progress"]) == (1, 2, 0)
        assert qs.check()["problems"] == []


def test_no_clean_mark_after_a_failed_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A complete whose fsync failed may never reach the disk: after a power
    loss the next open must rebuild the counters (the entry is leased on
    disk), not trust a clean mark, or the message is stranded."""
    import queuecore.slab as slab_mod

    d = str(tmp_path)
    qs = Queues(d, fsync_take=True, serializer="raw")
    qs.put("q", b"a")
    task = qs.take("q", timeout=60)
    assert task is not None
    seq, off, _tok = task._token  # type: ignore[attr-defined]
    slab_path = os.path.join(d, "q", f"m{seq:012d}.slab")
    with open(slab_path, "rb") as fh:  # the take was synced: this is on disk
        fh.seek(off + slab_mod.MUT_OFF)
        on_disk = fh.read(slab_mod.MUT.size)
    monkeypatch.setattr(os, "fdatasync", _eio)
    with pytest.raises(StorageError):
        task.complete()
    monkeypatch.undo()
    qs.close()
    with open(slab_path, "r+b") as fh:  # power loss: the completion never reached the disk
        fh.seek(off + slab_mod.MUT_OFF)
        fh.write(on_disk)
    monkeypatch.setattr(slab_mod.recovery, "_BOOT", (1, 2))
    with Queues(d, fsync_take=True, serializer="raw", visibility_timeout=1) as qs:
        # The rebuild finds it leased, and its owner gone (closed): ready
        # (a clean mark trusted would have counted it completed).
        assert [(r.id, r.state) for r in qs.messages("q")] == [(1, "ready")]
        assert qs.stats()["q"]["ready"] == 1
        again = qs.take("q", timeout=5)  # delivered again
        assert again is not None and again.id == 1 and again.complete()
        assert qs.check()["problems"] == []


def test_an_open_that_fails_leaves_no_lock_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mmap as mmap_mod

    import queuecore.slab as slab_mod

    d = str(tmp_path)
    with Queues(d, serializer="raw") as qs:
        qs.put("q", b"a")  # closed cleanly: the next open writes the mark away
    real_mmap = mmap_mod.mmap

    class FailingFlush(real_mmap):  # type: ignore[misc, valid-type]
        def flush(self, *args: Any) -> None:
            if len(self) == slab_mod.META_SIZE:
                raise OSError(errno.EIO, "Input/output error")
            super().flush(*args)

    monkeypatch.setattr(mmap_mod, "mmap", FailingFlush)
    qs = Queues(d, serializer="raw")
    with pytest.raises(StorageError):
        qs.put("q", b"b")
    monkeypatch.undo()
    code = textwrap.dedent(
        f"""
        from queuecore import Queues
        with Queues({d!r}, serializer="raw") as qs:
            qs.put("q", b"c")
        """
    )
    subprocess.run([sys.executable, "-c", code], timeout=20, check=True)  # used to hang for good
    qs.put("q", b"d")  # this process too, once the disk is fine
    assert [r.value for r in qs.messages("q")] == [b"a", b"c", b"d"]
    qs.close()
