"""Failed messages of every topic, grouped by their last error, and the
requeue of a whole group."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from dqadmin import audit
from dqadmin.audit import by_request
from dqadmin.queues import get_queues
from dqadmin.search import Filter, FilterError
from dqadmin.views.base import (
    FAILED_SCAN_LIMIT,
    BadParameter,
    HtmxHttpRequest,
    can_act,
    dashboard_view,
    existing_topic,
    flash,
)
from queuecore import Message, MessageNotFound, Queues


def _error_key(msg: Message) -> str:
    """What failed messages are grouped by: the first line of the last error."""
    if not msg.errors:
        return "(no error recorded)"
    reason = str(msg.errors[-1].get("reason") or "").strip()
    first = reason.splitlines()[0] if reason else "(no reason given)"
    return first[:300]


def _group_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _failed_messages(queues: Queues, topic: str, limit: int | None) -> Iterator[Message]:
    after, seen = None, 0
    while limit is None or seen < limit:
        batch = queues.messages(topic, state="failed", after=after, limit=500)
        for msg in batch:
            yield msg
            seen += 1
            if limit is not None and seen >= limit:
                return
        if len(batch) < 500:
            return
        after = batch[-1].id


@dashboard_view()
@require_GET
def failed(request: HtmxHttpRequest) -> HttpResponse:
    """Failed messages of every topic, grouped by their last error; with a
    search (``q``, ``min_attempts``, ``max_attempts``, ``since``, ``until``,
    as on a topic's page), only those that match."""
    queues = get_queues()
    try:
        flt = Filter.from_params(request.GET, "failed")
    except FilterError as exc:
        raise BadParameter(str(exc)) from None
    groups: dict[str, dict[str, Any]] = {}
    capped: list[str] = []
    for name in queues.topics():
        seen = 0
        for msg in _failed_messages(queues, name, FAILED_SCAN_LIMIT):
            seen += 1
            if not flt.matches(msg):
                continue
            key = _error_key(msg)
            group = groups.get(key)
            if group is None:
                last = msg.errors[-1] if msg.errors else {}
                group = groups[key] = {
                    "key": key,
                    "id": _group_id(key),
                    "count": 0,
                    "topics": {},
                    "samples": [],
                    "traceback": last.get("traceback") or "",
                    "last_at": 0.0,
                }
            group["count"] += 1
            group["topics"][name] = group["topics"].get(name, 0) + 1
            if len(group["samples"]) < 5:
                group["samples"].append(msg)
            if msg.errors:
                group["last_at"] = max(group["last_at"], float(msg.errors[-1].get("at") or 0))
        if seen >= FAILED_SCAN_LIMIT:
            capped.append(name)
    ordered = sorted(groups.values(), key=lambda g: (-g["count"], g["key"]))
    for group in ordered:
        group["topic_list"] = sorted(group["topics"].items())
    return render(
        request,
        "dqadmin/failed.html",
        {
            "groups": ordered,
            "total": sum(g["count"] for g in ordered),
            "capped": capped,
            "scan_limit": FAILED_SCAN_LIMIT,
            "filter": flt,
            "bulk_query": urlencode({"state": "failed", **flt.params}),
            "can_act": can_act(request),
        },
    )


@dashboard_view(act=True)
@require_POST
def failed_requeue(request: HtmxHttpRequest) -> HttpResponse:
    """Requeue every failed message (of every topic, or of ``topic``) whose
    last error falls in the group ``group`` of the failed page, and that
    matches the page's search if it had one."""
    queues = get_queues()
    try:
        flt = Filter.from_params(request.POST, "failed")
    except FilterError as exc:
        raise BadParameter(str(exc)) from None
    group = request.POST.get("group", "")
    if len(group) != 16 or any(c not in "0123456789abcdef" for c in group):
        raise BadParameter("group must be a group id from the failed page")
    only = request.POST.get("topic") or None
    names = [existing_topic(queues, only)] if only else queues.topics()
    count = 0
    for name in names:
        matching = [
            m.id for m in _failed_messages(queues, name, None)
            if _group_id(_error_key(m)) == group and flt.matches(m)
        ]
        done = []
        for mid in matching:
            try:
                queues.requeue(name, mid)
                done.append(mid)
            except MessageNotFound:
                pass
        count += len(done)
        if done:
            audit.record("requeue_failed", user=by_request(request), topic=name, count=len(done), ids=done,
                         detail=f"failed group {group}")
    flash(request, messages.SUCCESS, f"Requeued {count} failed message{'s' if count != 1 else ''}.")
    back = reverse("dqadmin:failed")
    return HttpResponseRedirect(f"{back}?{urlencode(flt.params)}" if flt.active else back)
