"""The consumer runtime in-process, on memory, slab and redis (the ``queues``
fixture)."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dqadmin.consumers import ConsumerRegistry
from dqadmin.runner import Runner, RunReport
from queuecore import MessageNotFound, Queues, Task

from .conftest import new_store, wait_for


def burst(qs: Queues, registry: ConsumerRegistry, **options: Any) -> RunReport:
    options.setdefault("heartbeat_interval", None)
    return Runner(qs, list(registry), burst=True, **options).run()


class Background:
    """A non-burst Runner in a thread, as runconsumers runs it."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.report: RunReport | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.report = self.runner.run()

    def stop(self, timeout: float = 10.0) -> RunReport:
        if not self.runner.stopping:
            self.runner.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the runner did not stop"
        assert self.report is not None
        return self.report


def test_a_handler_that_returns_completes(
    queues: Queues, registry: ConsumerRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Any] = []
    registry.consumer("q1")(seen.append)
    queues.put_many("q1", [{"n": 1}, {"n": 2}, {"n": 3}])
    with caplog.at_level(logging.INFO, logger="dq.consumers"):
        report = burst(queues, registry)
    assert seen == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert (report.handled, report.completed, report.failed) == (3, 3, 0)
    stats = queues.stats()["q1"]
    assert (stats["completed"], stats["ready"], stats["in_progress"]) == (3, 0, 0)
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "dq.consumers" and "completed in" in r.getMessage()
    ]
    assert len(lines) == 3 and lines[0].startswith("q1#1 completed in")


def test_the_handler_gets_the_task_when_it_asks(queues: Queues, registry: ConsumerRegistry) -> None:
    got: list[tuple[int, int, float, str]] = []

    @registry.consumer("q1")
    def handle(value: Any, task: Task) -> None:
        got.append((task.id, task.attempts, task.enqueued_at, task.topic))

    mid = queues.put("q1", "x")
    burst(queues, registry)
    assert len(got) == 1
    assert got[0][0] == mid and got[0][1] == 1 and got[0][2] > 0 and got[0][3] == "q1"


def test_a_raising_handler_is_retried_with_backoff(
    queues: Queues, registry: ConsumerRegistry
) -> None:
    asked: list[int] = []
    errors_seen: list[tuple[dict[str, Any], ...]] = []

    def backoff(attempt: int) -> float:
        asked.append(attempt)
        return 0.02

    @registry.consumer("q1", max_attempts=5, backoff=backoff)
    def handle(value: Any, task: Task) -> None:
        errors_seen.append(task.errors)
        if task.attempts < 3:
            raise ValueError(f"not yet ({task.attempts})")

    queues.put("q1", "x")
    report = burst(queues, registry)  # burst waits for its own retries to come back
    assert asked == [1, 2]
    assert (report.handled, report.retried, report.completed, report.failed) == (3, 2, 1, 0)
    last = errors_seen[-1]
    assert [e["reason"] for e in last] == ["ValueError: not yet (1)", "ValueError: not yet (2)"]
    assert "Traceback" in last[0]["traceback"] and "raise ValueError" in last[0]["traceback"]
    stats = queues.stats()["q1"]
    assert (stats["completed"], stats["retried"], stats["in_progress"]) == (1, 2, 0)


def test_after_max_attempts_the_message_fails_with_its_traceback(
    queues: Queues, registry: ConsumerRegistry
) -> None:
    @registry.consumer("q1", max_attempts=3, backoff=0)
    def always(value: Any) -> None:
        raise RuntimeError(f"cannot handle {value}")

    mid = queues.put("q1", "x")
    report = burst(queues, registry)
    assert (report.handled, report.retried, report.failed, report.errors) == (3, 2, 1, 3)
    (failed,) = queues.messages("q1", state="failed")
    assert failed.id == mid and failed.attempts == 3
    assert failed.errors[-1]["reason"] == "RuntimeError: cannot handle x"
    assert failed.errors[-1]["attempt"] == 3
    assert "in always" in failed.errors[-1]["traceback"]
    assert queues.stats()["q1"]["in_progress"] == 0


def test_a_permanent_failure_fails_at_once(queues: Queues, registry: ConsumerRegistry) -> None:
    calls: list[int] = []

    @registry.consumer("q1", max_attempts=5, backoff=0, permanent=(KeyError,))
    def handle(value: Any, task: Task) -> None:
        calls.append(task.attempts)
        raise KeyError("missing")

    queues.put("q1", "x")
    report = burst(queues, registry)
    assert calls == [1] and report.failed == 1 and report.retried == 0
    (failed,) = queues.messages("q1", state="failed")
    assert failed.errors[-1]["reason"].startswith("KeyError")


@pytest.mark.parametrize("override", [None, 3])
def test_concurrency_runs_handlers_side_by_side(
    queues: Queues, registry: ConsumerRegistry, override: int | None
) -> None:
    # Three handlers must be inside at once for the barrier to open: with
    # fewer threads it breaks and the handlers raise.
    barrier = threading.Barrier(3, timeout=10)
    names: set[str] = set()

    @registry.consumer("q1", concurrency=1 if override else 3, max_attempts=1)
    def handle(value: Any) -> None:
        names.add(threading.current_thread().name)
        barrier.wait()

    queues.put_many("q1", [1, 2, 3])
    report = burst(queues, registry, concurrency=override)
    assert (report.completed, report.failed) == (3, 0)
    assert len(names) == 3


def test_several_topics(queues: Queues, registry: ConsumerRegistry) -> None:
    got: list[tuple[str, Any]] = []
    registry.consumer("a")(lambda v: got.append(("a", v)))
    registry.consumer("b")(lambda v: got.append(("b", v)))
    queues.put("a", 1)
    queues.put("b", 2)
    assert burst(queues, registry).completed == 2
    assert sorted(got) == [("a", 1), ("b", 2)]


def test_stop_lets_the_running_handler_finish(queues: Queues, registry: ConsumerRegistry) -> None:
    started, release = threading.Event(), threading.Event()

    @registry.consumer("q1")
    def handle(value: Any) -> None:
        started.set()
        release.wait(10)

    queues.put_many("q1", [1, 2, 3])
    bg = Background(
        Runner(queues, list(registry), grace=30, heartbeat_interval=None, poll_interval=0.05)
    )
    assert started.wait(10)
    bg.runner.stop()
    wait_for(lambda: bg.runner.stopping)
    release.set()
    report = bg.stop()
    assert (report.completed, report.given_back) == (1, 0)
    stats = queues.stats()["q1"]
    assert (stats["completed"], stats["ready"], stats["in_progress"]) == (1, 2, 0)


def test_what_outlives_the_grace_period_is_given_back(
    queues: Queues, registry: ConsumerRegistry
) -> None:
    started, release = threading.Event(), threading.Event()

    @registry.consumer("q1")
    def handle(value: Any) -> None:
        started.set()
        release.wait(10)

    mid = queues.put("q1", "slow")
    bg = Background(
        Runner(queues, list(registry), grace=0.05, heartbeat_interval=None, poll_interval=0.05)
    )
    assert started.wait(10)
    report = bg.stop()
    try:
        assert report.given_back == 1
        message = queues.peek("q1", mid)
        assert message.state == "ready"
        assert "stopped before its handler finished" in message.errors[-1]["reason"]
        assert queues.stats()["q1"]["in_progress"] == 0
    finally:
        release.set()
    # The handler ends later: its outcome is dropped, the message stays ready.
    wait_for(lambda: report.handled == 1, what="the abandoned handler to end")
    assert queues.peek("q1", mid).state == "ready"


def test_stop_in_a_hurry_gives_back_at_once(queues: Queues, registry: ConsumerRegistry) -> None:
    started, release = threading.Event(), threading.Event()
    registry.consumer("q1")(lambda v: (started.set(), release.wait(10)))
    queues.put("q1", 1)
    bg = Background(
        Runner(queues, list(registry), grace=60, heartbeat_interval=None, poll_interval=0.05)
    )
    try:
        assert started.wait(10)
        bg.runner.stop()
        bg.runner.stop()  # twice: still graceful
        assert bg.thread.is_alive()
        bg.runner.stop(hurry=True)
        report = bg.stop()
        assert report.given_back == 1
    finally:
        release.set()


def test_a_lost_lease_is_reported_not_settled(queues: Queues, registry: ConsumerRegistry) -> None:
    @registry.consumer("q1", max_attempts=1)
    def handle(value: Any, task: Task) -> None:
        if task.attempts == 1:
            queues.requeue("q1", task.id)  # an operator takes it away meanwhile

    queues.put("q1", 1)
    report = burst(queues, registry)
    assert report.lost_leases == 1
    assert report.completed == 1  # the requeued delivery, handled next
    assert queues.stats()["q1"]["completed"] == 1


def test_heartbeats_while_running_removed_on_exit(
    queues: Queues, registry: ConsumerRegistry
) -> None:
    registry.consumer("q1", concurrency=2)(lambda v: None)
    registry.consumer("q2")(lambda v: None)
    queues.put("q1", 1)
    bg = Background(Runner(queues, list(registry), heartbeat_interval=0.02, poll_interval=0.05))

    def beat() -> dict[str, Any] | None:
        beats = queues.backend.heartbeats()
        return beats[0] if beats and beats[0]["handled"] == 1 else None

    wait_for(beat, what="a heartbeat counting the message")
    record = beat()
    assert record is not None
    assert record["topics"] == ["q1", "q2"] and record["concurrency"] == 3
    assert record["pid"] == bg.runner.pid and record["host"] == bg.runner.host
    assert record["started"] <= record["last_beat"]
    assert {"failed", "in_progress", "key"} <= set(record)
    first = record["last_beat"]
    wait_for(lambda: queues.backend.heartbeats()[0]["last_beat"] > first, what="a newer heartbeat")
    bg.stop()
    assert queues.backend.heartbeats() == []


def test_heartbeats_of_dead_processes_here_are_pruned(
    queues: Queues, registry: ConsumerRegistry
) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    registry.consumer("q1")(lambda v: None)
    runner = Runner(queues, list(registry), burst=True, heartbeat_interval=10)
    queues.backend.write_heartbeat(
        "old", {"key": "old", "host": runner.host, "pid": gone.pid, "last_beat": 1}
    )
    queues.backend.write_heartbeat(
        "far", {"key": "far", "host": "elsewhere", "pid": gone.pid, "last_beat": 1}
    )
    runner.run()
    assert [b["key"] for b in queues.backend.heartbeats()] == ["far"]


def test_runner_refuses_nonsense(queues: Queues, registry: ConsumerRegistry) -> None:
    registry.consumer("q1")(lambda v: None)
    with pytest.raises(ValueError):
        Runner(queues, [])
    with pytest.raises(ValueError):
        Runner(queues, list(registry), concurrency=0)
    with pytest.raises(ValueError):
        Runner(queues, list(registry), grace=-1)


def test_a_handler_outliving_the_visibility_timeout_keeps_its_message(
    backend_name: str, registry: ConsumerRegistry, tmp_path: Path
) -> None:
    calls: list[int] = []

    @registry.consumer("q1", concurrency=2, max_attempts=5)
    def handle(value: Any, task: Task) -> None:
        calls.append(task.attempts)
        time.sleep(1.2)  # four visibility timeouts: the runner keeps the lease

    with new_store(backend_name, tmp_path) as store, store.open(visibility_timeout=0.3) as qs:
        mid = qs.put("q1", "slow")
        bg = Background(Runner(qs, list(registry), heartbeat_interval=None, poll_interval=0.05))
        wait_for(lambda: bg.runner.report.completed == 1, what="the handler to end")
        report = bg.stop()
        assert (report.handled, report.completed, report.lost_leases) == (1, 1, 0)
        assert calls == [1]  # never delivered to the other worker
        stats = qs.stats()["q1"]
        assert (stats["completed"], stats["in_progress"], stats["ready"]) == (1, 0, 0)
        if backend_name == "slab":  # slab keeps completed messages until their slab goes
            assert qs.peek("q1", mid).state == "completed"
        else:
            with pytest.raises(MessageNotFound):
                qs.peek("q1", mid)


@pytest.mark.redis
def test_the_redis_password_never_reaches_the_log(
    registry: ConsumerRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry.consumer("q1")(lambda v: None)
    with new_store("redis", tmp_path) as store:
        location = store.location.replace("redis://", "redis://default:pw-Zq81@", 1)
        with Queues(location, **store.options) as qs, caplog.at_level(logging.INFO, logger="dq"):
            qs.put("q1", 1)
            assert burst(qs, registry, heartbeat_interval=0.05).completed == 1
    started = [r.getMessage() for r in caplog.records if "consumers started on" in r.getMessage()]
    assert started and "redis://default:***@127.0.0.1:6379/15" in started[0]
    assert not [r for r in caplog.records if "pw-Zq81" in r.getMessage()]


def test_a_lease_lost_while_its_handler_runs_is_noticed_and_its_outcome_refused(
    backend_name: str, registry: ConsumerRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    started, release = threading.Event(), threading.Event()

    @registry.consumer("q1", max_attempts=5)
    def handle(value: Any, task: Task) -> None:
        if task.attempts == 1:
            started.set()
            assert release.wait(10)

    with new_store(backend_name, tmp_path) as store, store.open(visibility_timeout=0.3) as qs, \
            caplog.at_level(logging.WARNING, logger="dq.consumers"):
        mid = qs.put("q1", "requeued under it")
        runner = Runner(qs, list(registry), heartbeat_interval=None, poll_interval=0.05, keepalive_interval=60)
        bg = Background(runner)
        assert started.wait(10)
        qs.requeue("q1", mid)  # an operator gives it to the next taker
        assert runner.keep_leases() == 0
        assert "lease lost while its handler runs" in caplog.text
        release.set()
        wait_for(lambda: runner.report.completed == 1, what="the second delivery")
        report = bg.stop()
        assert (report.completed, report.lost_leases) == (1, 1)


# -- pause, quiet and stop ---------------------------------------------------------------
def test_a_paused_topic_stops_the_runner_taking_and_a_resume_restarts_it(
    backend_name: str, registry: ConsumerRegistry, tmp_path: Path
) -> None:
    handled: list[Any] = []
    registry.consumer("q1")(handled.append)
    with new_store(backend_name, tmp_path) as store, store.open() as qs, store.open() as operator:
        qs.put("q1", "before")
        bg = Background(Runner(qs, list(registry), heartbeat_interval=None, poll_interval=0.05))
        wait_for(lambda: handled == ["before"], what="the first message")
        operator.pause("q1")
        time.sleep(0.6)  # the pause reaches every take within PAUSE_CHECK_INTERVAL
        operator.put_many("q1", ["during 1", "during 2"])
        time.sleep(0.8)
        assert handled == ["before"] and operator.stats()["q1"]["ready"] == 2
        operator.resume("q1")
        wait_for(lambda: len(handled) == 3, what="the messages put while paused")
        bg.stop()


def test_quiet_and_stop_requests_reach_the_runner_through_the_location(
    backend_name: str, registry: ConsumerRegistry, tmp_path: Path
) -> None:
    from dqadmin.runner import request

    handled: list[Any] = []
    registry.consumer("q1")(handled.append)
    with new_store(backend_name, tmp_path) as store, store.open() as qs, store.open() as operator:
        runner = Runner(qs, list(registry), heartbeat_interval=0.05, poll_interval=0.05)
        bg = Background(runner)
        operator.put("q1", 1)
        wait_for(lambda: handled == [1], what="the first message")
        request(operator, runner.key, "quiet", by="ops")
        wait_for(lambda: runner.quieted, what="the quiet request")
        beat = next(b for b in operator.backend.heartbeats() if b["key"] == runner.key)
        wait_for(lambda: next(b for b in operator.backend.heartbeats() if b["key"] == runner.key)["quiet"],
                 what="quiet in the heartbeat")
        assert beat["owner"] is None or isinstance(beat["owner"], str)
        time.sleep(0.2)  # a take already waiting when the request came ends within a poll interval
        operator.put("q1", 2)
        time.sleep(0.4)
        assert handled == [1]  # quiet: nothing new taken, but still up
        assert bg.thread.is_alive()
        request(operator, runner.key, "stop", by="ops")
        bg.thread.join(10)
        assert not bg.thread.is_alive()
        assert operator.backend.controls() == {}  # consumed and cleaned up
        with pytest.raises(ValueError):
            request(operator, runner.key, "explode")


def test_a_request_for_an_earlier_process_with_the_same_key_is_ignored(
    backend_name: str, registry: ConsumerRegistry, tmp_path: Path
) -> None:
    from dqadmin.runner import request

    handled: list[Any] = []
    registry.consumer("q1")(handled.append)
    with new_store(backend_name, tmp_path) as store, store.open() as qs:
        runner = Runner(qs, list(registry), heartbeat_interval=0.05, poll_interval=0.05)
        # Left by a process of the same host and pid that started long ago.
        request(qs, runner.key, "quiet", by="ops", started=1.0)
        bg = Background(runner)
        wait_for(lambda: qs.backend.controls() == {}, what="the stale request to be dropped")
        qs.put("q1", 1)
        wait_for(lambda: handled == [1], what="the message")
        assert not runner.quieted
        bg.stop()
