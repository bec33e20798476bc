"""Several real processes on one slab directory.

Producers and consumers keep exact ledgers; a consumer is killed with
SIGKILL while it holds messages; a blocking take is woken by a put from
another process; a plain script (no Django) puts and takes.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from queuecore import Queues

from .conftest import HAS_SLAB, NO_SLAB

pytestmark = pytest.mark.skipif(not HAS_SLAB, reason=NO_SLAB)

WORKER = Path(__file__).with_name("worker.py")
# Generous bound for a child to report something; never reached when all is well.
PATIENCE = 30.0


def child_env() -> dict[str, str]:
    """The children are plain scripts: no Django settings in their environment."""
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


class Children:
    """Starts worker processes and makes sure none outlives the test."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, command: str, **args: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), command, json.dumps(args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        self.procs.append(proc)
        return proc

    def finish(self, proc: subprocess.Popen[str], timeout: float = PATIENCE * 2) -> str:
        """Wait for a child to exit successfully; returns its stdout."""
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{err}"
        return out

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.fixture
def children() -> Iterator[Children]:
    kids = Children()
    yield kids
    kids.kill_all()


def read_line(proc: subprocess.Popen[str], timeout: float = PATIENCE) -> str:
    """The child's next stdout line, failing (not hanging) if none comes."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"no output from the child within {timeout} s")
    line = proc.stdout.readline()
    if not line:
        err = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"the child exited ({proc.wait()}) without output:\n{err}")
    return line.strip()


def read_ledger(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split(" ") for line in path.read_text().splitlines()]


def test_producers_and_consumers_keep_an_exact_ledger(tmp_path: Path, children: Children) -> None:
    location = str(tmp_path / "queues")
    producers, consumers, per_producer = 3, 3, 150
    done = tmp_path / "done"
    consumer_procs = [
        children.start(
            "consume",
            location=location,
            topic="jobs",
            ledger=str(tmp_path / f"consumer-{c}.txt"),
            done=str(done),
            batch=1 + 2 * c,  # 1, 3, 5: take and take_many
            options={"fsync_put": False},
        )
        for c in range(consumers)
    ]
    producer_procs = [
        children.start(
            "produce",
            location=location,
            topic="jobs",
            count=per_producer,
            tag=f"p{p}",
            ledger=str(tmp_path / f"producer-{p}.txt"),
            # One producer acknowledges only once the put is on disk.
            options={"fsync_put": p == 0},
        )
        for p in range(producers)
    ]
    for proc in producer_procs:
        children.finish(proc)
    done.touch()
    for proc in consumer_procs:
        children.finish(proc)

    produced: dict[int, str] = {}
    for p in range(producers):
        rows = read_ledger(tmp_path / f"producer-{p}.txt")
        assert [v for _, v in rows] == [f"p{p}-{i}" for i in range(per_producer)]
        ids = [int(i) for i, _ in rows]
        assert ids == sorted(ids), "a producer's ids must increase"
        for mid, value in zip(ids, (v for _, v in rows), strict=True):
            assert mid not in produced, f"id {mid} given to two messages"
            produced[mid] = value
    assert len(produced) == producers * per_producer

    handled = [row for c in range(consumers) for row in read_ledger(tmp_path / f"consumer-{c}.txt")]
    twice = [mid for mid, n in Counter(int(r[0]) for r in handled).items() if n > 1]
    assert twice == [], "handled twice without a crash or a retry"
    assert {int(mid): value for mid, value, _ in handled} == produced, "lost or changed"
    assert {attempts for _, _, attempts in handled} == {"1"}

    with Queues(location) as qs:
        stats = qs.stats()["jobs"]
        total = producers * per_producer
        assert {k: stats[k] for k in ("enqueued", "completed", "retried")} == {
            "enqueued": total,
            "completed": total,
            "retried": 0,
        }
        assert {
            k: stats[k] for k in ("ready", "delayed", "in_progress", "failed")
        } == dict.fromkeys(("ready", "delayed", "in_progress", "failed"), 0)
        assert qs.check()["ok"] is True


def test_messages_of_a_killed_consumer_come_back_at_once(
    tmp_path: Path, children: Children
) -> None:
    location = str(tmp_path / "queues")
    # A lease of five minutes: whatever comes back within the test came back
    # because the owner's death was seen, not because its lease ran out.
    options = {"fsync_put": False, "visibility_timeout": 300}
    with Queues(location, **options) as qs:
        ids = qs.put_many("work", [f"m{i}" for i in range(10)])
        holder = children.start("hold", location=location, topic="work", count=3, options=options)
        held = json.loads(read_line(holder))
        assert held == ids[:3]
        for mid in held:
            message = qs.peek("work", mid)
            assert message.state == "in_progress" and message.lease is not None
        holder.send_signal(signal.SIGKILL)
        holder.wait(PATIENCE)
        assert holder.returncode == -signal.SIGKILL

        got: dict[int, Any] = {}
        deadline = time.monotonic() + PATIENCE
        while len(got) < len(ids) and time.monotonic() < deadline:
            for task in qs.take_many("work", 10, timeout=1.0):
                assert task.id not in got, "delivered twice to the living consumer"
                got[task.id] = task
        assert sorted(got) == ids, "messages of the killed consumer did not come back"
        assert {mid: t.attempts for mid, t in got.items()} == {
            mid: 2 if mid in held else 1 for mid in ids
        }
        assert {mid: t.value for mid, t in got.items()} == {
            mid: f"m{i}" for i, mid in enumerate(ids)
        }
        assert all(t.complete() for t in got.values())
        stats = qs.stats()["work"]
        assert (stats["completed"], stats["in_progress"], stats["ready"]) == (10, 0, 0)


def test_a_waiting_take_wakes_on_a_put_from_another_process(
    tmp_path: Path, children: Children
) -> None:
    location = str(tmp_path / "queues")
    with Queues(location, fsync_put=False) as qs:
        qs.put("bell", "warm-up")
        assert qs.take("bell", timeout=0).complete()
        taker = children.start("take_one", location=location, topic="bell", timeout=60.0)
        assert read_line(taker) == "waiting"
        time.sleep(1.0)  # the child is inside take() by now (if not, it finds the message at once)
        put_at = time.time()
        qs.put("bell", "ding")
        result = json.loads(read_line(taker, timeout=PATIENCE))
        children.finish(taker)
    latency = result["woke_at"] - put_at
    print(
        f"wake latency across processes: {latency * 1000:.1f} ms; "
        f"CPU while waiting {result['cpu']:.3f} s of {result['wall']:.3f} s"
    )
    assert result["value"] == "ding"
    assert latency < 5.0, f"the take woke {latency:.1f} s after the put"
    # A waiting take must not spin a core: a spinning single waiter would burn
    # about as much CPU as wall time; a sleeping one next to none.
    assert result["cpu"] < 0.9 * result["wall"]


def test_a_message_taken_and_abandoned_by_an_exited_process_comes_back(
    tmp_path: Path, children: Children
) -> None:
    location = str(tmp_path / "queues")
    options = {"fsync_put": False, "visibility_timeout": 300}
    with Queues(location, **options) as qs:
        ids = qs.put_many("work", ["a", "b"])
        child = children.start("abandon", location=location, topic="work", count=1, options=options)
        assert json.loads(read_line(child)) == ids[:1]
        children.finish(child)
        task = qs.take("work", timeout=PATIENCE)
        second = qs.take("work", timeout=PATIENCE)
        assert task is not None and second is not None
        assert {(task.id, task.attempts), (second.id, second.attempts)} == {
            (ids[0], 2),
            (ids[1], 1),
        }


PLAIN_SCRIPT = textwrap.dedent(
    """
    import sys
    import queuecore

    location, role = sys.argv[1], sys.argv[2]
    qs = queuecore.Queues(location)
    if role == "put":
        for i in range(20):
            qs.put("plain", {"n": i})
    else:
        seen = []
        while len(seen) < 20:
            task = qs.take("plain", timeout=30)
            if task is None:
                sys.exit("nothing came")
            seen.append(task.value["n"])
            task.complete()
        assert seen == list(range(20)), seen
        print("took", len(seen))
    qs.close()
    assert "django" not in sys.modules
    """
)


def test_a_plain_script_puts_in_one_process_and_takes_in_another(tmp_path: Path) -> None:
    script = tmp_path / "plain.py"
    script.write_text(PLAIN_SCRIPT)
    location = str(tmp_path / "queues")

    def run(role: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(script), location, role],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )

    taker = run("take")  # waits first: the puts must wake it
    putter = run("put")
    try:
        _, put_err = putter.communicate(timeout=PATIENCE * 2)
        take_out, take_err = taker.communicate(timeout=PATIENCE * 2)
    finally:
        for proc in (putter, taker):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert putter.returncode == 0, put_err
    assert taker.returncode == 0, take_err
    assert take_out.strip() == "took 20"
