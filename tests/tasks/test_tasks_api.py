"""DQBackend through Django's public tasks API only (``django.tasks`` on
Django 6, the ``django-tasks`` backport on 5.2): enqueue, get_result,
refresh, run_after, async tasks, failing tasks, context, signals, on slab
files, memory and Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from dqadmin.tasks.compat import (
    FRAMEWORK,
    InvalidTask,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_backends,
    task_enqueued,
    task_finished,
    task_started,
)
from tests.tasks import tasks
from tests.tasks.conftest import TASKS_SETTING, Where, work

pytestmark = pytest.mark.django_db(databases=[])


def backend() -> Any:
    return task_backends["default"]


def test_the_backend_says_what_it_supports(where: Where) -> None:
    b = backend()
    assert (b.supports_defer, b.supports_get_result, b.supports_async_task) == (True, True, True)
    assert b.supports_priority is False
    assert FRAMEWORK in ("django.tasks", "django_tasks")


def test_enqueue_then_run(where: Where) -> None:
    result = tasks.add.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY
    assert result.enqueued_at is not None and result.started_at is None
    assert (result.args, result.kwargs, result.backend) == ([2, 3], {}, "default")
    assert result.id.startswith("tasks.default:")
    assert where.queues().stats()["tasks.default"]["ready"] == 1

    fetched = backend().get_result(result.id)
    assert fetched.status == TaskResultStatus.READY and fetched.task.func is tasks.add.func
    with pytest.raises(ValueError):
        fetched.return_value  # noqa: B018  (not finished yet)

    work()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert result.attempts == 1 and len(result.worker_ids) == 1
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at
    assert result.errors == []
    again = tasks.add.get_result(result.id)
    assert again.return_value == 5 and again.finished_at == result.finished_at


def test_kwargs_and_another_queue(where: Where) -> None:
    result = tasks.send.enqueue("a@example.com", subject="hi")
    assert result.id.startswith("tasks.emails:")
    work()
    result.refresh()
    assert result.return_value == {"to": "a@example.com", "subject": "hi"}


def test_a_failing_task(where: Where) -> None:
    result = tasks.explode.enqueue("boom")
    work()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.finished_at is not None and result.attempts == 1
    (error,) = result.errors
    assert error.exception_class_path == "builtins.ValueError"
    assert error.exception_class is ValueError
    assert "ValueError: boom" in error.traceback and "explode" in error.traceback
    with pytest.raises(ValueError, match="failed"):
        result.return_value  # noqa: B018
    # Not run again unless asked: it sits in the failed store.
    assert where.queues().stats()["tasks.default"]["failed"] == 1


def test_async_task(where: Where) -> None:
    result = tasks.async_add.enqueue(20, 22)
    work()
    result.refresh()
    assert result.return_value == 42


def test_takes_context(where: Where) -> None:
    result = tasks.with_context.enqueue("x")
    work()
    result.refresh()
    assert result.return_value == {"attempt": 1, "id": result.id, "label": "x"}


def test_run_after_is_a_delayed_message(where: Where) -> None:
    due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.0)
    result = tasks.add.using(run_after=due).enqueue(1, 1)
    assert result.task.run_after == due
    stats = where.queues().stats()["tasks.default"]
    assert (stats["delayed"], stats["ready"]) == (1, 0)
    work()  # not due yet: not run
    result.refresh()
    assert result.status == TaskResultStatus.READY
    deadline = time.monotonic() + 10
    while time.time() < due.timestamp() and time.monotonic() < deadline:
        time.sleep(0.05)
    work()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.started_at.timestamp() >= due.timestamp() - 0.05
    assert backend().get_result(result.id).task.run_after == due


def test_arguments_must_be_json(where: Where) -> None:
    with pytest.raises(TypeError):
        tasks.add.enqueue({1, 2}, 3)
    assert "tasks.default" not in where.queues().stats()  # nothing was put


def test_a_return_value_that_is_not_json_fails_the_task(where: Where) -> None:
    result = tasks.returns_a_set.enqueue()
    work()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class_path == "builtins.TypeError"


def test_an_unknown_queue_or_a_priority_is_refused(where: Where) -> None:
    with pytest.raises(InvalidTask):
        tasks.add.using(queue_name="nowhere").enqueue(1, 2)
    with pytest.raises(InvalidTask):
        tasks.add.using(priority=10).enqueue(1, 2)


@pytest.mark.parametrize("bad", ["nope", "tasks.default:1:zz", "tasks.default:0:00000000", "../x:1:00000000"])
def test_unknown_result_ids(where: Where, bad: str) -> None:
    with pytest.raises(TaskResultDoesNotExist):
        backend().get_result(bad)


def test_a_result_id_of_another_message_is_not_found(where: Where) -> None:
    real = tasks.add.enqueue(1, 2)
    topic, mid, token = real.id.split(":")
    with pytest.raises(TaskResultDoesNotExist):
        backend().get_result(f"{topic}:{mid}:{'0' * len(token)}")


def test_signals(where: Where) -> None:
    seen: list[tuple[str, str, str]] = []

    def on(name: str) -> Any:
        def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
            seen.append((name, task_result.id, str(task_result.status)))

        return receiver

    receivers = {name: on(name) for name in ("enqueued", "started", "finished")}
    task_enqueued.connect(receivers["enqueued"])
    task_started.connect(receivers["started"])
    task_finished.connect(receivers["finished"])
    try:
        ok = tasks.add.enqueue(1, 2)
        bad = tasks.explode.enqueue("x")
        work()
    finally:
        task_enqueued.disconnect(receivers["enqueued"])
        task_started.disconnect(receivers["started"])
        task_finished.disconnect(receivers["finished"])
    assert ("enqueued", ok.id, "READY") in seen and ("enqueued", bad.id, "READY") in seen
    assert ("started", ok.id, "RUNNING") in seen and ("finished", ok.id, "SUCCESSFUL") in seen
    assert ("started", bad.id, "RUNNING") in seen and ("finished", bad.id, "FAILED") in seen


def test_async_enqueue_and_get_result(where: Where) -> None:
    async def go() -> Any:
        result = await tasks.add.aenqueue(4, 5)
        fetched = await backend().aget_result(result.id)
        return result, fetched

    result, fetched = asyncio.run(go())
    assert fetched.status == TaskResultStatus.READY and fetched.id == result.id
    work()
    asyncio.run(result.arefresh())
    assert result.return_value == 9


def test_retries_only_when_asked(where: Where, tmp_path: Path) -> None:
    marker = tmp_path / "flaky-marker"
    once = tasks.flaky.enqueue(str(marker))
    work()
    once.refresh()
    assert once.status == TaskResultStatus.FAILED and once.attempts == 1
    marker.unlink()
    setting = {"default": {**TASKS_SETTING["default"], "OPTIONS": {"MAX_ATTEMPTS": 2, "BACKOFF": 0}}}
    with override_settings(TASKS=setting):
        twice = tasks.flaky.enqueue(str(marker))
        work()
        twice.refresh()
        assert twice.status == TaskResultStatus.SUCCESSFUL and twice.return_value == "second run"
        assert twice.attempts == 2 and len(twice.errors) == 1
        assert twice.errors[0].exception_class_path == "builtins.RuntimeError"


def test_a_requeued_failed_task_runs_again(where: Where, tmp_path: Path) -> None:
    marker = tmp_path / "flaky-marker"
    result = tasks.flaky.enqueue(str(marker))
    work()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    topic, mid, _ = result.id.split(":")
    where.queues().requeue(topic, int(mid))
    result.refresh()
    assert result.status == TaskResultStatus.READY
    work()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.attempts == 2
    assert len(result.errors) == 1  # the first run's error is kept


def test_results_expire(where: Where) -> None:
    setting = {"default": {**TASKS_SETTING["default"], "OPTIONS": {"RESULT_TTL": 1}}}
    with override_settings(TASKS=setting):
        result = tasks.add.enqueue(1, 2)
        work()
        result.refresh()
        assert result.status == TaskResultStatus.SUCCESSFUL
        time.sleep(1.2)
        with pytest.raises(TaskResultDoesNotExist):
            backend().get_result(result.id)


def test_a_full_queue_refuses_an_enqueue_at_once(where: Where) -> None:
    from django.test import override_settings

    from dqadmin.queues import close_queues
    from queuecore import QueueFull

    with override_settings(DQ={"LOCATION": where.location, "OPTIONS": {**where.options, "max_queue_size": 1}}):
        try:
            tasks.add.enqueue(1, 1)
            with pytest.raises(QueueFull):
                tasks.add.enqueue(2, 2)  # never waits for room in a request
        finally:
            close_queues()


def test_backends_with_different_ttls_share_a_location(where: Where) -> None:
    long = {"default": {**TASKS_SETTING["default"], "OPTIONS": {"RESULT_TTL": 3600}}}
    short = {"default": {**TASKS_SETTING["default"], "OPTIONS": {"RESULT_TTL": 1}}}
    with override_settings(TASKS=long):
        result = tasks.add.enqueue(1, 2)
        work()
    with override_settings(TASKS=short):
        other = tasks.add.enqueue(3, 4)
        work()
    time.sleep(1.2)
    with override_settings(TASKS=long):
        assert backend().get_result(result.id).return_value == 3  # kept for its own hour
    with override_settings(TASKS=short):
        with pytest.raises(TaskResultDoesNotExist):
            backend().get_result(other.id)
