"""What a task is at a moment, from its message and its result record, and
how a task message looks. Nothing here imports the tasks framework, so the
dashboard shows tasks in any project."""

from __future__ import annotations

import re
from typing import Any

from dqadmin.tasks.results import ResultStore
from queuecore import InvalidTopic, MessageNotFound, Queues

# The message of a task: what identifies it as one.
ENVELOPE_KEY = "dq_task"
ENVELOPE_VERSION = 1

_ID = re.compile(r"^(?P<topic>[A-Za-z0-9_.-]{1,100}):(?P<mid>[0-9]{1,20}):(?P<token>[0-9a-f]{8,32})$")


def parse_result_id(result_id: object) -> tuple[str, int, str] | None:
    """``(topic, message id, token)`` of a result id, or None if it is not one.

    >>> parse_result_id("tasks.default:42:9f1c2a7b")
    ('tasks.default', 42, '9f1c2a7b')
    >>> parse_result_id("../etc:1:00000000") is None, parse_result_id(42) is None
    (True, True)
    """
    if not isinstance(result_id, str):
        return None
    found = _ID.match(result_id)
    if found is None or found["topic"].startswith(".") or int(found["mid"]) < 1:
        return None
    return found["topic"], int(found["mid"]), found["token"]


def is_envelope(value: object) -> bool:
    """Whether a message value is a task of :class:`DQBackend`."""
    return (
        isinstance(value, dict)
        and value.get(ENVELOPE_KEY) == ENVELOPE_VERSION
        and isinstance(value.get("task"), str)
        and isinstance(value.get("token"), str)
    )


def result_id_for(topic: str, message_id: int, envelope: dict[str, Any]) -> str:
    """The result id of the task in message ``message_id`` of ``topic``."""
    return f"{topic}:{message_id}:{envelope['token']}"


def task_info(queues: Queues, store: ResultStore, result_id: str) -> dict[str, Any] | None:
    """What is known of a task: its result record merged with its message
    (state, times, arguments), or None when neither is there (an id that
    is not one, a message deleted before it ran, a result that expired)."""
    parsed = parse_result_id(result_id)
    if parsed is None:
        return None
    topic, mid, token = parsed
    record = store.get(result_id)
    try:
        message = queues.peek(topic, mid)
    except (MessageNotFound, InvalidTopic):
        message = None
    if message is not None and not (is_envelope(message.value) and message.value.get("token") == token):
        message = None  # another message now has this id (the topic was made anew)
    if record is None and message is None:
        return None
    info: dict[str, Any] = dict(record or {})
    if message is not None:
        env = message.value
        info.setdefault("id", result_id)
        info.setdefault("task", env["task"])
        info.setdefault("args", env.get("args", []))
        info.setdefault("kwargs", env.get("kwargs", {}))
        info.setdefault("queue", env.get("queue", "default"))
        info.setdefault("run_after", env.get("run_after"))
        info.setdefault("enqueued_at", message.enqueued_at)
        info.setdefault("worker_ids", [])
        info.setdefault("errors", [])
        info["message_state"] = message.state
        info["status"] = status_of(record, message.state, message.attempts)
        if not info["status"]:
            return None
    elif info.get("status") not in ("SUCCESSFUL", "FAILED"):
        # Neither finished nor in the queue any more (deleted, purged).
        return None
    info["topic"], info["message_id"] = topic, mid
    return info


def status_of(record: dict[str, Any] | None, state: str, attempts: int) -> str:
    """The framework's status (READY, RUNNING, SUCCESSFUL, FAILED) of a task
    whose message is in ``state`` after ``attempts`` deliveries, given its
    result record; "" for a completed message without a record."""
    if state in ("ready", "delayed"):
        return "READY"  # waiting: for its first run, a retry, or after a requeue
    if state == "failed":
        return "FAILED"
    finished = record is not None and record.get("status") in ("SUCCESSFUL", "FAILED")
    if state == "in_progress":
        # A worker writes the end of a run just before it settles the
        # message: that run's outcome, unless a later run has begun.
        if finished and record is not None and len(record.get("worker_ids", [])) >= attempts:
            return str(record["status"])
        return "RUNNING"
    # Completed: what its last run wrote (a lookup without a record, its
    # result expired, finds nothing).
    return str(record.get("status", "SUCCESSFUL")) if record is not None else ""



def results_store(queues: Queues) -> ResultStore:
    """The result store of ``queues``, kept as long as the first DQBackend of
    ``settings.TASKS`` says (the dashboard's view of the results)."""
    from django.conf import settings

    from dqadmin.tasks.results import store_for

    ttl = 7 * 24 * 3600.0
    for params in (getattr(settings, "TASKS", None) or {}).values():
        if isinstance(params, dict) and str(params.get("BACKEND", "")).startswith("dqadmin.tasks"):
            value = (params.get("OPTIONS") or {}).get("RESULT_TTL", ttl)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                ttl = float(value)
            break
    return store_for(queues, ttl)
