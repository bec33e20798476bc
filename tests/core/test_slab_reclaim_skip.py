"""Looks under the topic's lock that read a whole log, made rare.

The look for ended leases is skipped while none can have ended.

It scans the main log from its head, under the topic's lock; a lease held
long at the head of a big backlog made every look (every 0.5 s) read the
whole backlog. The meta file now keeps the earliest lease deadline, and
owners that go away (killed, or closing with leases held) are counted in
.owners/gone before their file is deleted: until a deadline passes or an
owner goes, nothing is scanned. These tests kill and close real processes
and check that their leases still come back, whichever process or topic
noticed first. The promotion of delayed retries reads the delayed log again
only after a multiple of what its last read cost."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import queuecore.slab as slab_mod
from queuecore import Queues

from .conftest import HAS_SLAB, NO_SLAB

pytestmark = pytest.mark.skipif(not HAS_SLAB, reason=NO_SLAB)


def _holder(d: str, takes: list[str], then: str = "wait", **options: Any) -> subprocess.Popen[str]:
    """A process that takes one message from each topic in ``takes``,
    prints their ids, then waits for stdin (to be killed) or closes."""
    code = textwrap.dedent(
        f"""
        import sys
        from queuecore import Queues
        qs = Queues({d!r}, serializer="raw", **{options!r})
        tasks = [qs.take(name, timeout=5) for name in {takes!r}]
        print(" ".join(str(t.id) for t in tasks), flush=True)
        if {then!r} == "close":
            qs.close()  # the leases are still held
            print("closed", flush=True)
        sys.stdin.read()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    for f in (proc.stdin, proc.stdout):
        if f is not None:
            f.close()


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The topics each full look for ended leases scanned, in order."""
    seen: list[str] = []
    real = slab_mod.SlabBackend._reclaim

    def spy(self: slab_mod.SlabBackend, t: slab_mod._Topic) -> None:
        seen.append(t.name)
        real(self, t)

    monkeypatch.setattr(slab_mod.SlabBackend, "_reclaim", spy)
    return seen


def _look_now(qs: Queues, topic: str) -> None:
    """Make the next take of ``topic`` look for ended leases (due every 0.5 s)."""
    qs._backend._topics[topic].meta.last_reclaim = 0.0  # type: ignore[attr-defined]


def _two_leases_known(qs: Queues) -> None:
    """Three messages; this process holds 1 and 2, and a look (the first:
    nothing known yet) has noted the earliest deadline; 3 is left."""
    qs.put_many("q", [b"1", b"2", b"3"])
    assert qs.take("q", timeout=0) is not None
    _look_now(qs, "q")
    second = qs.take("q", timeout=0)
    assert second is not None and second.id == 2


def test_no_scan_while_no_lease_can_have_ended_then_a_killed_owner_is_found(
    tmp_path: Path, scans: list[str]
) -> None:
    d = str(tmp_path)
    with Queues(d, serializer="raw", slab_size=1 << 20) as qs:
        qs.put_many("q", [b"%d" % i for i in range(2000)])
        proc = _holder(d, ["q"])  # a live consumer holds message 1
        try:
            assert proc.stdout is not None and proc.stdout.readline().split() == ["1"]
            mine = qs.take("q", timeout=0)  # and this process message 2
            assert mine is not None and mine.id == 2
            # Work flows past the two leases held at the head.
            for _ in range(20):
                _look_now(qs, "q")
                tasks = qs.take_many("q", 50, timeout=0)
                assert qs.complete_many(tasks) == 50
            assert scans.count("q") == 1  # the first look (nothing known yet), then none
            _kill(proc)
            _look_now(qs, "q")
            back = qs.take_many("q", 1000, timeout=0)
            assert 1 in [t.id for t in back]  # found at once, not after 300 s
            assert scans.count("q") == 2
            qs.complete_many(back)
            assert mine.complete()
        finally:
            if proc.poll() is None:
                _kill(proc)


def test_an_owner_seen_dead_in_another_topic_is_still_found_in_this_one(
    tmp_path: Path, scans: list[str]
) -> None:
    """The process that sees a dead owner first (here, in topic a) deletes
    its file; topic b, which skips its scans, must still learn of it (the
    count of owners gone moved)."""
    d = str(tmp_path)
    with Queues(d, serializer="raw") as qs:
        qs.put_many("a", [b"a1", b"a2"])
        qs.put_many("b", [b"b1", b"b2", b"b3"])
        mine = qs.take("b", timeout=0)  # b1, held here: b keeps leases
        assert mine is not None
        proc = _holder(d, ["a", "b"])  # takes a1 and b2
        try:
            assert proc.stdout is not None and proc.stdout.readline().split() == ["1", "2"]
            # Every owner alive: b's looks find nothing (the holder's take
            # may have made b's first full look itself).
            _look_now(qs, "b")
            assert qs.take("b", timeout=0).id == 3  # type: ignore[union-attr]
            _look_now(qs, "b")
            assert qs.take("b", timeout=0) is None
            looked = scans.count("b")
            assert looked <= 1  # the last look at least was skipped
            _kill(proc)
            owners = os.path.join(d, ".owners")
            files = lambda: [n for n in os.listdir(owners) if n.endswith(".lock")]  # noqa: E731
            assert len(files()) == 2
            _look_now(qs, "a")
            got = qs.take_many("a", 2, timeout=0)  # a's look finds the dead owner, deletes its file
            assert sorted(t.id for t in got) == [1, 2]
            assert len(files()) == 1  # this process's
            _look_now(qs, "b")
            got_b = qs.take("b", timeout=0)
            assert got_b is not None and got_b.id == 2  # not left until its deadline
            assert scans.count("b") == looked + 1
        finally:
            if proc.poll() is None:
                _kill(proc)


def test_an_owner_that_closes_with_leases_held_is_noticed(tmp_path: Path, scans: list[str]) -> None:
    d = str(tmp_path)
    with Queues(d, serializer="raw") as qs:
        _two_leases_known(qs)
        proc = _holder(d, ["q"], then="close")  # takes 3 and closes with it
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().split() == ["3"]
            assert proc.stdout.readline().strip() == "closed"
            _look_now(qs, "q")
            got = qs.take("q", timeout=0)
            assert got is not None and got.id == 3
        finally:
            _kill(proc)


def test_a_short_lease_of_another_process_ends_on_time(tmp_path: Path, scans: list[str]) -> None:
    """This process's leases last 300 s; another's 0.3 s: the earliest
    deadline kept in the meta file is the other's, so the look after it
    passed is not skipped."""
    d = str(tmp_path)
    with Queues(d, serializer="raw") as qs:
        _two_leases_known(qs)
        proc = _holder(d, ["q"], visibility_timeout=0.3)  # takes 3 for 0.3 s, stays alive
        try:
            assert proc.stdout is not None and proc.stdout.readline().split() == ["3"]
            got = qs.take("q", timeout=5)  # wakes to look every 0.5 s
            assert got is not None and got.id == 3 and got.attempts == 2
        finally:
            _kill(proc)


def test_a_rebuild_forgets_the_earliest_deadline(tmp_path: Path, scans: list[str]) -> None:
    d = str(tmp_path)
    with Queues(d, serializer="raw") as qs:
        qs.put_many("q", [b"1", b"2"])
        assert qs.take("q", timeout=0) is not None
        _look_now(qs, "q")
        assert qs.take("q", timeout=0) is not None
        t = qs._backend._topics["q"]  # type: ignore[attr-defined]
        assert t.meta.lease_min > 0
        with t.locked():
            t._recount()
        assert t.meta.lease_min == 0  # not known: the next look scans


# -- the promotion of delayed retries -------------------------------------------------


def test_the_delayed_log_is_read_again_only_after_a_multiple_of_what_reading_it_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each promotion reads the whole delayed log under the lock; with
    retries coming due one after another it ran at every take (100,000
    retries spread over 2 s took over 10 minutes to come back). The next
    look now waits PROMOTE_COST_FACTOR times what the read cost."""
    reads: list[float] = []
    real = slab_mod.SlabBackend._promote

    def spy(self: slab_mod.SlabBackend, t: slab_mod._Topic) -> None:
        reads.append(t.meta.next_due)
        real(self, t)

    monkeypatch.setattr(slab_mod.SlabBackend, "_promote", spy)
    d = str(tmp_path)
    with Queues(d, serializer="raw") as qs:
        qs.put_many("q", [b"%d" % i for i in range(200)])
        tasks = qs.take_many("q", 200, timeout=0)
        for i, task in enumerate(tasks):
            assert task.retry(delay=0.2 + i * 0.001)  # due one after another
        monkeypatch.setattr(slab_mod.operations, "PROMOTE_COST_FACTOR", 10**7)  # a read "costs" seconds
        first = qs.take("q", timeout=5)  # waits for the first to come due
        assert first is not None
        meta = qs._backend._topics["q"].meta  # type: ignore[attr-defined]
        assert meta.next_due > slab_mod._now() + 1  # the next read is far off
        n = len(reads)
        early = qs.take_many("q", 200, timeout=0.3)  # those already moved, if any
        assert len(reads) == n  # more came due meanwhile: not read again
        monkeypatch.setattr(slab_mod.operations, "PROMOTE_COST_FACTOR", 20)
        meta.next_due = slab_mod._now()  # as after the wait
        got = [first, *early] + qs.take_many("q", 200, timeout=0)
        while len(got) < 200:
            more = qs.take_many("q", 200, timeout=5)
            assert more, f"{len(got)} of 200 came back"
            got += more
        assert sorted(int(t.value) for t in got) == list(range(200))
        assert qs.complete_many(got) == 200


# -- from a review of the skip ---------------------------------------------------------


def test_a_look_while_an_owner_closes_with_a_lease_never_skips_it_for_good(
    tmp_path: Path, scans: list[str]
) -> None:
    """An owner closing with a lease held is counted gone and its file
    deleted; a look that lands between the two must not record the new
    count while the file still looks alive (the lease would then wait for
    its deadline): the closer lets go of its lock before it is counted."""
    d = str(tmp_path)
    with Queues(d, serializer="raw", visibility_timeout=60) as qs:
        qs.put_many("q", [b"1", b"2"])
        closer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import sys
            import queuecore.slab as slab_mod
            from queuecore import Queues
            real = slab_mod.owners._Owners.count_gone
            def count_then_pause(self):
                ok = real(self)
                print("counted", flush=True)
                sys.stdin.readline()  # the moment between the count and the deletion
                return ok
            slab_mod.owners._Owners.count_gone = count_then_pause
            qs = Queues({d!r}, serializer="raw", visibility_timeout=60)
            print(qs.take("q", timeout=5).id, flush=True)
            qs.close()  # with the lease held
            print("closed", flush=True)
            """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert closer.stdout is not None and closer.stdin is not None
            assert closer.stdout.readline().strip() == "1"
            assert closer.stdout.readline().strip() == "counted"
            _look_now(qs, "q")
            assert qs.take("q", timeout=0).id == 2  # type: ignore[union-attr]  # a look in that moment
            closer.stdin.write("\n")
            closer.stdin.flush()
            assert closer.stdout.readline().strip() == "closed"
            assert closer.wait(timeout=10) == 0
            _look_now(qs, "q")
            got = qs.take("q", timeout=0)
            assert got is not None and got.id == 1  # now, not in 60 s
        finally:
            if closer.poll() is None:
                closer.kill()
            closer.wait(timeout=10)
            for f in (closer.stdin, closer.stdout):
                if f is not None:
                    f.close()


def test_an_idle_owner_that_died_is_cleared_and_the_skip_works_again(
    tmp_path: Path, scans: list[str]
) -> None:
    """A worker that exits without close() and holds no lease leaves its
    owner file unlocked, and no lease names it: the next look counts and
    deletes it, and the looks after it are skipped again."""
    d = str(tmp_path)
    with Queues(d, serializer="raw") as qs:
        qs.put_many("q", [b"x"] * 300)
        held = qs.take("q", timeout=0)  # a lease held long at the head
        assert held is not None

        def looks(n: int) -> int:
            before = len(scans)
            for _ in range(n):
                _look_now(qs, "q")
                qs.complete_many(qs.take_many("q", 5, timeout=0))
            return len(scans) - before

        assert looks(10) == 1  # the first: nothing known yet
        _run = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            from queuecore import Queues
            qs = Queues({d!r}, serializer="raw")
            qs.take("q", timeout=0).complete()  # and exits without close()
            """)], timeout=30)
        assert _run.returncode == 0
        owners = os.path.join(d, ".owners")
        assert len([n for n in os.listdir(owners) if n.endswith(".lock")]) == 2
        assert looks(10) == 1  # one look, which clears the dead owner's file
        assert len([n for n in os.listdir(owners) if n.endswith(".lock")]) == 1
        assert looks(10) == 0
        assert held.complete()


def test_an_owner_file_gets_its_name_only_once_locked(tmp_path: Path) -> None:
    d = str(tmp_path)
    with Queues(d, serializer="raw") as qs:
        qs.put("q", b"x")
        assert qs.take("q", timeout=0) is not None
        names = os.listdir(os.path.join(d, ".owners"))
        assert [n for n in names if n.endswith(".new")] == []
        (name,) = [n for n in names if n.endswith(".lock")]
        fd = os.open(os.path.join(d, ".owners", name), os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        finally:
            os.close(fd)
