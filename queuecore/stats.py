"""The one function that builds dq's statistics, and their text table.

The dashboard's overview page and its htmx fragment, ``api/stats`` (JSON),
``metrics`` (Prometheus), ``manage.py dqstats`` and ``dq stats`` all render
what :func:`build_stats` returns, so they can never disagree. It reads the
queue only; it writes nothing, and it imports nothing from Django.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any, Protocol

from queuecore import timings
from queuecore.backend import public_location
from queuecore.queues import Queues

# A consumer whose last heartbeat is older than this (seconds) is shown as gone.
CONSUMER_TIMEOUT = 15.0

# Columns of the text table, after the topic's name.
COLUMNS = ("ready", "delayed", "in_progress", "failed", "enqueued", "completed", "retried", "consumers")


class RateHistory(Protocol):
    """Samples of counter totals over time, from which rates come
    (``dqadmin.history.History`` in a web process)."""

    def rates(
        self, now: float, totals: dict[str, tuple[int, int]]
    ) -> dict[str, tuple[float, float] | None]: ...

    def record(self, at: float, totals: dict[str, tuple[int, int]]) -> None: ...


def build_stats(
    queues: Queues,
    now: float | None = None,
    *,
    consumer_timeout: float = CONSUMER_TIMEOUT,
    history: RateHistory | None = None,
) -> dict[str, Any]:
    """Counters per topic, storage facts and the consumers' heartbeats.

    >>> from queuecore import Queues
    >>> qs = Queues("memory://stats-doctest")
    >>> _ = qs.put("q1", "x")
    >>> s = build_stats(qs)
    >>> s["topics"]["q1"]["ready"], s["totals"]["enqueued"], s["backend"]
    (1, 1, 'memory')

    Its cost grows with the number of topics, not messages. With a
    ``history``, each call also records the totals there, and the in and out
    rates (messages per second: enqueued and completed) come from it; a rate
    is None without a history or until a sample a second old exists.
    """
    now = time.time() if now is None else now
    backend = queues.backend
    consumers = []
    for beat in backend.heartbeats():
        beat = dict(beat)
        beat["alive"] = now - float(beat.get("last_beat", 0)) <= consumer_timeout
        consumers.append(beat)
    consumers.sort(key=lambda b: (not b["alive"], str(b.get("host")), int(b.get("pid", 0))))
    # A consumer whose liveness record lapsed (Redis: stalled past
    # owner_timeout) lost its leases even if its heartbeat still looks fresh.
    lapsed = backend.lapsed_owners(sorted({t for b in consumers for t in b.get("topics") or []}))
    for beat in consumers:
        beat["liveness_lapsed"] = bool(beat.get("owner")) and beat.get("owner") in lapsed
    live_topics: set[str] = set()
    for beat in consumers:
        if beat["alive"]:
            live_topics.update(beat.get("topics") or [])

    paused = backend.paused_topics()
    topics: dict[str, dict[str, Any]] = {}
    totals: dict[str, int] = {}
    storage: dict[str, Any] = {"bytes": 0, "dropped": 0, "num_slabs": 0}
    for name, counts in queues.stats().items():
        info = queues.info(name)
        oldest = info.get("oldest_ready_at")
        row: dict[str, Any] = dict(counts)
        row["bytes"] = int(info.get("bytes", 0))
        row["dropped"] = int(info.get("dropped", 0))
        row["oldest_ready_age"] = max(0.0, now - oldest) if oldest else None
        row["consumers"] = sum(1 for b in consumers if b["alive"] and name in (b.get("topics") or []))
        row["paused"] = name in paused
        row["timings"] = timings.summary([b for b in consumers if b["alive"]], name, now)
        # A paused topic's backlog waits for a resume, not for a consumer.
        row["backlog_without_consumer"] = bool(counts["ready"]) and name not in live_topics and not row["paused"]
        topics[name] = row
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + int(value)
        storage["bytes"] += row["bytes"]
        storage["dropped"] += row["dropped"]
        storage["num_slabs"] += int(counts.get("num_slabs", 0))

    sampled = {name: (int(row["enqueued"]), int(row["completed"])) for name, row in topics.items()}
    rates: dict[str, tuple[float, float] | None] = {}
    if history is not None:
        rates = history.rates(now, sampled)
        history.record(now, sampled)
    known = [r for r in rates.values() if r is not None]
    for name, row in topics.items():
        rate = rates.get(name)
        row["in_rate"] = rate[0] if rate else None
        row["out_rate"] = rate[1] if rate else None
    total_rates = {
        "in": sum(r[0] for r in known) if known else None,
        "out": sum(r[1] for r in known) if known else None,
    }

    location = queues.location
    if "://" not in location or location.startswith("file://"):
        path = location.removeprefix("file://")
        try:
            usage = shutil.disk_usage(path if os.path.exists(path) else os.path.dirname(os.path.abspath(path)))
            storage["free"], storage["total"] = usage.free, usage.total
        except OSError:
            storage["free"] = storage["total"] = None
    return {
        "generated_at": now,
        "backend": backend.name,
        "location": public_location(location),
        "topics": topics,
        "totals": totals,
        "rates": total_rates,
        "storage": storage,
        "consumers": consumers,
    }


def format_size(n: int | None) -> str:
    """Bytes for people: ``format_size(1536)`` is ``'1.5 KiB'``.

    >>> format_size(512), format_size(1536), format_size(None)
    ('512 B', '1.5 KiB', '?')
    """
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return lines


def stats_lines(stats: dict[str, Any]) -> list[str]:
    """:func:`build_stats` as the lines of ``dqstats`` and ``dq stats``: a
    table of topics, the storage, and one line per consumer process."""
    lines = [f"{stats['location']} ({stats['backend']})"]
    topics: dict[str, dict[str, Any]] = stats["topics"]
    if not topics:
        lines.append("No topics yet.")
    else:
        rows = [["topic", *COLUMNS]]
        for name, row in sorted(topics.items()):
            rows.append([name, *(str(row.get(c, 0)) for c in COLUMNS)])
        totals = stats["totals"]
        rows.append(["total", *(str(totals.get(c, "")) for c in COLUMNS[:-1]), ""])
        lines.extend(_table(rows))
    storage = stats["storage"]
    line = f"Storage: {format_size(storage.get('bytes'))} in {storage.get('num_slabs', 0)} slabs"
    if storage.get("free") is not None:
        line += f", {format_size(storage['free'])} free"
    if storage.get("dropped"):
        line += f", {storage['dropped']} entries dropped by recovery"
    lines.append(line)
    consumers = stats["consumers"]
    if not consumers:
        lines.append("Consumers: none")
        return lines
    lines.append("Consumers:")
    now = stats["generated_at"]
    for beat in consumers:
        ago = now - float(beat.get("last_beat", 0))
        state = "alive" if beat.get("alive") else "gone"
        started = beat.get("started")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
        lines.append(
            f"  {beat.get('host')}:{beat.get('pid')}  {state} (beat {ago:.0f} s ago)  "
            f"topics {', '.join(beat.get('topics') or [])}  "
            f"handled {beat.get('handled', 0)}  failed {beat.get('failed', 0)}  since {since}"
        )
    return lines
