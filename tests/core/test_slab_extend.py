"""Extending a lease on slab files (``Task.extend``), with real processes:
an extended lease keeps its message from other takers past its first
deadline, a lease already lost cannot be extended, an earlier deadline ends
it sooner even while the other processes skip their looks for ended
leases, and a process killed in the middle of an extend leaves a sound
entry. The same promises on every backend are in test_liveness.py.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

import queuecore.slab as slab_mod
from queuecore import Queues

from .conftest import HAS_SLAB, NO_SLAB

pytestmark = pytest.mark.skipif(not HAS_SLAB, reason=NO_SLAB)

PATIENCE = 30.0


def child_env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(more)
    return env


def take_in_a_child(d: str, timeout: float, **options: Any) -> dict[str, Any]:
    """Another process takes one message of "q" (waiting up to ``timeout``),
    completes it and says what it got and after how long."""
    code = textwrap.dedent(
        f"""
        import json, time
        from queuecore import Queues
        with Queues({d!r}, serializer="raw", **{options!r}) as qs:
            started = time.monotonic()
            task = qs.take("q", timeout={timeout!r})
            waited = time.monotonic() - started
            got = None if task is None else {{"id": task.id, "attempts": task.attempts}}
            if task is not None:
                assert task.complete()
            print(json.dumps({{"got": got, "waited": waited}}))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=PATIENCE + timeout, env=child_env())
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def run_child(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=PATIENCE, env=child_env(**env))


def topic_of(qs: Queues, name: str = "q") -> slab_mod._Topic:
    return qs._backend._topics[name]  # type: ignore[attr-defined, no-any-return]


def deadline_of(qs: Queues, mid: int) -> float:
    lease = qs.peek("q", mid).lease
    assert lease is not None
    return lease.deadline


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


# -- keeping and losing a lease ----------------------------------------------------------


def test_an_extended_lease_keeps_its_message_from_another_process_past_its_first_deadline(
    tmp_path: Path,
) -> None:
    d = str(tmp_path)
    with Queues(d, serializer="raw", visibility_timeout=0.5) as qs:
        qs.put("q", b"long job")
        task = qs.take("q", timeout=0)
        assert task is not None
        first = deadline_of(qs, task.id)
        before = time.time()
        assert task.extend(5)
        assert before + 5 <= deadline_of(qs, task.id) <= time.time() + 5
        time.sleep(max(0.0, first - time.time()) + 0.3)  # the first deadline has passed
        other = take_in_a_child(d, timeout=1.0)  # waits through two looks for ended leases
        assert other["got"] is None
        assert qs.stats()["q"]["in_progress"] == 1
        assert task.complete()
        assert qs.stats()["q"]["completed"] == 1


def test_an_extend_after_the_deadline_passed_is_false_and_another_process_gets_the_message(
    tmp_path: Path,
) -> None:
    d = str(tmp_path)
    with Queues(d, serializer="raw", visibility_timeout=0.3) as qs:
        qs.put("q", b"x")
        task = qs.take("q", timeout=0)
        assert task is not None
        time.sleep(0.5)
        assert task.extend(60) is False
        # Found run out by its holder: handed over at once, as a complete's is.
        st = qs.stats()["q"]
        assert (st["ready"], st["in_progress"]) == (1, 0)
        assert take_in_a_child(d, timeout=5)["got"] == {"id": task.id, "attempts": 2}
        assert task.complete() is False
        st = qs.stats()["q"]
        assert (st["completed"], st["ready"], st["in_progress"], st["retried"]) == (1, 0, 0, 0)


@pytest.mark.parametrize("outcome", ["complete", "retry", "fail"])
def test_an_extend_after_the_lease_was_settled_is_false(tmp_path: Path, outcome: str) -> None:
    with Queues(str(tmp_path), serializer="raw") as qs:
        qs.put("q", b"x")
        task = qs.take("q", timeout=0)
        assert task is not None
        token = task._token  # type: ignore[attr-defined]
        assert getattr(task, outcome)()
        assert task.extend() is False
        # The backend itself refuses it too (not only the settled Task).
        assert qs.backend.extend("q", token, 60) is False
        state = {"complete": "completed", "retry": "ready", "fail": "failed"}[outcome]
        assert qs.peek("q", task.id).state == state
        assert qs.check()["problems"] == []


def test_an_extend_by_a_task_of_an_older_delivery_is_false(tmp_path: Path) -> None:
    """The same process took the message again after its first lease ran
    out: same owner, another token. The old task changes nothing."""
    with Queues(str(tmp_path), serializer="raw", visibility_timeout=0.3) as qs:
        qs.put("q", b"x")
        old = qs.take("q", timeout=0)
        assert old is not None
        time.sleep(0.4)
        new = qs.take("q", timeout=5)
        assert new is not None and new.id == old.id and new.attempts == 2
        kept = deadline_of(qs, new.id)
        assert old.extend(60) is False
        assert deadline_of(qs, new.id) == kept
        assert new.extend(60) and deadline_of(qs, new.id) > kept
        assert old.complete() is False and new.complete()


def test_an_extend_by_another_owner_with_the_token_is_false(tmp_path: Path) -> None:
    d = str(tmp_path)
    with Queues(d, serializer="raw") as holder, Queues(d, serializer="raw") as other:
        holder.put("q", b"x")
        task = holder.take("q", timeout=0)
        assert task is not None
        kept = deadline_of(holder, task.id)
        assert other.backend.extend("q", task._token, 600) is False  # type: ignore[attr-defined]
        assert deadline_of(holder, task.id) == kept
        assert task.complete()


# -- the earliest deadline the meta file keeps -------------------------------------------------


def test_an_earlier_deadline_ends_the_lease_sooner_though_looks_are_skipped(
    tmp_path: Path,
) -> None:
    """Every lease here lasts 300 s and a look has noted the earliest
    deadline, so other processes skip their looks for ended leases (the
    owner lives): extend(0.2) must lower the earliest deadline, or the
    message would wait 300 s."""
    d = str(tmp_path)
    with Queues(d, serializer="raw", visibility_timeout=300) as qs:
        qs.put_many("q", [b"1", b"2"])
        first = qs.take("q", timeout=0)
        topic_of(qs).meta.last_reclaim = 0.0
        second = qs.take("q", timeout=0)  # its take looked, and noted first's deadline
        assert first is not None and second is not None
        meta = topic_of(qs).meta
        assert meta.lease_min == deadline_of(qs, first.id)
        assert second.extend(0.2)
        assert meta.lease_min == deadline_of(qs, second.id) <= time.time() + 0.2
        other = take_in_a_child(d, timeout=5)
        assert other["got"] == {"id": second.id, "attempts": 2}
        assert other["waited"] < 2.0
        assert second.complete() is False and first.complete()


def test_a_later_deadline_costs_one_look_then_looks_are_skipped_again(
    tmp_path: Path, scans: list[str]
) -> None:
    """A later deadline leaves the earliest one kept in the meta file low:
    once it passes, one look reads the log, finds the lease kept and notes
    its new deadline; the looks after it are skipped."""
    d = str(tmp_path)
    with Queues(d, serializer="raw", visibility_timeout=0.3) as holder, \
            Queues(d, serializer="raw", visibility_timeout=300) as worker:
        holder.put_many("q", [b"%d" % i for i in range(50)])
        held = holder.take("q", timeout=0)
        topic_of(holder).meta.last_reclaim = 0.0
        assert holder.take("q", timeout=0).complete()  # type: ignore[union-attr]  # a look: the deadline is known
        assert held is not None and held.extend(60)
        meta = topic_of(holder).meta  # the one meta file both map
        assert meta.lease_min < time.time() + 0.3
        time.sleep(0.4)
        before = len(scans)
        for _ in range(10):
            meta.last_reclaim = 0.0
            assert worker.complete_many(worker.take_many("q", 2, timeout=0)) == 2
        assert len(scans) - before == 1
        assert meta.lease_min == deadline_of(worker, held.id)
        assert held.complete()


def test_an_extend_with_fsync_take_is_on_disk_when_it_returns(tmp_path: Path) -> None:
    with Queues(str(tmp_path), serializer="raw", fsync_take=True, fsync_put=False) as qs:
        qs.put("q", b"x")
        task = qs.take("q", timeout=0)
        assert task is not None
        meta = topic_of(qs).meta
        op = int(meta.op_seq)
        assert task.extend(60)
        assert meta.op_seq == op + 1 and meta.synced_op >= meta.op_seq
        assert task.complete()


# -- an extend cut short ---------------------------------------------------------------


def _assert_sound_and_back(d: str, mid: int) -> None:
    """The entry a dead holder was extending reads as its lease (no
    damage), and the holder being dead, counts and comes back as ready."""
    with Queues(d, serializer="raw") as qs:
        assert qs.check()["problems"] == []
        st = qs.stats()["q"]
        assert (st["ready"], st["in_progress"]) == (1, 0)
        again = qs.take("q", timeout=0)
        assert again is not None and again.id == mid and again.attempts == 2
        assert again.complete()
        assert qs.check()["problems"] == []


def _mut_ok(d: str, token: list[int]) -> bool:
    seq, off, _tok = token
    with open(os.path.join(d, "q", f"m{seq:012d}.slab"), "rb") as fh:
        fh.seek(off + slab_mod.MUT_OFF)
        mut = fh.read(slab_mod.MUT.size)
    return zlib.crc32(mut[:32]) == struct.unpack_from("<I", mut, 32)[0]


@pytest.mark.parametrize("locking", ["mutex", "flock"])
def test_a_kill9_in_the_middle_of_an_extend_leaves_the_entry_sound(
    tmp_path: Path, locking: str
) -> None:
    d = str(tmp_path)
    with Queues(d, serializer="raw") as qs:
        qs.put("q", b"x")
    env = {"DQ_CRASH_AT": "extend.after_write"}
    if locking == "flock":
        env["DQ_LOCKING"] = "flock"
    done = run_child(
        f"""
        import json
        from queuecore import Queues
        qs = Queues({d!r}, serializer="raw")
        task = qs.take("q", timeout=0)
        print(json.dumps([task.id, list(task._token)]), flush=True)
        task.extend(60)
        print("not killed", flush=True)
        """,
        **env,
    )
    assert done.returncode == -9, done.stdout + done.stderr
    mid, token = json.loads(done.stdout.splitlines()[0])
    assert _mut_ok(d, token)  # the new deadline and its CRC went in one copy
    _assert_sound_and_back(d, mid)


def test_a_torn_extend_is_mended_by_the_next_lock_holder(tmp_path: Path) -> None:
    """A copy that wrote the new deadline but not its CRC (glibc's memcpy
    does not tear 16 bytes; another libc might) and then a kill: recovery
    gives the entry the CRC of what it holds, so it reads as the dead
    holder's lease, not as damage. The tear is made by hand here."""
    d = str(tmp_path)
    with Queues(d, serializer="raw") as qs:
        qs.put("q", b"x")
    done = run_child(
        f"""
        import json, os, struct, time
        from queuecore import Queues
        from queuecore.slab.format import LEASE_END_OFF, MAIN, MUT_OFF, OP_EXTEND
        qs = Queues({d!r}, serializer="raw")
        task = qs.take("q", timeout=0)
        seq, off, _tok = task._token
        print(json.dumps([task.id, list(task._token)]), flush=True)
        t = qs._backend._topics["q"]
        with t.locked():
            slab = t.slab(MAIN, seq)
            with t.change(OP_EXTEND, slab, off):
                at = off + MUT_OFF + LEASE_END_OFF
                slab.mm[at : at + 8] = struct.pack("<d", time.time() + 60)  # the deadline alone
                os.kill(os.getpid(), 9)
        """
    )
    assert done.returncode == -9, done.stdout + done.stderr
    mid, token = json.loads(done.stdout.splitlines()[0])
    assert not _mut_ok(d, token)  # torn on disk, as the dead holder left it
    _assert_sound_and_back(d, mid)
    assert _mut_ok(d, token)


def test_an_extend_interrupted_by_an_exception_puts_the_old_deadline_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal handler's exception right after the write (it cannot be
    made to land there for real, so the write is wrapped): the change is
    rolled back, the lease keeps its old deadline and the earliest
    deadline its old value."""
    real = slab_mod.operations._set_deadline

    def write_then_interrupt(slab: Any, off: int, deadline: float) -> None:
        real(slab, off, deadline)
        raise KeyboardInterrupt

    with Queues(str(tmp_path), serializer="raw", visibility_timeout=300) as qs:
        qs.put_many("q", [b"1", b"2"])
        task = qs.take("q", timeout=0)
        topic_of(qs).meta.last_reclaim = 0.0
        assert task is not None and qs.take("q", timeout=0) is not None  # a look notes the deadline
        kept, lease_min = deadline_of(qs, task.id), topic_of(qs).meta.lease_min
        assert lease_min == kept
        monkeypatch.setattr(slab_mod.operations, "_set_deadline", write_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            task.extend(0.5)
        monkeypatch.undo()
        assert deadline_of(qs, task.id) == kept
        assert topic_of(qs).meta.lease_min == lease_min
        assert qs.check()["problems"] == []
        assert task.extend(60) and task.complete()
