"""Prometheus text exposition (format 0.0.4) of :func:`dqadmin.stats.build_stats`."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from queuecore import timings

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Gauges: what a topic holds now, one series per state.
_STATES = ("ready", "delayed", "in_progress", "failed")
# Counters: totals since each topic was created (persistent, shared by every process).
_COUNTERS = (
    ("enqueued", "dq_enqueued_total", "Messages put on the topic since it was created."),
    ("completed", "dq_completed_total", "Messages completed since the topic was created."),
    ("retried", "dq_retried_total", "Deliveries retried since the topic was created."),
)


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _family(name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, Any], Any]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        try:
            number = _number(value)
        except (TypeError, ValueError):  # None, or a heartbeat field that is not a number
            continue
        text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{text}}} {number}" if text else f"{name} {number}")
    return lines


def render(stats: dict[str, Any]) -> str:
    """The metrics page for one ``build_stats`` result."""
    topics: dict[str, dict[str, Any]] = stats["topics"]
    lines: list[str] = []
    lines += _family(
        "dq_messages",
        "gauge",
        "Messages in the topic now, by state.",
        (({"topic": t, "state": s}, row.get(s, 0)) for t, row in topics.items() for s in _STATES),
    )
    for key, name, help_text in _COUNTERS:
        lines += _family(name, "counter", help_text, (({"topic": t}, row.get(key, 0)) for t, row in topics.items()))
    lines += _family(
        "dq_oldest_ready_age_seconds",
        "gauge",
        "Age of the oldest ready message (absent when none is ready).",
        (({"topic": t}, row.get("oldest_ready_age")) for t, row in topics.items()),
    )
    lines += _family(
        "dq_consumers",
        "gauge",
        "Live consumer processes taking from the topic.",
        (({"topic": t}, row.get("consumers", 0)) for t, row in topics.items()),
    )
    lines += _family(
        "dq_storage_bytes",
        "gauge",
        "Bytes the topic's files take on disk.",
        (({"topic": t}, row.get("bytes", 0)) for t, row in topics.items()),
    )
    lines += _family(
        "dq_slabs",
        "gauge",
        "Slab files of the topic.",
        (({"topic": t}, row.get("num_slabs", 0)) for t, row in topics.items()),
    )
    lines += _family(
        "dq_recovery_dropped_entries",
        "gauge",
        "Entries dropped by recovery when the topic was opened.",
        (({"topic": t}, row.get("dropped", 0)) for t, row in topics.items()),
    )
    storage = stats.get("storage", {})
    lines += _family(
        "dq_disk_free_bytes",
        "gauge",
        "Free bytes on the disk holding the queues.",
        [({}, storage.get("free"))],
    )
    consumers = stats.get("consumers", [])
    lines += _family(
        "dq_consumer_up",
        "gauge",
        "1 when the consumer process sent a heartbeat recently, else 0.",
        (({"host": c.get("host", ""), "pid": c.get("pid", "")}, bool(c.get("alive"))) for c in consumers),
    )
    lines += _family(
        "dq_consumer_handled_total",
        "counter",
        "Messages a consumer process handled since it started.",
        (({"host": c.get("host", ""), "pid": c.get("pid", "")}, c.get("handled", 0)) for c in consumers),
    )
    lines += _family(
        "dq_consumer_failed_total",
        "counter",
        "Messages a consumer process failed since it started.",
        (({"host": c.get("host", ""), "pid": c.get("pid", "")}, c.get("failed", 0)) for c in consumers),
    )
    lines += _histograms(consumers)
    return "\n".join(lines) + "\n"


_HISTOGRAMS = (
    ("handler", "dq_handler_duration_seconds", "Run time of consumer handlers, since each process started."),
    ("wait", "dq_queue_wait_seconds", "Time messages waited to be taken, from their put or their due time (delayed, retried)."),
)


def _histograms(consumers: list[dict[str, Any]]) -> list[str]:
    """Each live consumer process's histograms, one series per topic and
    process (a process's counts restart with it, as Prometheus expects)."""
    lines: list[str] = []
    for kind, name, help_text in _HISTOGRAMS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for c in consumers:
            if not c.get("alive"):
                continue
            for topic in sorted(c.get("timings") or {}):
                h = timings.Histogram.from_json(((c["timings"].get(topic) or {}).get(kind) or {}).get("total"))
                if h is None:
                    continue
                labels = f'topic="{_label(topic)}",host="{_label(c.get("host", ""))}",pid="{_label(c.get("pid", ""))}"'
                running = 0
                for bound, n in zip((*timings.BUCKETS, math.inf), h.counts, strict=True):
                    running += n
                    le = "+Inf" if bound == math.inf else repr(bound)
                    lines.append(f'{name}_bucket{{{labels},le="{le}"}} {running}')
                lines.append(f"{name}_sum{{{labels}}} {repr(h.sum)}")
                lines.append(f"{name}_count{{{labels}}} {running}")
    return lines
