"""What only the slab backend promises: it survives closing and reopening,
finished slabs go away, and two ``Queues`` objects on one directory in one
process behave as two processes would. (Torn and corrupt slab tails are in
test_slab_recovery.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from queuecore import MessageNotFound, Queues, Task

from .conftest import HAS_SLAB, NO_SLAB

pytestmark = pytest.mark.skipif(not HAS_SLAB, reason=NO_SLAB)

WORKER = Path(__file__).with_name("worker.py")
PATIENCE = 30.0
COUNTS = ("enqueued", "ready", "delayed", "in_progress", "completed", "retried", "failed")


def counts(qs: Queues, topic: str) -> dict[str, int]:
    stats = qs.stats()[topic]
    return {k: stats[k] for k in COUNTS}


def ids_in(qs: Queues, topic: str, state: str) -> list[int]:
    return [m.id for m in qs.messages(topic, state=state, limit=10_000)]


def take_until(qs: Queues, topic: str, want: int) -> list[Task]:
    """Take until ``want`` tasks came, waiting up to PATIENCE in all."""
    tasks: list[Task] = []
    deadline = time.monotonic() + PATIENCE
    while len(tasks) < want and time.monotonic() < deadline:
        tasks += qs.take_many(topic, want - len(tasks), timeout=0.5)
    return tasks


def abandon_in_a_child(location: str, topic: str, count: int, options: dict[str, Any]) -> list[int]:
    """A child process takes ``count`` messages and exits without completing them."""
    args = {"location": location, "topic": topic, "count": count, "options": options}
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, str(WORKER), "abandon", json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=PATIENCE * 2,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    location = str(tmp_path / "queues")
    options = {"visibility_timeout": 300, "slab_size": 4096}
    with Queues(location, **options) as qs:
        ids = qs.put_many("t", [{"n": i, "pad": "x" * 300} for i in range(12)])
        done, failed, delayed, retried = qs.take_many("t", 4, timeout=0)
        assert done.complete()
        assert failed.fail("it broke")
        assert delayed.retry(delay=600, reason="later")
        assert retried.retry()
        qs.put("other", b"second topic")
        before = counts(qs, "t")
        delayed_due = qs.peek("t", delayed.id).not_before
    abandoned = abandon_in_a_child(location, "t", 2, options)
    assert abandoned == ids[4:6]
    assert before == {
        "enqueued": 12,
        "ready": 9,
        "delayed": 1,
        "in_progress": 0,
        "completed": 1,
        "retried": 2,
        "failed": 1,
    }

    with Queues(location, **options) as qs:
        assert qs.topics() == ["other", "t"]
        after = counts(qs, "t")
        # The child's two messages are in progress or, its owner being dead, ready again.
        assert after["ready"] + after["in_progress"] == 9
        assert {k: after[k] for k in ("enqueued", "delayed", "completed", "failed")} == {
            "enqueued": 12,
            "delayed": 1,
            "completed": 1,
            "failed": 1,
        }
        assert ids_in(qs, "t", "failed") == [failed.id]
        assert ids_in(qs, "t", "delayed") == [delayed.id]
        message = qs.peek("t", failed.id)
        assert (message.state, message.attempts, message.value) == (
            "failed",
            1,
            {"n": 1, "pad": "x" * 300},
        )
        assert message.errors[-1]["reason"] == "it broke"
        message = qs.peek("t", delayed.id)
        assert message.errors[-1]["reason"] == "later"
        assert message.not_before == pytest.approx(delayed_due)
        try:
            assert qs.peek("t", done.id).state == "completed"
        except MessageNotFound:
            pass
        assert qs.peek("other", 1).value == b"second topic"

        # Everything ready comes out, the abandoned ones included, each once.
        tasks = take_until(qs, "t", 9)
        assert sorted(t.id for t in tasks) == sorted([retried.id, *ids[4:]])
        attempts = {t.id: t.attempts for t in tasks}
        assert attempts == {mid: 2 if mid in (retried.id, *abandoned) else 1 for mid in attempts}
        assert all(t.value["n"] == ids.index(t.id) for t in tasks)
        assert all(t.complete() for t in tasks)
        assert qs.take("t", timeout=0) is None
        # Ids go on increasing after a reopen.
        assert qs.put("t", "new") > ids[-1]
        assert qs.check()["ok"] is True


def test_counters_survive_reopen_exactly(tmp_path: Path) -> None:
    location = str(tmp_path / "queues")
    with Queues(location, fsync_put=False) as qs:
        qs.put_many("t", list(range(20)))
        for task in qs.take_many("t", 20, timeout=0):
            if task.value % 4 == 0:
                assert task.complete()
            elif task.value % 4 == 1:
                assert task.retry()
            elif task.value % 4 == 2:
                assert task.fail("x")
            else:
                assert task.retry(delay=600)
        before = qs.stats()
    with Queues(location) as qs:
        assert qs.stats() == before
    with Queues(location) as one, Queues(location) as two:
        assert one.stats() == two.stats() == before


def test_ids_are_never_reused(tmp_path: Path) -> None:
    location = str(tmp_path / "queues")
    with Queues(location, slab_size=4096) as qs:
        ids = qs.put_many("t", ["x" * 500] * 20)
        assert all(t.complete() for t in qs.take_many("t", 20, timeout=0))
    with Queues(location, slab_size=4096) as qs:
        assert qs.put("t", "after") > ids[-1]
        assert qs.messages("t") and qs.messages("t")[0].value == "after"


def slab_files(location: str, topic: str) -> list[str]:
    return sorted(p.name for p in (Path(location) / topic).glob("*.slab"))


def test_finished_slabs_are_deleted(tmp_path: Path) -> None:
    location = str(tmp_path / "queues")
    with Queues(location, fsync_put=False, slab_size=4096) as qs:
        qs.put_many("t", [b"y" * 400 for _ in range(60)])
        full = qs.stats()["t"]
        assert full["num_slabs"] > 3 and full["num_active_slabs"] > 3
        while tasks := qs.take_many("t", 7, timeout=0):
            assert all(t.complete() for t in tasks)
        empty = qs.stats()["t"]
        assert empty["num_slabs"] <= 1 and empty["num_active_slabs"] == 0
        assert len(slab_files(location, "t")) <= 1


def test_failed_messages_do_not_pin_a_slab(tmp_path: Path) -> None:
    location = str(tmp_path / "queues")
    with Queues(location, fsync_put=False, slab_size=4096) as qs:
        ids = qs.put_many("t", [{"i": i, "pad": "z" * 400} for i in range(40)])
        tasks = qs.take_many("t", 40, timeout=0)
        assert tasks[0].fail("first one is bad")
        assert all(t.complete() for t in tasks[1:])
        stats = qs.stats()["t"]
        assert stats["num_slabs"] <= 1 and stats["failed"] == 1
        assert len([n for n in slab_files(location, "t") if n.startswith("m")]) <= 1
    with Queues(location) as qs:
        message = qs.peek("t", ids[0])
        assert message.state == "failed" and message.value["i"] == 0
        assert message.errors[-1]["reason"] == "first one is bad"
        assert qs.requeue_failed("t") == 1
        task = qs.take("t", timeout=0)
        assert task is not None and (task.id, task.attempts) == (ids[0], 2)


def test_a_topic_is_a_folder_inside_the_directory(tmp_path: Path) -> None:
    root = tmp_path / "queues"
    with Queues(str(root)) as qs:
        for topic in ("orders.v2", "x..y", "_-"):
            qs.put(topic, 1)
    assert {p.name for p in root.iterdir() if not p.name.startswith(".")} == {
        "orders.v2",
        "x..y",
        "_-",
    }
    assert {p.name for p in tmp_path.iterdir()} == {"queues"}


def test_fsync_put_default_survives_reopen(tmp_path: Path) -> None:
    location = str(tmp_path / "queues")
    with Queues(location) as qs:
        assert qs.options["fsync_put"] is True
        ids = [qs.put("t", i) for i in range(5)]
        qs.fsync()
    with Queues(location) as qs:
        assert [m.id for m in qs.messages("t")] == ids


# -- two Queues objects in one process -------------------------------------------


def test_two_objects_share_puts_and_never_deliver_twice(tmp_path: Path) -> None:
    location = str(tmp_path / "queues")
    one, two = Queues(location, fsync_put=False), Queues(location, fsync_put=False)
    try:
        handled: list[tuple[int, Any]] = []
        put_ids: list[int] = []
        lock = threading.Lock()
        stop = threading.Event()

        def produce(qs: Queues, tag: str) -> None:
            for i in range(100):
                mid = qs.put("t", f"{tag}{i}")
                with lock:
                    put_ids.append(mid)

        refused: list[int] = []

        def consume(qs: Queues) -> None:
            while not stop.is_set():
                for task in qs.take_many("t", 3, timeout=0.2):
                    ok = task.complete()
                    with lock:
                        if ok:
                            handled.append((task.id, task.value))
                        else:
                            refused.append(task.id)

        consumers = [threading.Thread(target=consume, args=(qs,)) for qs in (one, two, one, two)]
        producers = [
            threading.Thread(target=produce, args=(qs, tag)) for qs, tag in ((one, "a"), (two, "b"))
        ]
        for thread in consumers + producers:
            thread.start()
        for thread in producers:
            thread.join(PATIENCE)
        deadline = time.monotonic() + PATIENCE
        while len(handled) + len(refused) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        for thread in consumers:
            thread.join(PATIENCE)
        assert refused == [], "complete() refused a lease nobody took over"
        assert len(set(put_ids)) == 200, "two objects gave out the same id"
        assert [mid for mid, n in Counter(m for m, _ in handled).items() if n > 1] == []
        assert sorted(v for _, v in handled) == sorted(
            [f"a{i}" for i in range(100)] + [f"b{i}" for i in range(100)]
        )
        assert one.stats() == two.stats()
        assert counts(one, "t") == dict(
            counts(one, "t"), enqueued=200, completed=200, ready=0, in_progress=0
        )
    finally:
        one.close()
        two.close()


def test_closing_one_object_gives_its_messages_to_the_other(tmp_path: Path) -> None:
    # Like a process that exits without completing: the messages come back
    # at once, not after the five-minute lease.
    location = str(tmp_path / "queues")
    options = {"fsync_put": False, "visibility_timeout": 300}
    with Queues(location, **options) as other:
        one = Queues(location, **options)
        ids = one.put_many("t", ["a", "b", "c"])
        held = one.take_many("t", 2, timeout=0)
        assert other.take("t", timeout=0.3).id == ids[2]  # type: ignore[union-attr]
        assert other.take("t", timeout=0) is None  # the lease of a live owner holds
        one.close()
        tasks = take_until(other, "t", 2)
        assert [(t.id, t.attempts) for t in tasks] == [(ids[0], 2), (ids[1], 2)]
        assert all(t.complete() for t in tasks)
        del held


def test_a_requeue_by_one_object_refuses_the_lease_of_the_other(tmp_path: Path) -> None:
    location = str(tmp_path / "queues")
    with Queues(location) as one, Queues(location) as two:
        mid = one.put("t", "x")
        old = one.take("t", timeout=0)
        assert old is not None
        two.requeue("t", mid)
        new = two.take("t", timeout=0)
        assert new is not None and new.attempts == 2
        assert old.complete() is False
        assert new.complete() is True
        assert one.stats()["t"]["completed"] == 1


def test_a_waiting_take_in_one_object_wakes_on_a_put_in_the_other(tmp_path: Path) -> None:
    location = str(tmp_path / "queues")
    with Queues(location) as one, Queues(location) as two:
        one.take("t", timeout=0)
        got: list[Any] = []
        thread = threading.Thread(target=lambda: got.append(one.take("t", timeout=PATIENCE)))
        thread.start()
        time.sleep(0.3)
        two.put("t", "ding")
        thread.join(PATIENCE + 5)
        assert got and got[0] is not None and got[0].value == "ding"


def test_a_forked_child_does_not_steal_or_drop_the_parents_leases(tmp_path: Path) -> None:
    location = str(tmp_path / "queues")
    options = {"fsync_put": False, "visibility_timeout": 300}
    with Queues(location, **options) as qs, Queues(location, **options) as watcher:
        ids = qs.put_many("t", ["parent", "child"])
        mine = qs.take("t", timeout=0)
        assert mine is not None and mine.id == ids[0]
        pid = os.fork()
        if pid == 0:  # the child: use the inherited object, then exit
            code = 1
            try:
                # The parent's slab files and maps were let go at the fork.
                links = []
                for name in os.listdir("/proc/self/fd"):
                    try:
                        links.append(os.readlink(f"/proc/self/fd/{name}"))
                    except OSError:
                        pass
                if any(link.endswith(".slab") for link in links):
                    os._exit(2)
                task = qs.take("t", timeout=5)
                if task is not None and task.id == ids[1] and task.complete():
                    code = 0
                qs.close()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The child's exit must not make the parent's lease look dead.
        time.sleep(1.0)
        assert watcher.take("t", timeout=0.5) is None
        assert watcher.peek("t", ids[0]).state == "in_progress"
        assert mine.complete() is True
        assert counts(watcher, "t")["completed"] == 2


def test_waiting_takes_reuse_their_bell_watches(tmp_path: Path) -> None:
    """Closing an inotify watch costs the kernel milliseconds, so a waiting
    take keeps its watch for the next one: one watch per thread that waited
    at the same time, and every wake-up still arrives."""
    with Queues(str(tmp_path), fsync_put=False) as qs, Queues(str(tmp_path), fsync_put=False) as other:
        t = qs.backend._get("q")  # type: ignore[attr-defined]
        for i in range(3):
            got: list[Task | None] = []
            waiter = threading.Thread(target=lambda got=got: got.append(qs.take("q", timeout=PATIENCE)))
            waiter.start()
            while not t.meta.waiters:  # the take is waiting (registered under the lock)
                time.sleep(0.001)
            other.put("q", i)
            waiter.join(PATIENCE)
            assert got and got[0] is not None and got[0].value == i
            assert got[0].complete()
        assert len(t.watches) == 1
        # Two threads waiting at once: two watches, both woken.
        results: list[Task | None] = []
        waiters = [threading.Thread(target=lambda: results.append(qs.take("q", timeout=PATIENCE)))
                   for _ in range(2)]
        for w in waiters:
            w.start()
        while t.meta.waiters < 2:
            time.sleep(0.001)
        other.put_many("q", ["a", "b"])
        for w in waiters:
            w.join(PATIENCE)
        assert sorted(r.value for r in results if r is not None) == ["a", "b"]
        assert len(t.watches) == 2


def test_group_commit_one_fsync_covers_the_threads_that_waited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one thread's fsync runs, other threads' puts append and wait;
    the next fsync covers all of them at once, and none returns before a
    fsync that covers its own message has finished."""
    with Queues(str(tmp_path), fsync_put=True) as qs:
        qs.put("q", "warm-up")  # the slab exists: only entries are synced below
        t = qs.backend._get("q")  # type: ignore[attr-defined]
        real = os.fdatasync
        calls: list[int] = []
        first_running, release = threading.Event(), threading.Event()

        def fdatasync(fd: int) -> None:
            calls.append(fd)
            if len(calls) == 1:
                first_running.set()
                release.wait(PATIENCE)  # the first fsync is slow
            real(fd)

        monkeypatch.setattr(os, "fdatasync", fdatasync)
        done: list[str] = []
        put = lambda v: (qs.put("q", v), done.append(v))  # noqa: E731
        leader = threading.Thread(target=put, args=("A",))
        leader.start()
        assert first_running.wait(PATIENCE)
        op_a = int(t.meta.op_seq)
        followers = [threading.Thread(target=put, args=(v,)) for v in ("B", "C", "D")]
        for f in followers:
            f.start()
        while int(t.meta.op_seq) < op_a + 3:  # B, C and D appended ...
            time.sleep(0.001)
        time.sleep(0.05)
        assert done == []  # ... and wait, like A, for a fsync
        release.set()
        for th in (leader, *followers):
            th.join(PATIENCE)
        assert sorted(done) == ["A", "B", "C", "D"]
        assert len(calls) == 2  # A's fsync, then one for B, C and D together
        assert int(t.meta.synced_op) >= op_a + 3


def test_looking_up_an_unknown_id_reads_no_slab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The slab headers' id ranges (checksummed) rule slabs out: a peek of
    an id that is gone costs no scan, however big the backlog."""
    from queuecore.slab import _Topic

    with Queues(str(tmp_path), fsync_put=False, slab_size=8192) as qs:
        ids = qs.put_many("q", [{"pad": "x" * 1000} for _ in range(30)])
        qs.delete("q", ids[10])
        scans: list[int] = []
        real = _Topic.entries
        monkeypatch.setattr(_Topic, "entries", lambda t, *a, **k: (scans.append(1), real(t, *a, **k))[1])
        for gone in (ids[10], ids[-1] + 5):
            with pytest.raises(MessageNotFound):
                qs.peek("q", gone)
        # the deleted id's own slab is read (its range holds it); none other
        assert len(scans) <= 1
        assert qs.peek("q", ids[20]).id == ids[20]


def test_a_deleted_slab_lets_go_of_its_files_at_once(tmp_path: Path) -> None:
    """A slab whose entries are all finished is deleted, and this process
    closes its descriptor and its map right away (the map used to stay open,
    holding a descriptor of the deleted file, until garbage collection)."""

    def slab_links() -> list[str]:
        out = []
        for name in os.listdir("/proc/self/fd"):
            try:
                link = os.readlink(f"/proc/self/fd/{name}")
            except OSError:
                continue
            if "m000000000001.slab" in link:
                out.append(link)
        return out

    with Queues(str(tmp_path), slab_size=8192, serializer="raw") as qs:
        qs.put("q", b"a" * 8000)  # slab 1, full
        qs.put("q", b"b" * 100)  # slab 2
        task = qs.take("q", timeout=0)
        assert task is not None and slab_links()
        assert task.complete()  # slab 1 finished: deleted
        assert not (tmp_path / "q" / "m000000000001.slab").exists()
        assert slab_links() == []
