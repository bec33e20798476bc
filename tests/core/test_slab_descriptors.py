"""File descriptors: a topic holds a bounded number, whatever its backlog.

A mapped slab holds one descriptor (its map's), and a topic keeps at most
MAPPED_SLABS of them mapped when nothing refers to them; an fsync opens the
file again. Before this, every slab a process had read stayed mapped with two
descriptors until the topic closed, and a backlog of ~500 slabs ran a
process with the usual limit of 1024 open files out of descriptors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import queuecore.slab as slab_mod
from queuecore import DiskFull, Queues


def _fds_under(path: str) -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(path):
                n += 1
        except OSError:
            pass
    return n


def test_a_backlog_of_hundreds_of_slabs_works_under_a_low_open_file_limit(tmp_path: Path) -> None:
    """A real process with RLIMIT_NOFILE at 64 fills 300 slabs, browses
    them all, fsyncs them all at once, reopens with a rebuild of every
    counter, takes and completes every message, checking before and after:
    no EMFILE anywhere (it needed 600+ descriptors before)."""
    code = textwrap.dedent(
        f"""
        import os, resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        from queuecore import Queues
        d = {str(tmp_path)!r}
        kw = dict(slab_size=4096, serializer="raw", fsync_put=False)
        qs = Queues(d, **kw)
        for i in range(300):
            qs.put("q", b"%05d" % i + b"x" * 3000)  # one message per slab
        slabs = [n for n in os.listdir(os.path.join(d, "q")) if n.endswith(".slab")]
        assert len(slabs) >= 300, len(slabs)
        assert [m.id for m in qs.messages("q", limit=1000)] == list(range(1, 301))
        assert qs.peek("q", 150).value[:5] == b"00149"
        assert qs.stats()["q"]["ready"] == 300
        qs.fsync()  # one group commit over every slab written since the last
        qs._backend._topics["q"].meta.needs_recount = 1  # the next open rebuilds from every slab
        qs.close()
        qs = Queues(d, **kw)
        report = qs.check()  # reads every slab header and entry
        assert report["ok"] and report["topics"]["q"]["counts"]["ready"] == 300, report
        seen = []
        while (task := qs.take("q", timeout=0)) is not None:
            seen.append(int(task.value[:5]))
            assert task.complete()
        assert seen == list(range(300)), seen[:5]
        report = qs.check()
        assert report["ok"], report
        qs.close()
        assert sum(n.endswith(".slab") for n in os.listdir(os.path.join(d, "q"))) <= 1
        print("ok")
        """
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "ok"


def test_a_topic_holds_a_bounded_number_of_descriptors(tmp_path: Path) -> None:
    d = str(tmp_path)
    with Queues(d, slab_size=4096, serializer="raw", fsync_put=False) as qs:
        qs.put("small", b"x")
        # lock, sync, bell, users and the meta map, and one per mapped
        # slab (not two).
        assert _fds_under(os.path.join(d, "small") + "/") == 6
        for _ in range(100):
            qs.put("big", b"y" * 3000)
        assert len(list(qs.messages("big", limit=1000))) == 100  # maps every slab in turn
        assert _fds_under(os.path.join(d, "big") + "/") <= 5 + slab_mod.MAPPED_SLABS


def test_a_mixed_workload_with_one_mapped_slab_keeps_every_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With room for one idle map, every slab not in use is unmapped as
    soon as another is needed: retries, failures, delayed messages,
    reclaims and deletions of emptied slabs must all still find theirs
    (an entry, a scan or the change in progress keeps its slab mapped)."""
    monkeypatch.setattr(slab_mod.log, "MAPPED_SLABS", 1)
    d = str(tmp_path)
    with Queues(d, slab_size=4096, serializer="raw", fsync_put=False) as qs:
        for i in range(120):
            qs.put("q", b"%04d" % i + b"z" * 1500)  # two per slab
        outcome = {}
        for _ in range(120):
            task = qs.take("q", timeout=0)
            assert task is not None
            n = int(task.value[:4])
            if n % 3 == 0:
                assert task.complete()
                outcome[n] = "done"
            elif n % 3 == 1:
                assert task.retry(delay=0)
                outcome[n] = "again"
            else:
                assert task.fail("boom")
                outcome[n] = "failed"
        # The retried ones come back (after the originals), once each.
        again = []
        while (task := qs.take("q", timeout=0)) is not None:
            again.append(int(task.value[:4]))
            assert task.complete()
        assert sorted(again) == sorted(n for n, o in outcome.items() if o == "again")
        st = qs.stats()["q"]
        assert (st["ready"], st["in_progress"], st["failed"]) == (0, 0, 40)
        assert qs.requeue_failed("q") == 40
        left = []
        while (task := qs.take("q", timeout=0)) is not None:
            left.append(int(task.value[:4]))
            assert task.complete()
        assert sorted(left) == sorted(n for n, o in outcome.items() if o == "failed")
        report = qs.check()
        assert report["ok"], report
        assert len(qs._backend._topics["q"].slabs) <= 4  # head, cursor and tails at most


# -- from a review of the change ------------------------------------------------------


def test_a_slab_deleted_while_the_leader_syncs_outside_the_lock_has_its_deletion_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A durable complete of message 1 (slab 1): its leader collects the
    slab names under the lock; before it opens slab 1, another writer
    completes the last live entries there and slab 1 is deleted. The sync
    cannot fsync the file any more, so it must fsync the folder (the
    deletion) before the complete returns."""
    d = str(tmp_path)
    kw: dict[str, Any] = {"slab_size": 4096, "serializer": "raw", "fsync_put": False}
    a = Queues(d, fsync_take=True, **kw)
    b = Queues(d, **kw)  # another writer, not syncing its completes
    try:
        for i in range(4):
            a.put("q", b"%d" % i + b"p" * 1000)  # three per slab: 1-3 in slab 1
        t1 = a.take("q", timeout=0)
        t2, t3 = b.take("q", timeout=0), b.take("q", timeout=0)
        assert t1 is not None and t2 is not None and t3 is not None
        a.fsync()  # folder and slabs on disk: a clean start
        slab1 = os.path.join(d, "q", "m000000000001.slab")
        real_open, real_fsync = os.open, os.fsync
        folder_synced: list[bool] = []

        def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if str(path) == slab1 and flags & os.O_ACCMODE == os.O_RDONLY and not folder_synced:
                folder_synced.append(False)
                assert t2.complete() and t3.complete()  # slab 1 is deleted now
                assert not os.path.exists(slab1)
            return real_open(path, flags, *args, **kwargs)

        def fsync(fd: int) -> None:
            if os.readlink(f"/proc/self/fd/{fd}") == os.path.join(d, "q"):
                folder_synced.append(True)
            real_fsync(fd)

        monkeypatch.setattr(os, "open", open_)
        monkeypatch.setattr(os, "fsync", fsync)
        assert t1.complete()
        monkeypatch.undo()
        assert folder_synced[0] is False and True in folder_synced[1:]
    finally:
        a.close()
        b.close()


def test_an_undone_put_many_unseals_the_tail_even_after_it_was_unmapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A put_many seals the tail slab, starts two more and fails on a third
    (a full disk): undone, the first slab is the tail again and must not
    stay sealed, though mapping the new slabs could have unmapped it."""
    d = str(tmp_path)
    kw: dict[str, Any] = {"slab_size": 4096, "serializer": "raw", "fsync_put": False}
    with Queues(d, **kw) as qs:
        for _ in range(20):
            qs.put("q", b"x" * 3000)  # one per slab: 1..20
    with Queues(d, **kw) as qs:
        qs.put("q", b"small")  # maps the tail, slab 20, first
        qs.peek("q", 19)  # then maps 1..19: only 16 stay
        t = qs._backend._topics["q"]  # type: ignore[attr-defined]
        real_create = slab_mod._Slab.create.__func__  # type: ignore[attr-defined]

        def create(cls: Any, directory: str, log: int, seq: int, size: int, durable: bool) -> Any:
            if seq == 23:
                raise DiskFull(directory, "no space left (injected)")
            return real_create(cls, directory, log, seq, size, durable)

        monkeypatch.setattr(slab_mod._Slab, "create", classmethod(create))
        with pytest.raises(DiskFull):
            qs.put_many("q", [b"y" * 3000] * 3)  # seals 20, makes 21 and 22, fails at 23
        monkeypatch.undo()
        assert int(t.lms[0].tail_seq) == 20
        report = qs.check()
        assert report["ok"], report["problems"]
        qs.put("q", b"after")  # the tail takes entries again
        assert [m.value for m in qs.messages("q", limit=100)][-2:] == [b"small", b"after"]
