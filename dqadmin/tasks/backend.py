"""``DQBackend``: Django's tasks framework on dq's queues.

::

    TASKS = {
        "default": {
            "BACKEND": "dqadmin.tasks.DQBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {"RESULT_TTL": 7 * 24 * 3600, "MAX_ATTEMPTS": 1},
        }
    }

Each Django queue is a dq topic (``TOPIC_PREFIX`` + queue name: ``tasks.default``)
at ``settings.DQ``'s location. ``enqueue`` is one put of a small message (the
task's path, its JSON arguments and a token); ``run_after`` makes it a
delayed message. ``manage.py runconsumers`` runs the tasks (see
:mod:`dqadmin.tasks.worker`), and their results are kept with the queues
(:mod:`dqadmin.tasks.results`).

A result id names where the task's message is and a token that is also in
the message (``tasks.default:42:9f1c2a7b``), so that a result is found in any
process without a write at enqueue: a waiting task's state is its message's.
"""

from __future__ import annotations

import datetime as dt
import math
import secrets
from typing import Any

from asgiref.sync import sync_to_async
from django.core import checks

from dqadmin.conf import conf
from dqadmin.queues import get_queues
from dqadmin.tasks.compat import (
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_enqueued,
)
from dqadmin.tasks.results import ResultStore, store_for
from dqadmin.tasks.state import ENVELOPE_KEY, ENVELOPE_VERSION, task_info
from queuecore import InvalidTopic, Queues, validate_topic

# Every option of OPTIONS, with its default.
DEFAULT_OPTIONS: dict[str, Any] = {
    # A queue's topic is this prefix and the queue's name.
    "TOPIC_PREFIX": "tasks.",
    # Seconds a result is kept after its last change.
    "RESULT_TTL": 7 * 24 * 3600.0,
    # Runs of a task that raises before it is FAILED (1: never retried, as
    # Django's API expects; a task killed with its worker always runs again).
    "MAX_ATTEMPTS": 1,
    # Seconds before a retry (with MAX_ATTEMPTS > 1): a number, or a
    # dqadmin.consumers.Backoff.
    "BACKOFF": None,
    # Worker threads per queue in each runconsumers process.
    "CONCURRENCY": 1,
}

def utc(ts: float | None) -> dt.datetime | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, tz=dt.UTC)


class DQBackend(BaseTaskBackend):  # type: ignore[misc]
    """A tasks backend whose queues are dq topics and whose results live
    with them: durable, multi-process, with dq's dashboard."""

    supports_defer = True
    supports_get_result = True
    supports_async_task = True
    # dq delivers in the order messages became ready; priorities would need
    # a topic per priority and are not offered (validate_task refuses them).
    supports_priority = False

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        unknown = sorted(set(self.options) - set(DEFAULT_OPTIONS))
        self._unknown_options = unknown
        self.settings = {**DEFAULT_OPTIONS, **{k: v for k, v in self.options.items() if k in DEFAULT_OPTIONS}}

    # -- where things are ------------------------------------------------------
    @property
    def dq(self) -> Queues:
        """The dq location of ``settings.DQ`` (shared with the dashboard)."""
        return get_queues()

    @property
    def result_ttl(self) -> float:
        return float(self.settings["RESULT_TTL"])

    @property
    def results(self) -> ResultStore:
        return store_for(self.dq, self.result_ttl)

    def topic_for(self, queue_name: str) -> str:
        """The dq topic of a Django queue."""
        return f"{self.settings['TOPIC_PREFIX']}{queue_name}"

    def topics(self) -> list[str]:
        """The topics whose tasks ``runconsumers`` runs: one per queue of
        QUEUES, or (QUEUES empty: any queue) each prefixed topic there is."""
        if self.queues:
            return [self.topic_for(q) for q in sorted(self.queues)]
        prefix = str(self.settings["TOPIC_PREFIX"])
        found = {t for t in self.dq.topics() if t.startswith(prefix)}
        return sorted(found | {self.topic_for("default")})

    # -- the framework's API -----------------------------------------------------
    def validate_task(self, task: Task) -> None:
        super().validate_task(task)
        try:
            validate_topic(self.topic_for(task.queue_name))
        except InvalidTopic as exc:
            raise InvalidTask(f"Queue {task.queue_name!r} cannot be a dq topic: {exc}") from None

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        now = dt.datetime.now(dt.UTC)
        # TaskResult checks the arguments: JSON types only, tuples as lists.
        result = TaskResult(
            task=task,
            id="",
            status=TaskResultStatus.READY,
            enqueued_at=now,
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=list(args),
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        token = secrets.token_hex(4)
        envelope = {
            ENVELOPE_KEY: ENVELOPE_VERSION,
            "task": task.module_path,
            "args": result.args,
            "kwargs": result.kwargs,
            "token": token,
            "backend": self.alias,
            "queue": task.queue_name,
            "takes_context": bool(task.takes_context),
            "run_after": task.run_after.timestamp() if task.run_after is not None else None,
        }
        topic = self.topic_for(task.queue_name)
        queues = self.dq
        delay = task.run_after.timestamp() - now.timestamp() if task.run_after is not None else 0.0
        if delay > 0:
            mid = queues.put_delayed(topic, envelope, delay)
        else:
            # A full topic (max_queue_size) refuses at once with QueueFull: a
            # view must not wait for room.
            mid = queues.put(topic, envelope, timeout=0)
        object.__setattr__(result, "id", f"{topic}:{mid}:{token}")
        task_enqueued.send(type(self), task_result=result)
        return result

    async def aenqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        # Not thread_sensitive: a put needs no database connection, and
        # enqueues from many coroutines then run side by side.
        return await sync_to_async(self.enqueue, thread_sensitive=False)(task, args, kwargs)

    def get_result(self, result_id: str) -> TaskResult:
        found = self.lookup(result_id)
        if found is None:
            raise TaskResultDoesNotExist(result_id)
        return self.task_result(found)

    async def aget_result(self, result_id: str) -> TaskResult:
        return await sync_to_async(self.get_result, thread_sensitive=False)(result_id)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        errors: list[checks.CheckMessage] = list(super().check(**kwargs))
        where = f"TASKS[{self.alias!r}]"
        if self._unknown_options:
            errors.append(checks.Error(
                f"{where}['OPTIONS'] has unknown options: {', '.join(self._unknown_options)}.",
                hint=f"Known options: {', '.join(DEFAULT_OPTIONS)}.", id="dqadmin.E010",
            ))
        for queue in sorted(self.queues):
            try:
                validate_topic(self.topic_for(queue))
            except InvalidTopic as exc:
                errors.append(checks.Error(
                    f"{where}: queue {queue!r} cannot be a dq topic: {exc}.",
                    hint="Queue names are 1 to 100 of letters, digits, '_', '.' and '-' with the prefix.",
                    id="dqadmin.E011",
                ))
        for name, integral in (("RESULT_TTL", False), ("MAX_ATTEMPTS", True), ("CONCURRENCY", True)):
            value = self.settings[name]
            ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
                  and value > 0 and (not integral or value == int(value)))
            if not ok:
                kind = "a positive whole number" if integral else "a positive number of seconds"
                errors.append(checks.Error(f"{where}['OPTIONS'][{name!r}] must be {kind}, not {value!r}.",
                                           id="dqadmin.E012"))
        if conf.OPTIONS.get("serializer") == "raw":
            errors.append(checks.Error(
                f"{where}: settings.DQ's serializer is 'raw', which cannot hold a task's arguments.",
                hint="Use 'msgpack' (the default) or 'json'.", id="dqadmin.E013",
            ))
        return errors

    # -- results -------------------------------------------------------------------
    def lookup(self, result_id: str) -> dict[str, Any] | None:
        """What is known of a task (see :func:`dqadmin.tasks.state.task_info`)."""
        return task_info(self.dq, self.results, result_id)

    def task_result(self, info: dict[str, Any], task: Task | None = None) -> TaskResult:
        """The framework's TaskResult of what :meth:`lookup` returned (for
        ``task``, or the one its path names)."""
        task = task if task is not None else self.load_task(info)
        result = TaskResult(
            task=task,
            id=info["id"],
            status=TaskResultStatus(info["status"]),
            enqueued_at=utc(info.get("enqueued_at")),
            started_at=utc(info.get("started_at")),
            finished_at=utc(info.get("finished_at")),
            last_attempted_at=utc(info.get("last_attempted_at")),
            args=info.get("args", []),
            kwargs=info.get("kwargs", {}),
            backend=self.alias,
            errors=[
                TaskError(exception_class_path=e["exception_class_path"], traceback=e.get("traceback", ""))
                for e in info.get("errors", [])
            ],
            worker_ids=list(info.get("worker_ids", [])),
        )
        if info["status"] == "SUCCESSFUL":
            object.__setattr__(result, "_return_value", info.get("return_value"))
        return result

    def load_task(self, info: dict[str, Any]) -> Task:
        """The Task a message names, with the queue and run_after it was
        enqueued with; ImportError or TypeError when its path names none."""
        from django.utils.module_loading import import_string

        found = import_string(info["task"])
        if not isinstance(found, Task):
            raise TypeError(f"{info['task']} is not a task (decorate it with @task)")
        changes: dict[str, Any] = {"backend": self.alias}
        if info.get("queue") and info["queue"] != found.queue_name:
            changes["queue_name"] = info["queue"]
        if info.get("run_after"):
            changes["run_after"] = utc(float(info["run_after"]))
        task: Task = found.using(**changes)
        return task
