"""Template filters of the dashboard: durations, rates and unix times."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django import template

register = template.Library()


@register.filter
def duration(seconds: Any) -> str:
    """``75.2`` -> ``"1m 15s"``; None -> ``"–"``."""
    if seconds is None or seconds == "":
        return "–"
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return "–"
    if s < 0:
        return "–"
    if s < 10:
        return f"{s:.1f}s"
    total = int(s)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


@register.filter
def rate(value: Any) -> str:
    """Messages per second, compact: ``"12.5/s"``; None -> ``"–"``."""
    if value is None:
        return "–"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    if v == 0:
        return "0/s"
    if v < 10:
        return f"{v:.1f}/s"
    return f"{v:,.0f}/s"


@register.filter
def unixtime(value: Any) -> dt.datetime | None:
    """A unix time as an aware datetime (for Django's ``date`` filter)."""
    try:
        return dt.datetime.fromtimestamp(float(value), tz=dt.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


@register.filter
def ago(value: Any, now: Any) -> float | None:
    """Seconds from the unix time ``value`` to ``now`` (None if unknown)."""
    try:
        return float(now) - float(value)
    except (TypeError, ValueError):
        return None


@register.filter
def percent(done: Any, total: Any) -> int:
    try:
        d, t = float(done), float(total)
    except (TypeError, ValueError):
        return 0
    return 100 if t <= 0 else max(0, min(100, int(100 * d / t)))


@register.filter
def get_item(mapping: Any, key: Any) -> Any:
    """``mapping[key]`` in a template (None when absent)."""
    try:
        return mapping.get(key)
    except AttributeError:
        return None


@register.filter
def until(value: Any, now: Any) -> float | None:
    """Seconds from ``now`` to the unix time ``value`` (None if unknown)."""
    try:
        return float(value) - float(now)
    except (TypeError, ValueError):
        return None


@register.filter
def words(value: Any) -> str:
    """``"in_progress"`` -> ``"in progress"``."""
    return str(value).replace("_", " ")


@register.filter
def compact(value: Any, limit: int = 100) -> str:
    """A value as one line of JSON, cut to ``limit`` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@register.filter
def seconds(value: Any) -> str:
    """A short duration for timings: ``0.0042`` -> ``4.2 ms``; None -> ``–``."""
    if value is None:
        return "–"
    v = float(value)
    if v < 1:
        return f"{v * 1000:.1f} ms" if v < 0.1 else f"{v * 1000:.0f} ms"
    return f"{v:.2f} s" if v < 10 else f"{v:.0f} s"


@register.filter
def renewed(lease: Any, visibility_timeout: Any) -> float | None:
    """When a lease was last taken or extended: the backend's record of it
    (Redis), else its deadline less the visibility timeout (what a take and
    ``runconsumers``' keep-alive set it to)."""
    if lease is None:
        return None
    if getattr(lease, "extended_at", None):
        return float(lease.extended_at)
    try:
        return float(lease.deadline) - float(visibility_timeout)
    except (TypeError, ValueError):
        return None


@register.filter
def preview(value: Any, limit: int = 100) -> str:
    """A message value in a table cell: a task as ``name(args, key=value)``,
    anything else as :func:`compact` JSON; cut to ``limit`` characters."""
    from dqadmin.tasks.state import is_envelope

    if not is_envelope(value):
        return compact(value, limit)
    return task_call(value, limit)


@register.filter
def task_call(info: Any, limit: int = 200) -> str:
    """``send_email("a@example.com", subject="hi")`` of a task message or a
    result record (its ``task``, ``args`` and ``kwargs``)."""

    def one(v: Any) -> str:
        return compact(v, 10_000)

    args = [one(a) for a in info.get("args") or []]
    args += [f"{k}={one(v)}" for k, v in (info.get("kwargs") or {}).items()]
    text = f"{str(info.get('task', '?')).rsplit('.', 1)[-1]}({', '.join(args)})"
    return text if len(text) <= limit else text[: limit - 1] + "…"


@register.simple_tag(takes_context=True)
def user_can_act(context: template.Context) -> bool:
    """Whether the request's user may act on the queues (staff with the
    ``dqadmin.change_queues`` permission), for the "read-only" badge."""
    from dqadmin.views import can_act

    request = context.get("request")
    return request is not None and can_act(request)
