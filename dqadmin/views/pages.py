"""The pages that show the queues: overview, topic, message. GET only;
nothing here changes a message."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from dqadmin import audit
from dqadmin.history import chart, history_for
from dqadmin.jobs import jobs
from dqadmin.queues import get_queues
from dqadmin.search import SEARCH_BUDGET, Filter, FilterError, Scan, scan
from dqadmin.stats import build_stats
from dqadmin.tasks.state import is_envelope, result_id_for, results_store, task_info
from dqadmin.views.base import (
    INTERVALS,
    MAX_HEX_BYTES,
    MAX_PAGE_SIZE,
    PAGE_SIZE,
    PREVIEW_BYTES,
    PREVIEW_CHARS,
    BadParameter,
    HtmxHttpRequest,
    NotFound,
    can_act,
    dashboard_view,
    existing_topic,
    int_param,
    parse_message_id,
    poll_interval,
    poll_trigger,
    pretty_value,
)
from dqadmin.views.tasks import task_panel
from queuecore import Message, Queues, identity
from queuecore.defaults import MAX_ERRORS_KEPT, STATES
from queuecore.timings import KINDS, per_minute


@dashboard_view()
@require_GET
def overview(request: HtmxHttpRequest) -> HttpResponse:
    """Every topic with its counters and rates, consumers, storage; live."""
    every = poll_interval(request)
    queues = get_queues()
    stats = build_stats(queues)
    context = {
        "stats": stats,
        "topics": stats["topics"],
        "chart": chart(history_for(queues.location).series(None, stats["generated_at"])),
        "every": every,
        "intervals": INTERVALS,
        "trigger": poll_trigger(every),
        "warnings": [name for name, row in stats["topics"].items() if row["backlog_without_consumer"]],
        "running_jobs": [j for j in jobs.all() if j.running],
        "can_act": can_act(request),
    }
    if request.htmx:
        return render(request, "dqadmin/_overview.html", context)
    return render(request, "dqadmin/overview.html", context)


# -- topic --------------------------------------------------------------------


def _browse_params(request: HttpRequest) -> tuple[str | None, int | None, int]:
    state = request.GET.get("state") or "all"
    if state != "all" and state not in STATES:
        raise BadParameter(f"state must be all or one of {', '.join(STATES)}, not {state!r}")
    after = int_param(request.GET.get("after"), "after", 0)
    limit = int_param(request.GET.get("limit"), "limit", 1, MAX_PAGE_SIZE) or PAGE_SIZE
    return (None if state == "all" else state), after, limit


@dashboard_view()
@require_GET
def topic(request: HtmxHttpRequest, topic: str) -> HttpResponse:
    """One topic: counters, chart and the message browser (state, after and
    limit in the URL, keyset paging by id); with a search (``q``,
    ``min_attempts``, ``max_attempts``, ``since``, ``until``), the messages
    that match, from a scan of at most SEARCH_BUDGET messages a page."""
    queues = get_queues()
    existing_topic(queues, topic)
    every = poll_interval(request)
    state, after, limit = _browse_params(request)
    try:
        flt = Filter.from_params(request.GET, state)
    except FilterError as exc:
        raise BadParameter(str(exc)) from None
    stats = build_stats(queues)
    row = stats["topics"].get(topic)
    if row is None:  # purged and gone between the two reads
        raise NotFound(f"no topic {topic!r}")
    search: Scan | None = None
    if flt.active:
        search = scan(queues, topic, flt, after, limit, SEARCH_BUDGET)
        page, more = search.rows, not search.exhausted
        next_after = search.last_id
    else:
        found = queues.messages(topic, state=state, after=after, limit=limit + 1)
        page, more = found[:limit], len(found) > limit
        next_after = page[-1].id if page else None
    base = reverse("dqadmin:topic", args=[topic])
    query = {"state": state or "all", "limit": limit, "every": every, **flt.params}

    def link(**changes: Any) -> str:
        params = {**query, **changes}
        return f"{base}?{urlencode({k: v for k, v in params.items() if v is not None})}"

    in_state = sum(int(row.get(s, 0)) for s in ([state] if state else ["ready", "delayed", "in_progress", "failed"]))

    context = {
        "topic": topic,
        "row": row,
        "stats": stats,
        "chart": chart(history_for(queues.location).series(topic, stats["generated_at"])),
        "rows": page,
        "state": state or "all",
        "states": ["all", *STATES],
        "after": after,
        "limit": limit,
        "next_url": link(after=next_after) if more and next_after else None,
        "search": search,
        "filter": flt,
        "in_state": in_state,
        "bulk_query": urlencode({"state": state or "all", **flt.params}),
        "first_url": link(after=None) if after else None,
        "self_url": link(after=after),
        "state_urls": {s: link(state=s, after=None) for s in ["all", *STATES]},
        "clear_url": f"{base}?{urlencode({'state': state or 'all'})}",
        "every": every,
        "intervals": INTERVALS,
        "trigger": poll_trigger(every),
        "table_trigger": poll_trigger(every, "!document.querySelector('#messages input.pick:checked')"),
        "can_act": can_act(request),
        "now": stats["generated_at"],
        "visibility_timeout": queues.options.get("visibility_timeout"),
        "timing_chart": _timing_chart(stats, topic),
    }
    if request.htmx:
        if request.htmx.target == "messages":
            return render(request, "dqadmin/_messages.html", context)
        return render(request, "dqadmin/_topic_live.html", context)
    return render(request, "dqadmin/topic.html", context)


def _timing_chart(stats: dict[str, Any], topic: str, width: int = 600, height: int = 90) -> dict[str, Any] | None:
    """SVG points of the p95 handler time and queue wait per minute, the last
    ten minutes, from the live consumers' heartbeats; None without data."""
    beats = [b for b in stats["consumers"] if b.get("alive")]
    now = stats["generated_at"]
    series = {kind: per_minute(beats, topic, kind, now) for kind in KINDS}
    values = {kind: [h.quantile(0.95) for _, h in rows] for kind, rows in series.items()}
    top = max([v for vs in values.values() for v in vs if v is not None] + [0.0])
    if top <= 0:
        return None
    step = width / max(1, len(values["handler"]) - 1)
    pad = 4

    def points(vs: list[float | None]) -> str:
        return " ".join(
            f"{i * step:.1f},{height - pad - (height - 2 * pad) * v / top:.1f}" for i, v in enumerate(vs) if v is not None
        )

    return {"width": width, "height": height, "max": top, "handler": points(values["handler"]),
            "wait": points(values["wait"])}


# -- message ------------------------------------------------------------------


def hexdump(data: bytes) -> Iterator[tuple[str, str, str]]:
    """``(offset, hex, text)`` lines of 16 bytes, like ``hexdump -C``."""
    for start in range(0, len(data), 16):
        chunk = data[start : start + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        if len(chunk) > 8:
            hexes = hexes[:23] + " " + hexes[23:]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        yield f"{start:08x}", hexes, text


@dashboard_view()
@require_GET
def message(request: HtmxHttpRequest, topic: str, message_id: str) -> HttpResponse:
    """One message: pretty value, hex, state, lease and errors; ``?full=1``
    shows a large payload whole."""
    queues = get_queues()
    existing_topic(queues, topic)
    mid = parse_message_id(message_id)
    full = request.GET.get("full") == "1"
    msg: Message = queues.peek(topic, mid)
    pretty = pretty_value(msg.value) if msg.decode_error is None else ""
    value_cut = not full and len(pretty) > PREVIEW_CHARS
    hex_limit = MAX_HEX_BYTES if full else PREVIEW_BYTES
    context = {
        "topic": topic,
        "msg": msg,
        "pretty": pretty[:PREVIEW_CHARS] if value_cut else pretty,
        "value_cut": value_cut,
        "pretty_chars": len(pretty),
        "hex": list(hexdump(msg.raw[:hex_limit])),
        "hex_cut": len(msg.raw) > hex_limit,
        "hex_shown": min(len(msg.raw), hex_limit),
        "full": full,
        "errors": [_error_view(e) for e in reversed(msg.errors)],
        "producer": identity.label(msg.origin),
        "can_act": can_act(request),
        "now": time.time(),
        "visibility_timeout": queues.options.get("visibility_timeout"),
        "full_url": f"{reverse('dqadmin:message', args=[topic, mid])}?full=1",
        "task": _task_of(queues, topic, msg),
        "timeline": _timeline(topic, msg, queues.options.get("visibility_timeout")),
    }
    return render(request, "dqadmin/message.html", context)


def _timeline(topic: str, msg: Message, visibility_timeout: float | None) -> list[dict[str, Any]]:
    """What happened to a message, oldest first: its put (by which process),
    each delivery that did not complete as the engine kept it (the last
    MAX_ERRORS_KEPT: which process took it, when, how long its handler ran,
    how it ended and why), its current delivery, and each operator action
    on it from the audit log."""
    producer = identity.label(msg.origin)
    events: list[dict[str, Any]] = [{"at": msg.enqueued_at, "what": "enqueued",
                                     "detail": f"by {producer}" if producer else ""}]
    kept: set[int] = set()
    for e in msg.errors:
        at = e.get("at")
        if not isinstance(at, (int, float)):
            continue
        attempt = e.get("attempt", "?")
        if isinstance(attempt, int):
            kept.add(attempt)
        reason = str(e.get("reason") or "").strip().splitlines()
        first_line = reason[0][:200] if reason else ""
        by = identity.label(e.get("by"))
        outcome = e.get("outcome")
        taken = e.get("taken_at")
        ran = e.get("ran")
        if outcome in ("retry", "fail"):
            ended = "retried" if outcome == "retry" else "failed"
            took = f" after {_seconds(ran)}" if isinstance(ran, (int, float)) else ""
            events.append({"at": float(taken) if isinstance(taken, (int, float)) else float(at),
                           "what": f"delivery {attempt}{f' to {by}' if by else ''}: {ended}{took}",
                           "detail": first_line, "delivery": True})
        elif outcome == "lost":
            events.append({"at": float(at), "what": f"delivery {attempt}{f' to {by}' if by else ''}: lease lost",
                           "detail": first_line, "delivery": True})
        else:  # kept before deliveries were named
            events.append({"at": float(at), "what": f"attempt {attempt} ended", "detail": first_line})
    current = msg.attempts if msg.lease is not None or msg.state == "completed" else None
    unrecorded = [n for n in range(1, msg.attempts + 1) if n not in kept and n != current]
    if unrecorded:
        n = len(unrecorded)
        events.append({"at": msg.enqueued_at, "what": f"{n} deliver{'y' if n == 1 else 'ies'} without a record",
                       "detail": f"a message keeps its last {MAX_ERRORS_KEPT} deliveries that did not "
                                 "complete; a retry without a reason leaves none"})
    if msg.lease is not None:
        # Placed at its last extension when the backend keeps it (and named),
        # else at its take as the lease tells it (deadline less the topic's
        # visibility timeout), never before what came before it nor in the future.
        extended, now = msg.lease.extended_at, time.time()
        since = extended if extended is not None else (
            msg.lease.deadline - float(visibility_timeout) if visibility_timeout else now)
        detail = f"lease until {_utc(msg.lease.deadline)}"
        if extended is not None:
            detail = f"lease extended at {_utc(extended)}, until {_utc(msg.lease.deadline)}"
        events.append({"at": min(max(since, *(e["at"] for e in events)), now),
                       "what": f"delivery {msg.attempts} to {msg.lease.owner}: running",
                       "detail": detail, "delivery": True})
    if msg.state == "completed":
        # The engine keeps no record of the delivery that completed it (slab
        # files mark its entry done in place): the outcome, not when or who.
        events.append({"at": max(e["at"] for e in events), "what": f"delivery {msg.attempts}: completed",
                       "detail": "when and by which process is not kept", "delivery": True})
    for entry in audit.for_message(topic, msg.id):
        events.append({"at": entry.at.timestamp(), "what": f"{entry.action.replace('_', ' ')} by {entry.user}",
                       "detail": entry.detail, "source": entry.source})
    return sorted(events, key=lambda e: e["at"])


def _utc(at: float) -> str:
    return f"{dt.datetime.fromtimestamp(at, dt.UTC):%H:%M:%S} UTC"


_ENDED = {"retry": "retried", "fail": "failed", "lost": "lease lost"}


def _error_view(e: dict[str, Any]) -> dict[str, Any]:
    """One kept delivery for the errors panel: how it ended, who had it, how long it ran."""
    ran = e.get("ran")
    return {**e, "ended": _ENDED.get(str(e.get("outcome")), ""), "by_label": identity.label(e.get("by")),
            "ran_label": _seconds(float(ran)) if isinstance(ran, (int, float)) else ""}


def _seconds(value: float) -> str:
    """A handler's run time for people: 850 ms, 2.4 s, 3 min 20 s."""
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    return f"{int(value // 60)} min {int(value % 60)} s"


def _task_of(queues: Queues, topic: str, msg: Message) -> dict[str, Any] | None:
    """A task message as a task: name, arguments, status, result."""
    if msg.decode_error is not None or not is_envelope(msg.value):
        return None
    result_id = result_id_for(topic, msg.id, msg.value)
    info = task_info(queues, results_store(queues), result_id)
    if info is None:  # a completed task whose result expired, or a malformed envelope
        env = msg.value
        info = {"id": result_id, "task": str(env.get("task")), "queue": str(env.get("queue", "")),
                "args": env.get("args", []), "kwargs": env.get("kwargs", {}), "status": "",
                "worker_ids": [], "errors": []}
    info.setdefault("topic", topic)
    info.setdefault("message_id", msg.id)
    return task_panel(info)


@dashboard_view()
@require_GET
def message_raw(request: HtmxHttpRequest, topic: str, message_id: str) -> HttpResponse:
    """The stored bytes of one message, as a download."""
    queues = get_queues()
    existing_topic(queues, topic)
    msg = queues.peek(topic, parse_message_id(message_id))
    response = HttpResponse(msg.raw, content_type="application/octet-stream")
    response["Content-Disposition"] = f'attachment; filename="{topic}-{msg.id}.bin"'
    response["X-Content-Type-Options"] = "nosniff"
    return response
