"""Running Django tasks in ``manage.py runconsumers``.

Each queue of a :class:`~dqadmin.tasks.DQBackend` becomes a
:class:`~dqadmin.consumers.Consumer` of its topic, so tasks get what every
consumer gets from :mod:`dqadmin.runner`: worker threads, graceful stop,
heartbeats, ``--burst``, and a message given back when its worker dies.

A run of a task: its result record is written RUNNING (``started_at`` the
first run's, ``last_attempted_at`` this one's, this worker appended to
``worker_ids``) and ``task_started`` is sent; the function runs (a coroutine
function in an event loop of its own, through ``Task.call``), with a
``TaskContext`` first if it ``takes_context``; then the record is written
SUCCESSFUL with the JSON of its return value, or FAILED with the error,
``task_finished`` is sent, and only then is the message settled. A task that
raises is FAILED at once unless ``MAX_ATTEMPTS`` allows another run (then it
is READY again, with the error kept, after ``BACKOFF``).
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from typing import TYPE_CHECKING, Any

from dqadmin.consumers import Consumer, resolve_backoff
from dqadmin.tasks.backend import utc
from dqadmin.tasks.compat import (
    TaskContext,
    TaskError,
    TaskResultStatus,
    normalize_json,
    task_finished,
    task_started,
)
from dqadmin.tasks.results import ResultStore
from dqadmin.tasks.state import is_envelope, result_id_for
from queuecore import Task as Delivery

if TYPE_CHECKING:
    from dqadmin.tasks.backend import DQBackend


class TaskLoadError(Exception):
    """A message that names no task that can run (not a task message, or an
    import that fails): failed at once, since running it again cannot help."""


_worker: tuple[int, str] = (0, "")


def worker_id() -> str:
    """This process, as the framework's ``worker_ids`` name it."""
    global _worker
    if _worker[0] != os.getpid():  # a forked child is another worker
        _worker = (os.getpid(), f"{socket.gethostname()}:{os.getpid()}")
    return _worker[1]


class TaskExecutor:
    """The handler of one backend's task topics (a consumer's ``func``)."""

    def __init__(self, backend: DQBackend) -> None:
        self.backend = backend
        self.max_attempts = int(backend.settings["MAX_ATTEMPTS"])
        # Tasks by (path, queue, run_after): import and validation once each.
        self._tasks: dict[tuple[Any, ...], Any] = {}
        self.__module__ = type(backend).__module__
        self.__qualname__ = f"{type(backend).__name__}[{backend.alias!r}]"

    def __call__(self, value: Any, task: Delivery) -> Any:
        if not is_envelope(value):
            raise TaskLoadError(f"{task.topic}#{task.id} is not a task message")
        backend = self.backend
        store = backend.results
        result_id = result_id_for(task.topic, task.id, value)
        earlier = (store.get(result_id) or {}) if task.attempts > 1 else {}
        now = time.time()
        record: dict[str, Any] = {
            "id": result_id,
            "task": value["task"],
            "queue": value.get("queue", "default"),
            "args": value.get("args", []),
            "kwargs": value.get("kwargs", {}),
            "run_after": value.get("run_after"),
            "enqueued_at": task.enqueued_at,
            "started_at": earlier.get("started_at") or now,
            "last_attempted_at": now,
            "finished_at": None,
            "status": "RUNNING",
            "worker_ids": [*earlier.get("worker_ids", []), worker_id()],
            "errors": list(earlier.get("errors", [])),
        }
        try:
            django_task = self._task(record)
        except Exception as exc:
            self._end(store, record, exc, final=True, result=None)
            raise TaskLoadError(f"cannot load the task {value['task']!r}: {type(exc).__name__}: {exc}") from exc
        store.save(record)
        result = backend.task_result(record, django_task)
        task_started.send(type(backend), task_result=result)
        try:
            args, kwargs = record["args"], record["kwargs"]
            if django_task.takes_context:
                returned = django_task.call(TaskContext(task_result=result), *args, **kwargs)
            else:
                returned = django_task.call(*args, **kwargs)
            return_value = normalize_json(returned)
        except Exception as exc:
            self._end(store, record, exc, final=task.attempts >= self.max_attempts, result=result)
            raise
        record.update(status="SUCCESSFUL", finished_at=time.time(), return_value=return_value)
        store.save(record)
        _set(result, status=TaskResultStatus.SUCCESSFUL, finished_at=utc(record["finished_at"]),
             _return_value=return_value)
        task_finished.send(type(backend), task_result=result)
        return return_value

    def _task(self, record: dict[str, Any]) -> Any:
        key = (record["task"], record.get("queue"), record.get("run_after"))
        found = self._tasks.get(key)
        if found is None:
            found = self._tasks[key] = self.backend.load_task(record)
        return found

    def _end(
        self, store: ResultStore, record: dict[str, Any], exc: BaseException, final: bool, result: Any
    ) -> None:
        kind = type(exc)
        error = {
            "exception_class_path": f"{kind.__module__}.{kind.__qualname__}",
            "traceback": "".join(traceback.format_exception(exc)),
        }
        record["errors"].append(error)
        # A run that raised is the task's end only if no other run follows.
        record.update(status="FAILED" if final else "READY", finished_at=time.time() if final else None)
        store.save(record)
        if result is not None:
            result.errors.append(TaskError(**error))
            _set(result, status=TaskResultStatus(record["status"]), finished_at=utc(record["finished_at"]))
            if final:
                # Sent inside the except block, as the framework's own
                # backends do: its log handler reads the exception from there.
                task_finished.send(type(self.backend), task_result=result)


def _set(result: Any, **changes: Any) -> None:
    # TaskResult is frozen: the framework's own backends change it this way.
    for name, value in changes.items():
        object.__setattr__(result, name, value)


def task_consumers(backend: DQBackend) -> list[Consumer]:
    """One consumer per topic of ``backend``'s queues."""
    executor = TaskExecutor(backend)
    return [
        Consumer(
            topic=topic,
            func=executor,
            concurrency=int(backend.settings["CONCURRENCY"]),
            max_attempts=executor.max_attempts,
            backoff=resolve_backoff(backend.settings["BACKOFF"]),
            permanent=(TaskLoadError,),
            wants_task=True,
        )
        for topic in backend.topics()
    ]

