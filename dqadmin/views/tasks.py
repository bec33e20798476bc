"""Django tasks as tasks: the results of the recent runs (the result store
of :mod:`dqadmin.tasks.results`), newest first, by status. A task's own page
is its message's page, which shows it as a task."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from dqadmin.queues import get_queues
from dqadmin.tasks.state import parse_result_id, results_store, task_info
from dqadmin.views.base import (
    BadParameter,
    HtmxHttpRequest,
    NotFound,
    can_act,
    dashboard_view,
    pretty_value,
)

STATUSES = ("all", "RUNNING", "SUCCESSFUL", "FAILED", "READY")
PAGE_SIZE = 50


def describe(record: dict[str, Any]) -> dict[str, Any]:
    """A result record with what the pages show of it: its name, duration,
    and its outcome in one line."""
    row = dict(record)
    parsed = parse_result_id(record.get("id"))
    if parsed is not None:
        row["topic"], row["message_id"], _ = parsed
    row["name"] = str(record.get("task", "?"))
    row["short_name"] = row["name"].rsplit(".", 1)[-1]
    started, finished = record.get("last_attempted_at"), record.get("finished_at")
    numbers = isinstance(started, (int, float)) and isinstance(finished, (int, float))
    row["duration"] = finished - started if numbers and started and finished else None
    row["attempts"] = len(record.get("worker_ids") or [])
    errors = record.get("errors") or []
    row["last_error"] = errors[-1] if errors else None
    if row["last_error"]:
        lines = [line for line in str(row["last_error"].get("traceback", "")).strip().splitlines() if line]
        row["error_line"] = lines[-1] if lines else row["last_error"].get("exception_class_path", "")
    return row


@dashboard_view()
@require_GET
def tasks(request: HtmxHttpRequest) -> HttpResponse:
    """The latest task results, ``?status=`` one of STATUSES; ``?before=``
    pages back (the time of the last row's write)."""
    status = request.GET.get("status") or "all"
    if status not in STATUSES:
        raise BadParameter(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    raw_before = request.GET.get("before") or None
    try:
        before = float(raw_before) if raw_before is not None else None
    except ValueError:
        raise BadParameter(f"before must be a time in seconds, not {raw_before[:40]!r}") from None
    if before is not None and not (0 < before < 1e11):
        raise BadParameter("before must be a time in seconds")
    store = results_store(get_queues())
    found = store.recent(PAGE_SIZE + 1, None if status == "all" else status, before)
    rows = [describe(r) for r in found[:PAGE_SIZE]]
    base = reverse("dqadmin:tasks")

    def link(**params: Any) -> str:
        query = {k: v for k, v in {"status": status, **params}.items() if v not in (None, "all")}
        return f"{base}?{urlencode(query)}" if query else base

    context = {
        "rows": rows,
        "status": status,
        "status_urls": {s: (base if s == "all" else f"{base}?{urlencode({'status': s})}") for s in STATUSES},
        "next_url": link(before=repr(found[PAGE_SIZE - 1]["_written"])) if len(found) > PAGE_SIZE else None,
        "first_url": link() if before is not None else None,
        "can_act": can_act(request),
        "now": time.time(),
        "self_url": request.get_full_path(),
    }
    return render(request, "dqadmin/tasks.html", context)


def task_panel(info: dict[str, Any]) -> dict[str, Any]:
    """What the task panel shows of :func:`~dqadmin.tasks.state.task_info`."""
    row = describe(info)
    row["pretty_args"] = pretty_value(info.get("args", []))
    row["pretty_kwargs"] = pretty_value(info.get("kwargs", {}))
    if "return_value" in info:
        row["pretty_return"] = pretty_value(info["return_value"])
    row["errors_newest_first"] = list(reversed(info.get("errors") or []))
    return row


@dashboard_view()
@require_GET
def task(request: HtmxHttpRequest, result_id: str) -> HttpResponse:
    """One task by its result id: arguments, status, times, return value or
    errors; found after its message is gone, until its result expires."""
    queues = get_queues()
    if parse_result_id(result_id) is None:
        raise BadParameter("not a task result id (topic:message id:token)")
    info = task_info(queues, results_store(queues), result_id)
    if info is None:
        raise NotFound(f"no task {result_id!r} (never enqueued, deleted, or its result expired)")
    context = {"task": task_panel(info), "can_act": can_act(request), "now": time.time()}
    return render(request, "dqadmin/task.html", context)
