"""runconsumers and dqproduce as real processes, on a slab directory and on
Redis (the ``store`` fixture): SIGTERM, an always-failing handler, kill -9.

Where the backends differ it is said in the test: a consumer killed with -9
gives its messages back at once on slab (the kernel drops its lock file's
flock), and on Redis once its liveness record lapses (``owner_timeout``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from queuecore import Queues

from .conftest import Store, wait_for

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 30.0  # generous: only a hang ever reaches it


class Child:
    """Start manage.py commands with the test app on the test's queue location.

    ``options`` are the queuecore options the children get (``DQ_OPTIONS``),
    the store's own unless a test adds to them before starting one."""

    def __init__(self, tmp_path: Path, store: Store) -> None:
        self.tmp = tmp_path
        self.store = store
        self.options: dict[str, Any] = {}
        self.out = tmp_path / "handled.txt"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.count = 0

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.consumers.settings",
            **self.store.env(**self.options),
            "DQ_VAR_DIR": str(self.tmp),
            "DQ_HEARTBEAT_INTERVAL": "0.1",
            "DQ_TEST_OUT": str(self.out),
            "DQ_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            # tests/settings.py makes a temporary folder: keep it in tmp_path.
            "TMPDIR": str(self.tmp),
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
        )

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        self.count += 1
        log = open(self.tmp / f"child-{self.count}.log", "wb")  # noqa: SIM115 (closed by the child's exit)
        proc = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def log(self, n: int) -> str:
        return (self.tmp / f"child-{n}.log").read_text(errors="replace")

    def lines(self, what: str, topic: str) -> list[tuple[int, int]]:
        """(id, attempt) of each handler 'start' or 'done' recorded for topic."""
        if not self.out.exists():
            return []
        found = []
        for line in self.out.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[0] == what and parts[1] == topic:
                found.append((int(parts[2]), int(parts[3])))
        return found

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def child(tmp_path: Path, store: Store) -> Iterator[Child]:
    c = Child(tmp_path, store)
    try:
        yield c
    finally:
        c.stop_all()


@pytest.fixture
def qs(store: Store) -> Iterator[Queues]:
    """The test's own Queues on the children's location (it never takes)."""
    with store.open() as queues:
        yield queues


def exited(proc: subprocess.Popen[bytes]) -> int:
    try:
        return proc.wait(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        pytest.fail(f"process {proc.pid} did not exit within {DEADLINE} s")


def test_runconsumers_handles_what_dqproduce_put(child: Child, qs: Queues) -> None:
    proc = child.start("runconsumers", "q1", "q2")
    wait_for(
        lambda: any(b.get("pid") == proc.pid for b in qs.backend.heartbeats()),
        DEADLINE,
        "the consumer's first heartbeat",
    )
    produced = child.run("dqproduce", "40")
    assert produced.returncode == 0, produced.stderr
    assert "Put 40 messages" in produced.stdout

    def completed() -> int:
        return sum(s["completed"] for s in qs.stats().values())

    wait_for(lambda: completed() == 40, DEADLINE, "40 completed messages")
    (beat,) = [b for b in qs.backend.heartbeats() if b.get("pid") == proc.pid]
    assert beat["topics"] == ["q1", "q2"]
    wait_for(
        lambda: (
            [b for b in qs.backend.heartbeats() if b.get("pid") == proc.pid][0]["handled"] == 40
        ),
        DEADLINE,
        "a heartbeat counting 40 messages",
    )
    proc.send_signal(signal.SIGTERM)
    assert exited(proc) == 0
    log = child.log(1)
    assert log.count("Got the message! - {'uuid': '") == qs.stats()["q1"]["completed"]
    assert (
        log.count("Got the message on second queue! - {'uuid': '") == qs.stats()["q2"]["completed"]
    )
    assert all(s["in_progress"] == 0 and s["ready"] == 0 for s in qs.stats().values())
    assert qs.backend.heartbeats() == []


def test_burst_drains_and_exits(child: Child, qs: Queues) -> None:
    assert child.run("dqproduce", "25", "--topics", "q1").returncode == 0
    done = child.run("runconsumers", "--burst", "q1")
    assert done.returncode == 0, done.stderr
    assert "Handled 25 messages: 25 completed" in done.stdout
    assert done.stderr.count("Got the message! - {'uuid': '") == 25
    assert qs.stats()["q1"]["completed"] == 25


def test_sigterm_mid_stream_loses_nothing_and_leaves_nothing_in_progress(
    child: Child, qs: Queues
) -> None:
    ids = qs.put_many("work", [{"sleep": 0.02, "n": n} for n in range(60)])
    proc = child.start("runconsumers", "work", "--concurrency", "1")
    wait_for(lambda: len(child.lines("done", "work")) >= 5, DEADLINE, "five handled messages")
    proc.send_signal(signal.SIGTERM)
    assert exited(proc) == 0, child.log(1)

    stats = qs.stats()["work"]
    assert stats["in_progress"] == 0
    done = {mid for mid, _ in child.lines("done", "work")}
    started = {mid for mid, _ in child.lines("start", "work")}
    assert started == done  # every handler that began was let finish
    ready = {m.id for m in qs.messages("work", state="ready", limit=100)}
    assert stats["completed"] == len(done)
    assert done.isdisjoint(ready) and done | ready == set(ids)  # nothing lost
    assert stats["ready"] + stats["completed"] == 60
    assert qs.backend.heartbeats() == []


def test_sigterm_gives_back_what_outlives_the_grace_period(child: Child, qs: Queues) -> None:
    mid = qs.put("work", {"sleep": 120})
    proc = child.start("runconsumers", "work", "--grace", "0.2", "--concurrency", "1")
    wait_for(lambda: child.lines("start", "work"), DEADLINE, "the handler to start")
    proc.send_signal(signal.SIGTERM)
    assert exited(proc) == 0, child.log(1)
    message = qs.peek("work", mid)
    assert message.state == "ready" and message.attempts == 1
    assert "stopped before its handler finished" in message.errors[-1]["reason"]
    assert qs.stats()["work"]["in_progress"] == 0
    assert "given back" in child.log(1)


def test_an_always_failing_handler_ends_in_the_failed_store(child: Child, qs: Queues) -> None:
    mid = qs.put("flaky", {"job": 1})
    done = child.run("runconsumers", "flaky", "--burst")
    assert done.returncode == 0, done.stderr
    assert [a for _, a in child.lines("start", "flaky")] == [1, 2, 3]  # max_attempts=3
    (failed,) = qs.messages("flaky", state="failed")
    assert failed.id == mid and failed.attempts == 3
    assert [e["reason"] for e in failed.errors] == [
        f"RuntimeError: boom on attempt {n}" for n in (1, 2, 3)
    ]
    tb = failed.errors[-1]["traceback"]
    assert "Traceback (most recent call last)" in tb and "testapp/consumers.py" in tb
    assert 'raise RuntimeError(f"boom on attempt {task.attempts}")' in tb
    stats = qs.stats()["flaky"]
    assert (stats["failed"], stats["retried"], stats["in_progress"], stats["ready"]) == (1, 2, 0, 0)
    assert "failed (attempt 3/3)" in done.stderr


def test_kill_9_then_a_new_consumer_handles_every_message(
    child: Child, qs: Queues, store: Store
) -> None:
    # The 4th message hangs on its first delivery: the consumer is killed
    # while it holds that one.
    values: list[dict[str, Any]] = [{"sleep": 0.01, "n": n} for n in range(30)]
    values[3]["hang"] = 120
    ids = qs.put_many("work", values)
    held = ids[3]
    if store.name == "redis":
        # A dead consumer is known by its liveness record lapsing: a short
        # owner_timeout, in the children (the only processes that take).
        child.options["owner_timeout"] = 1
    proc = child.start("runconsumers", "work", "--concurrency", "1")
    wait_for(lambda: (held, 1) in child.lines("start", "work"), DEADLINE, "the hanging handler")
    proc.kill()
    assert exited(proc) == -signal.SIGKILL
    assert {mid for mid, _ in child.lines("done", "work")} == set(ids[:3])

    if store.name == "slab":
        # The killed process's flock died with it: what it held is taken
        # again at once, although the visibility timeout is 300 s.
        assert qs.backend.visibility_timeout == 300
    elif store.name == "redis":
        # Held until the owner's liveness record lapses, about a second,
        # although the visibility timeout is 300 s; stats() itself shows it
        # ready then, without a take.
        assert qs.backend.visibility_timeout == 300
        wait_for(
            lambda: qs.stats()["work"]["in_progress"] == 0, DEADLINE, "the dead consumer's lease"
        )
        assert qs.peek("work", held).state == "ready"
    else:  # pragma: no cover - a new backend needs a branch here
        raise AssertionError(store.name)

    again = child.run("runconsumers", "work", "--burst", "--concurrency", "1")
    assert again.returncode == 0, again.stderr
    stats = qs.stats()["work"]
    assert (stats["completed"], stats["ready"], stats["in_progress"], stats["failed"]) == (
        30,
        0,
        0,
        0,
    )
    assert {mid for mid, _ in child.lines("done", "work")} == set(ids)
    assert (held, 2) in child.lines("done", "work")  # delivered again, handled once
    assert [mid for mid, _ in child.lines("done", "work")].count(held) == 1
    # The dead consumer's heartbeat was pruned by the new one on this host.
    assert all(b.get("pid") != proc.pid for b in qs.backend.heartbeats())


def test_concurrent_workers_settle_their_leases(child: Child, qs: Queues) -> None:
    ids = qs.put_many("work", [{"n": n} for n in range(20)])
    done = child.run("runconsumers", "work", "--burst", "--concurrency", "4")
    assert done.returncode == 0, done.stderr
    assert "lease lost" not in done.stderr
    stats = qs.stats()["work"]
    assert (stats["completed"], stats["in_progress"]) == (20, 0)
    assert {mid for mid, _ in child.lines("done", "work")} == set(ids)


def test_several_consumer_processes_share_a_topic_and_lose_nothing(
    child: Child, qs: Queues
) -> None:
    procs = [child.start("runconsumers", "work", "--concurrency", "2") for _ in range(3)]
    pids = {p.pid for p in procs}
    wait_for(
        lambda: pids <= {b.get("pid") for b in qs.backend.heartbeats()},
        DEADLINE,
        "a heartbeat of each consumer",
    )
    # Every consumer is up and waiting in a take when the messages come.
    ids = qs.put_many("work", [{"sleep": 0.005, "n": n} for n in range(90)])
    wait_for(lambda: qs.stats()["work"]["completed"] == 90, DEADLINE, "90 completed messages")
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for n, proc in enumerate(procs, 1):
        assert exited(proc) == 0, child.log(n)
        assert "lease lost" not in child.log(n)
    done = [mid for mid, _ in child.lines("done", "work")]
    assert sorted(done) == ids  # each message handled once, none lost
    stats = qs.stats()["work"]
    assert (stats["ready"], stats["in_progress"], stats["retried"], stats["failed"]) == (0, 0, 0, 0)
    assert qs.backend.heartbeats() == []


def test_a_stopped_consumer_is_marked_on_the_dashboard_and_loses_its_lease(
    child: Child, qs: Queues, store: Store, admin_client: Any
) -> None:
    if store.name != "redis":
        pytest.skip("on slab files a stopped process keeps its lock: only death is noticed")
    from queuecore.stats import build_stats

    child.options["owner_timeout"] = 0.5
    (held,) = qs.put_many("work", [{"hang": 30}])
    proc = child.start("runconsumers", "work", "--concurrency", "1")
    wait_for(lambda: (held, 1) in child.lines("start", "work"), DEADLINE, "the hanging handler")
    mine = [b for b in build_stats(qs)["consumers"] if b.get("pid") == proc.pid]
    assert mine and mine[0]["alive"] and not mine[0]["liveness_lapsed"]
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        wait_for(
            lambda: any(b.get("pid") == proc.pid and b["liveness_lapsed"] for b in build_stats(qs)["consumers"]),
            DEADLINE, "the stopped consumer to be marked",
        )
        # Its lease was taken back: the message is ready for another consumer.
        wait_for(lambda: qs.stats()["work"]["ready"] == 1, DEADLINE, "its message back")
        from django.test import override_settings

        from dqadmin.queues import close_queues

        with override_settings(DQ=store.settings()):
            try:
                page = admin_client.get("/", HTTP_HX_REQUEST="true").content.decode()
            finally:
                close_queues()
        assert "liveness lapsed" in page
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    proc.kill()
    exited(proc)
