"""How long work takes: histograms of handler run times and of the time
messages waited in the queue, per topic, shared across processes.

A consumer process (``dqadmin.runner``) observes each handled message into
a :class:`Timings`; its heartbeat carries :meth:`Timings.snapshot` (totals
since the process started, and one histogram per minute for the last
``MINUTES`` minutes), so whoever reads the heartbeats (the dashboard,
``/metrics``) sees the whole fleet. Buckets are fixed, so histograms of
several processes add up, and quantiles come from the merged buckets.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import deque
from typing import Any

# Upper bounds of the buckets, in seconds (Prometheus' le); one more bucket
# counts what is above the last.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
           300.0, 1800.0)
# Minutes of per-minute histograms a process keeps (and its heartbeat carries).
MINUTES = 10
KINDS = ("handler", "wait")


class Histogram:
    """Counts per bucket (the last one: above every bound), and their sum.

    >>> h = Histogram()
    >>> for v in (0.002, 0.003, 0.2, 4.0): h.observe(v)
    >>> h.count, round(h.sum, 3), h.quantile(0.5) <= 0.1 < h.quantile(0.99)
    (4, 4.205, True)
    """

    __slots__ = ("counts", "sum")

    def __init__(self, counts: list[int] | None = None, total: float = 0.0) -> None:
        self.counts = list(counts) if counts is not None else [0] * (len(BUCKETS) + 1)
        self.sum = float(total)

    @property
    def count(self) -> int:
        return sum(self.counts)

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, float(seconds))
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds

    def add(self, other: Histogram) -> None:
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        self.sum += other.sum

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile, linear within its bucket; None when empty.
        Above the last bound it is reported as that bound."""
        total = self.count
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for i, n in enumerate(self.counts):
            if n and seen + n >= rank:
                low = BUCKETS[i - 1] if i > 0 else 0.0
                high = BUCKETS[i] if i < len(BUCKETS) else BUCKETS[-1]
                return low + (high - low) * max(0.0, min(1.0, (rank - seen) / n))
            seen += n
        return BUCKETS[-1]

    def to_json(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum": self.sum}

    @classmethod
    def from_json(cls, data: Any) -> Histogram | None:
        """A histogram read back from a heartbeat; None if it is not one."""
        if not isinstance(data, dict):
            return None
        counts, total = data.get("counts"), data.get("sum", 0.0)
        if (not isinstance(counts, list) or len(counts) != len(BUCKETS) + 1
                or not all(isinstance(n, int) and n >= 0 for n in counts)):
            return None
        if not isinstance(total, (int, float)) or not math.isfinite(total):
            return None
        return cls(counts, total)


class Timings:
    """One process's histograms, by topic and kind; thread-safe."""

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, str], Histogram] = {}
        # (topic, kind) -> minutes, oldest first: (minute start, histogram)
        self._minutes: dict[tuple[str, str], deque[tuple[int, Histogram]]] = {}

    def observe(self, topic: str, kind: str, seconds: float) -> None:
        minute = int(self._clock() // 60 * 60)
        with self._lock:
            key = (topic, kind)
            self._totals.setdefault(key, Histogram()).observe(seconds)
            ring = self._minutes.setdefault(key, deque(maxlen=MINUTES))
            if not ring or ring[-1][0] != minute:
                ring.append((minute, Histogram()))
            ring[-1][1].observe(seconds)

    def snapshot(self) -> dict[str, Any]:
        """``{topic: {kind: {"total": hist, "minutes": [[start, hist], ...]}}}``
        as JSON, for a heartbeat."""
        out: dict[str, Any] = {}
        with self._lock:
            for (topic, kind), total in self._totals.items():
                out.setdefault(topic, {})[kind] = {
                    "total": total.to_json(),
                    "minutes": [[start, h.to_json()] for start, h in self._minutes.get((topic, kind), ())],
                }
        return out


def _parts(beats: list[dict[str, Any]], topic: str, kind: str) -> list[dict[str, Any]]:
    found = []
    for beat in beats:
        entry = (beat.get("timings") or {}).get(topic, {}).get(kind) if isinstance(beat.get("timings"), dict) else None
        if isinstance(entry, dict):
            found.append(entry)
    return found


def merged(beats: list[dict[str, Any]], topic: str, kind: str, since: float | None = None) -> Histogram:
    """The histogram of ``topic``/``kind`` over every heartbeat: the totals,
    or (``since``) the minutes that started at or after it."""
    out = Histogram()
    for entry in _parts(beats, topic, kind):
        if since is None:
            h = Histogram.from_json(entry.get("total"))
            if h is not None:
                out.add(h)
            continue
        for item in entry.get("minutes") or []:
            if isinstance(item, list) and len(item) == 2 and isinstance(item[0], (int, float)) and item[0] >= since:
                h = Histogram.from_json(item[1])
                if h is not None:
                    out.add(h)
    return out


def per_minute(beats: list[dict[str, Any]], topic: str, kind: str, now: float,
               minutes: int = MINUTES) -> list[tuple[int, Histogram]]:
    """One merged histogram per minute, the last ``minutes`` ones, oldest first."""
    first = int(now // 60 * 60) - (minutes - 1) * 60
    slots = {first + 60 * i: Histogram() for i in range(minutes)}
    for entry in _parts(beats, topic, kind):
        for item in entry.get("minutes") or []:
            if isinstance(item, list) and len(item) == 2 and item[0] in slots:
                h = Histogram.from_json(item[1])
                if h is not None:
                    slots[item[0]].add(h)
    return sorted(slots.items())


def summary(beats: list[dict[str, Any]], topic: str, now: float, window: float = 300.0) -> dict[str, Any]:
    """p50, p95, p99 and count of each kind over the last ``window`` seconds."""
    since = (now - window) // 60 * 60
    out: dict[str, Any] = {}
    for kind in KINDS:
        h = merged(beats, topic, kind, since)
        out[kind] = {
            "count": h.count,
            "p50": h.quantile(0.5),
            "p95": h.quantile(0.95),
            "p99": h.quantile(0.99),
        }
    return out
