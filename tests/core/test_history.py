"""A message's history, the same on every backend (issue 19): the process
that put it, each delivery that did not complete (which process had it,
when it took it, how long the handler ran, how it ended, why), each lease
taken back unsettled, and since when it has been ready (its wait in the
queue is measured from there: its put, or its due time when delayed).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest

from queuecore import Queues, identity
from queuecore.backend import LEASE_EXPIRED, OWNER_CLOSED, OWNER_DIED, OWNER_LAPSED, Record
from queuecore.defaults import MAX_ERRORS_KEPT
from tests.core.conftest import QueuesFactory
from tests.core.test_liveness import Holder, holders, options, shared  # noqa: F401  (fixtures)


def test_a_put_keeps_the_process_that_made_it(make_queues: QueuesFactory) -> None:
    qs = make_queues()
    mid = qs.put("q1", "hello")
    later = qs.put_delayed("q1", "later", 60)
    many = qs.put_many("q1", ["a", "b"])
    me = identity.current()
    for i in (mid, later, *many):
        origin = qs.peek("q1", i).origin
        assert origin == me, (i, origin)
    assert me["pid"] == os.getpid() and me["host"] == socket.gethostname()
    assert identity.label(qs.peek("q1", mid).origin).startswith(f"pid {os.getpid()} on ")
    # What a caller does with what it read changes nothing stored.
    seen = qs.peek("q1", mid).origin
    assert seen is not None
    seen["cmd"] = "changed"
    assert qs.peek("q1", mid).origin == me == identity.current()


def test_the_origin_stays_through_retries_and_failures(make_queues: QueuesFactory) -> None:
    qs = make_queues()
    mid = qs.put("q1", "x")
    task = qs.take("q1", timeout=0)
    assert task is not None and task.retry(reason="once")
    task = qs.take("q1", timeout=0)
    assert task is not None and task.fail("twice")
    msg = qs.peek("q1", mid)
    assert msg.state == "failed" and msg.origin == identity.current()


def test_a_retry_and_a_failure_name_the_delivery(make_queues: QueuesFactory) -> None:
    qs = make_queues()
    mid = qs.put("q1", "x")
    before = time.time()
    task = qs.take("q1", timeout=0)
    assert task is not None and before - 0.01 <= task.taken_at <= time.time() + 0.01
    task.started_at = time.time()
    time.sleep(0.2)
    assert task.retry(reason=ValueError("bad input"))
    second = qs.take("q1", timeout=0)
    assert second is not None and second.fail("gave up")
    first_end, last_end = qs.peek("q1", mid).errors
    me = identity.label(identity.current())
    assert first_end["outcome"] == "retry" and last_end["outcome"] == "fail"
    assert first_end["by"] == me == last_end["by"]
    assert first_end["attempt"] == 1 and last_end["attempt"] == 2
    assert first_end["reason"] == "ValueError: bad input" and "ValueError" in first_end["traceback"]
    assert first_end["taken_at"] == pytest.approx(task.taken_at, abs=1e-3)
    assert last_end["taken_at"] == pytest.approx(second.taken_at, abs=1e-3)
    assert first_end["taken_at"] < first_end["at"] <= second.taken_at + 0.01
    # It slept 0.2 s: generous bounds, no timing claim beyond "about that".
    assert 0.15 <= first_end["ran"] < 30
    assert 0 <= last_end["ran"] < 30


def test_a_lease_that_runs_out_is_kept_in_the_history(make_queues: QueuesFactory) -> None:
    qs = make_queues(visibility_timeout=0.3)
    mid = qs.put("q1", "slow")
    task = qs.take("q1", timeout=0)
    assert task is not None
    time.sleep(0.5)
    again = qs.take("q1", timeout=5)
    assert again is not None and again.id == mid and again.attempts == 2
    (lost,) = again.errors
    assert lost["outcome"] == "lost" and lost["reason"] == LEASE_EXPIRED and lost["attempt"] == 1
    assert lost["by"] == identity.label(identity.current())  # this process held it
    # It was ready again from when the lease was taken back, not its put.
    assert again.ready_at >= task.taken_at + 0.25
    assert not task.complete()
    assert again.complete()


def test_a_holder_that_closes_leaves_a_lost_lease(make_queues: QueuesFactory) -> None:
    holder = make_queues(**options(make_queues.backend))
    other = make_queues(**options(make_queues.backend))
    mid = holder.put("q1", "x")
    assert holder.take("q1", timeout=0) is not None
    holder.close()
    task = other.take("q1", timeout=5)
    assert task is not None and task.id == mid
    (lost,) = task.errors
    assert lost["outcome"] == "lost" and lost["by"] == identity.label(identity.current())
    assert lost["reason"] == (OWNER_DIED if make_queues.backend == "slab" else OWNER_CLOSED)


def test_the_wait_starts_at_the_put_or_the_due_time(make_queues: QueuesFactory) -> None:
    qs = make_queues()
    qs.put("q1", "now")
    task = qs.take("q1", timeout=0)
    assert task is not None and task.ready_at == pytest.approx(task.enqueued_at, abs=0.01)
    assert task.taken_at >= task.ready_at
    task.complete()

    qs.put_delayed("q1", "soon", 0.3)
    task = qs.take("q1", timeout=5)
    assert task is not None
    # Due 0.3 s after its put: the wait counts from then.
    assert task.ready_at >= task.enqueued_at + 0.29
    assert task.taken_at >= task.ready_at - 0.01
    before = time.time()
    assert task.retry(0.3, reason="later")
    task = qs.take("q1", timeout=5)
    assert task is not None and task.attempts == 2
    assert task.ready_at >= before + 0.29
    assert task.retry(0.0, reason="at once")
    task = qs.take("q1", timeout=0)
    assert task is not None and task.ready_at >= before + 0.29
    task.complete()


def test_a_requeue_makes_it_ready_from_then(make_queues: QueuesFactory) -> None:
    qs = make_queues()
    mid = qs.put("q1", "x")
    task = qs.take("q1", timeout=0)
    assert task is not None and task.fail("broken")
    time.sleep(0.2)
    before = time.time()
    qs.requeue("q1", mid)
    again = qs.take("q1", timeout=0)
    assert again is not None and again.ready_at >= before - 0.01
    assert again.ready_at >= again.enqueued_at + 0.15


def test_a_restored_message_is_ready_from_its_arrival(make_queues: QueuesFactory) -> None:
    # A move or a migration keeps the message's put time and producer; its
    # wait in the new place starts when it arrives there.
    qs = make_queues()
    producer = {"host": "elsewhere", "pid": 7, "cmd": "dq put"}
    hour_ago = time.time() - 3600
    before = time.time()
    (mid,) = qs.backend.restore("q1", [Record(0, qs._encode("x"), "ready", 2, hour_ago, origin=producer)])
    task = qs.take("q1", timeout=0)
    assert task is not None and task.id == mid
    assert task.enqueued_at == pytest.approx(hour_ago, abs=1e-3) and task.ready_at >= before - 0.01
    assert qs.peek("q1", mid).origin == producer


def test_the_history_is_bounded(make_queues: QueuesFactory) -> None:
    qs = make_queues()
    mid = qs.put("q1", "flaky")
    for n in range(MAX_ERRORS_KEPT + 5):
        task = qs.take("q1", timeout=0)
        assert task is not None and task.retry(reason=f"try {n + 1}")
    errors = qs.peek("q1", mid).errors
    assert len(errors) == MAX_ERRORS_KEPT
    assert errors[-1]["reason"] == f"try {MAX_ERRORS_KEPT + 5}"
    assert qs.peek("q1", mid).origin == identity.current()


def test_a_killed_holder_is_named_in_the_history(shared: QueuesFactory, holders: list[Holder]) -> None:  # noqa: F811
    b = shared.backend
    qs = shared(**options(b))
    mid = qs.put("q1", "x")
    holders.append(holder := Holder(shared, 1, **options(b)))
    os.kill(holder.proc.pid, signal.SIGKILL)
    holder.proc.wait(timeout=10)
    deadline = time.monotonic() + 15
    task = None
    while task is None and time.monotonic() < deadline:
        task = qs.take("q1", timeout=0.2)
    assert task is not None and task.id == mid
    (lost,) = task.errors
    assert lost["outcome"] == "lost" and lost["attempt"] == 1
    assert lost["reason"] == (OWNER_DIED if b == "slab" else OWNER_LAPSED)
    # The holder as its process: slab files read it from the owner's file,
    # Redis from the origin its first take of the topic left.
    assert lost["by"] == f"pid {holder.proc.pid} on {socket.gethostname()} (liveness_worker.py)"


def test_a_dead_holder_is_named_by_a_process_that_did_not_see_it_die(
    tmp_path: Path, holders: list[Holder]  # noqa: F811
) -> None:
    from tests.core.conftest import FAST_OPTIONS

    factory = QueuesFactory("slab", str(tmp_path), dict(FAST_OPTIONS))
    qs = factory(visibility_timeout=60.0)
    mid = qs.put("q1", "x")
    holders.append(holder := Holder(factory, 1, visibility_timeout=60.0))
    owner_files = lambda suffix: [n for n in os.listdir(tmp_path / ".owners") if n.endswith(suffix)]  # noqa: E731
    assert len(owner_files(".lock")) == 1
    os.kill(holder.proc.pid, signal.SIGKILL)
    holder.proc.wait(timeout=10)
    # Another process (a dashboard) is the one that sees the owner dead.
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    look = ("import sys; from queuecore import Queues\n"
            "with Queues(sys.argv[1], fsync_put=False) as qs: qs.stats()\n")
    subprocess.run([sys.executable, "-c", look, str(tmp_path)], check=True, env=env, timeout=60,
                   cwd=Path(__file__).resolve().parents[2])
    assert owner_files(".lock") == [] and len(owner_files(".dead")) == 1
    task = qs.take("q1", timeout=5)
    assert task is not None and task.id == mid
    (lost,) = task.errors
    assert lost["by"].startswith(f"pid {holder.proc.pid} on ") and "liveness_worker.py" in lost["by"]
    factory.close_all()


def test_gone_owners_files_are_kept_a_day(tmp_path: Path) -> None:
    from queuecore.slab.owners import DEAD_NAMES_KEPT

    folder = tmp_path / ".owners"
    folder.mkdir()
    old, recent = folder / f"{1:016x}.dead", folder / f"{3:016x}.dead"
    old.write_text('{"pid": 1, "host": "h"}')
    recent.write_text('{"pid": 3, "host": "h"}')
    os.utime(old, (time.time() - DEAD_NAMES_KEPT - 60,) * 2)
    with Queues(str(tmp_path), fsync_put=False) as qs:
        qs.put("q1", "x")
        assert qs.take("q1", timeout=0) is not None  # a new owner tidies the folder
        assert qs.backend.owners.name(3) == "pid 3 on h"  # type: ignore[attr-defined]
    assert not old.exists() and recent.exists()


def test_slab_entries_written_before_origins_read_as_errors() -> None:
    from queuecore.slab.format import pack_extra, unpack_extra

    old = msgpack.packb([{"at": 1.0, "attempt": 1, "reason": "old"}], use_bin_type=True)
    assert unpack_extra(old) == (None, ({"at": 1.0, "attempt": 1, "reason": "old"},))
    assert unpack_extra(b"") == (None, ())
    assert unpack_extra(b"\xc1 not msgpack") == (None, ())
    both = pack_extra({"pid": 1, "host": "h", "cmd": "c"}, [{"reason": "r"}])
    assert unpack_extra(both) == ({"pid": 1, "host": "h", "cmd": "c"}, ({"reason": "r"},))
    assert pack_extra(None, []) == b""
    # What every put writes: entries' errors() skip unpacking it on that prefix.
    assert pack_extra({"pid": 1}, []).startswith(b"\x81\xa1o")
    # What msgpack cannot encode is packed as text, not left to fail the put.
    odd = pack_extra({"cmd": os.fsdecode(b"\xe9")}, [{"reason": "r", "when": object}])
    assert unpack_extra(odd) == ({"cmd": "\\xe9"}, ({"reason": "r", "when": "<class 'object'>"},))


def test_the_command_names_what_the_process_does() -> None:
    assert identity._command(["/venv/bin/dq", "put", "q1"]) == "dq put"
    assert identity._command(["manage.py", "runconsumers", "--burst"]) == "manage.py runconsumers"
    assert identity._command(["/usr/bin/gunicorn", "-w", "4"]) == "gunicorn"
    assert identity._command([]) == "python"
    assert identity._command(["-c"]) == "python -c"
    assert identity._command(["-"]) == "python -"
    assert len(identity._command(["x" * 500])) == identity.MAX_CMD


def test_text_in_another_encoding_is_kept_readable(make_queues: QueuesFactory) -> None:
    # An exception naming a file whose name is not UTF-8 carries a surrogate:
    # the retry and the failure keep it, escaped, and the message moves on.
    qs = make_queues()
    mid = qs.put("q1", "x")
    task = qs.take("q1", timeout=0)
    name = os.fsdecode(b"caf\xe9.csv")
    assert task is not None and task.retry(reason=ValueError(f"cannot read {name}"))
    task = qs.take("q1", timeout=0)
    assert task is not None and task.fail(f"gave up on {name}", traceback=f"File {name}\n")
    first, last = qs.peek("q1", mid).errors
    assert first["reason"] == "ValueError: cannot read caf\\xe9.csv"
    assert last["reason"] == "gave up on caf\\xe9.csv" and last["traceback"] == "File caf\\xe9.csv\n"
    qs.requeue("q1", mid)
    assert qs.take("q1", timeout=0) is not None


def test_a_process_named_in_another_encoding_can_put_and_retry(shared: QueuesFactory, tmp_path) -> None:  # noqa: F811
    # A script whose file name is not UTF-8: its argv holds a surrogate.
    folder = os.fsencode(tmp_path)
    script = os.path.join(folder, b"caf\xe9.py")
    with open(script, "w") as fh:
        fh.write(
            "import json, sys\n"
            "from queuecore import Queues\n"
            "args = json.loads(sys.argv[1])\n"
            "qs = Queues(args['location'], **args['options'])\n"
            "mid = qs.put('q1', 'x')\n"
            "task = qs.take('q1', timeout=5)\n"
            "assert task is not None and task.retry(reason='again')\n"
            "print(mid)\n"
            "qs.close()\n"
        )
    args = json.dumps({"location": shared.location, "options": shared.options})
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    done = subprocess.run([os.fsencode(sys.executable), script, args.encode()], capture_output=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    msg = shared().peek("q1", int(done.stdout))
    assert msg.origin is not None and msg.origin["cmd"] == "caf\\xe9.py"
    (kept,) = msg.errors
    assert kept["reason"] == "again" and kept["by"].endswith("(caf\\xe9.py)")
    assert identity.label({"pid": 1, "host": "h", "cmd": os.fsdecode(b"\xff")}) == "pid 1 on h (\\xff)"
