"""A small in-process ring buffer of counter samples, for rates and charts.

Every :func:`dqadmin.stats.build_stats` call records the totals it read
(``enqueued`` and ``completed`` per topic) here, at most one sample a second
per queue location, and keeps the last ten minutes. Rates are differences
of those totals over time, so they are right whichever process put or took
the messages; only the sampling is per web process (a dashboard that nobody
watches records nothing, and its chart starts when someone opens it).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

# Seconds between two samples kept (closer calls share the last sample).
SAMPLE_EVERY = 1.0
# Samples kept per location: ten minutes at one a second.
MAX_SAMPLES = 600
# Rates shown as "now" are averaged over about this many seconds.
RATE_WINDOW = 10.0
# The chart shows this many seconds.
CHART_SPAN = 300.0


@dataclass(frozen=True)
class Sample:
    at: float
    # topic -> (enqueued, completed): totals since each topic was created.
    totals: dict[str, tuple[int, int]]


class History:
    """Samples of one queue location, oldest first."""

    def __init__(self, maxlen: int = MAX_SAMPLES) -> None:
        self._samples: deque[Sample] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def record(self, at: float, totals: dict[str, tuple[int, int]]) -> None:
        with self._lock:
            if self._samples and at - self._samples[-1].at < SAMPLE_EVERY:
                return
            if self._samples and at < self._samples[-1].at:
                self._samples.clear()  # the clock went back: start over
            self._samples.append(Sample(at, dict(totals)))

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    def rates(self, now: float, totals: dict[str, tuple[int, int]]) -> dict[str, tuple[float, float] | None]:
        """``topic -> (in per second, out per second)`` over the last
        ``RATE_WINDOW`` seconds, measured against ``totals`` read at ``now``;
        None for a topic with no sample old enough yet."""
        samples = self.samples()
        out: dict[str, tuple[float, float] | None] = {}
        for topic, (enq, done) in totals.items():
            base = None
            for sample in samples:  # the oldest sample inside the window
                if now - sample.at <= RATE_WINDOW and topic in sample.totals and now - sample.at >= 0.5:
                    base = sample
                    break
            if base is None:
                out[topic] = None
                continue
            dt = now - base.at
            enq0, done0 = base.totals[topic]
            out[topic] = (max(0, enq - enq0) / dt, max(0, done - done0) / dt)
        return out

    def series(self, topic: str | None, now: float, span: float = CHART_SPAN) -> list[tuple[float, float, float]]:
        """``(seconds before now, in/s, out/s)`` between consecutive samples
        of the last ``span`` seconds, for ``topic`` or (None) all topics."""
        points: list[tuple[float, float, float]] = []
        prev: Sample | None = None
        for sample in self.samples():
            if now - sample.at > span:
                prev = sample
                continue
            if prev is not None and sample.at > prev.at:
                dt = sample.at - prev.at
                enq = done = 0
                for name, (e, d) in sample.totals.items():
                    if topic is not None and name != topic:
                        continue
                    e0, d0 = prev.totals.get(name, (e, d))
                    enq += max(0, e - e0)
                    done += max(0, d - d0)
                points.append((now - sample.at, enq / dt, done / dt))
            prev = sample
        return points


_histories: dict[str, History] = {}
_lock = threading.Lock()


def history_for(location: str) -> History:
    """The History of one queue location (created on first use)."""
    with _lock:
        found = _histories.get(location)
        if found is None:
            found = _histories[location] = History()
        return found


def forget(location: str | None = None) -> None:
    """Drop the samples of one location, or of all (tests)."""
    with _lock:
        if location is None:
            _histories.clear()
        else:
            _histories.pop(location, None)


def chart(points: list[tuple[float, float, float]], span: float = CHART_SPAN,
          width: int = 600, height: int = 120) -> dict[str, Any]:
    """SVG coordinates for a throughput chart: two polylines (in, out) in a
    ``width`` x ``height`` box, time running left (``span`` ago) to right (now)."""
    top = max([p[1] for p in points] + [p[2] for p in points] + [0.0])
    scale = _nice(top)
    pad = 4

    def xy(ago: float, value: float) -> str:
        x = width * (1 - min(ago, span) / span)
        y = height - pad - (height - 2 * pad) * (value / scale)
        return f"{x:.1f},{y:.1f}"

    return {
        "width": width,
        "height": height,
        "max": scale,
        "span_minutes": int(span // 60),
        "in_points": " ".join(xy(ago, i) for ago, i, _ in points),
        "out_points": " ".join(xy(ago, o) for ago, _, o in points),
        "empty": len(points) < 2,
        "gridlines": [height - pad - (height - 2 * pad) * f for f in (0.5, 1.0)],
    }


def _nice(value: float) -> float:
    """The smallest of 1, 2, 5 x 10^n at least ``value`` (at least 1)."""
    step = 1.0
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10
