"""The one function that builds dq's statistics.

The overview page, its htmx fragment, ``api/stats`` (JSON), ``metrics``
(Prometheus) and ``manage.py dqstats`` all render what :func:`build_stats`
returns, so they can never disagree.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from dqadmin.conf import conf
from dqadmin.history import history_for
from queuecore import Queues
from queuecore.backend import public_location


def build_stats(queues: Queues, now: float | None = None) -> dict[str, Any]:
    """Counters per topic, storage facts and the consumers' heartbeats.

    Its cost grows with the number of topics, not messages. Each call also
    records the totals in this process's history (:mod:`dqadmin.history`),
    from which the in and out rates (messages per second: enqueued and
    completed) come; a rate is None until a sample a second old exists.
    """
    now = time.time() if now is None else now
    backend = queues.backend
    consumers = []
    for beat in backend.heartbeats():
        beat = dict(beat)
        beat["alive"] = now - float(beat.get("last_beat", 0)) <= conf.CONSUMER_TIMEOUT
        consumers.append(beat)
    consumers.sort(key=lambda b: (not b["alive"], str(b.get("host")), int(b.get("pid", 0))))
    live_topics: set[str] = set()
    for beat in consumers:
        if beat["alive"]:
            live_topics.update(beat.get("topics") or [])

    topics: dict[str, dict[str, Any]] = {}
    totals: dict[str, int] = {}
    storage = {"bytes": 0, "dropped": 0, "num_slabs": 0}
    for name, counts in queues.stats().items():
        info = queues.info(name)
        oldest = info.get("oldest_ready_at")
        row: dict[str, Any] = dict(counts)
        row["bytes"] = int(info.get("bytes", 0))
        row["dropped"] = int(info.get("dropped", 0))
        row["oldest_ready_age"] = max(0.0, now - oldest) if oldest else None
        row["consumers"] = sum(1 for b in consumers if b["alive"] and name in (b.get("topics") or []))
        row["backlog_without_consumer"] = bool(counts["ready"]) and name not in live_topics
        topics[name] = row
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + int(value)
        storage["bytes"] += row["bytes"]
        storage["dropped"] += row["dropped"]
        storage["num_slabs"] += int(counts.get("num_slabs", 0))

    location = queues.location
    history = history_for(location)
    sampled = {name: (int(row["enqueued"]), int(row["completed"])) for name, row in topics.items()}
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
