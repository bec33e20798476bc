"""Searching a topic's messages: a filter from GET parameters and a scan
bounded by a budget, in id order with keyset paging.

A search never reads more than ``budget`` messages for one request; it
says how far it got (the last id it looked at), and the next request goes
on from there. The bulk actions scan the same way, with a larger budget.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from queuecore import Message, Queues
from queuecore.defaults import STATES

# Messages one page of search results reads at most.
SEARCH_BUDGET = 100_000
# Messages a bulk action (its dry run and the act) reads at most.
BULK_BUDGET = 1_000_000
# Messages read per call to the backend.
BATCH = 500
# Longest search text.
MAX_QUERY = 200

_RELATIVE = re.compile(r"^(\d{1,7})\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class FilterError(ValueError):
    """A filter parameter that cannot be used (answered with 400)."""


def _time(raw: str, name: str, now: float) -> float:
    """A point in time: ``10m``/``2h``/``3d`` ago, or an ISO date or
    date-time (UTC unless it says otherwise)."""
    text = raw.strip()
    found = _RELATIVE.match(text)
    if found:
        return now - int(found[1]) * _UNITS[found[2]]
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(
            f"{name} must be a time like 2026-12-07T01:30 or an age like 10m, 2h, 3d, not {text[:40]!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _count(raw: str, name: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise FilterError(f"{name} must be a whole number, not {raw[:40]!r}")
    return int(raw)


@dataclass(frozen=True)
class Filter:
    """Which messages a search or a bulk action is about."""

    state: str | None = None  # None: every state but completed
    q: str = ""  # a substring of the value's JSON or of an error (any case)
    min_attempts: int | None = None
    max_attempts: int | None = None
    since: float | None = None  # enqueued at or after (unix seconds)
    until: float | None = None  # enqueued before
    # The GET parameters as given, to build links that keep the filter.
    params: dict[str, str] = field(default_factory=dict, compare=False)

    PARAMS = ("q", "min_attempts", "max_attempts", "since", "until")

    @classmethod
    def from_params(cls, data: Mapping[str, str], state: str | None = None, now: float | None = None) -> Filter:
        """The filter of a query string (``state`` is read by the caller)."""
        now = time.time() if now is None else now
        given = {k: str(data.get(k, "")).strip() for k in cls.PARAMS}
        given = {k: v for k, v in given.items() if v}
        if state is not None and state not in STATES:
            raise FilterError(f"state must be one of {', '.join(STATES)}, not {state!r}")
        q = given.get("q", "")
        if len(q) > MAX_QUERY:
            raise FilterError(f"the search text is longer than {MAX_QUERY} characters")
        low = _count(given["min_attempts"], "min_attempts") if "min_attempts" in given else None
        high = _count(given["max_attempts"], "max_attempts") if "max_attempts" in given else None
        since = _time(given["since"], "since", now) if "since" in given else None
        until = _time(given["until"], "until", now) if "until" in given else None
        return cls(state=state, q=q, min_attempts=low, max_attempts=high, since=since, until=until,
                   params=given)

    @property
    def active(self) -> bool:
        """Whether it narrows anything beyond the state."""
        return bool(self.params)

    def matches(self, msg: Message) -> bool:
        if self.state is not None and msg.state != self.state:
            return False
        if self.min_attempts is not None and msg.attempts < self.min_attempts:
            return False
        if self.max_attempts is not None and msg.attempts > self.max_attempts:
            return False
        if self.since is not None and msg.enqueued_at < self.since:
            return False
        if self.until is not None and msg.enqueued_at >= self.until:
            return False
        if self.q:
            return self.q.casefold() in searchable_text(msg).casefold()
        return True


def searchable_text(msg: Message) -> str:
    """What ``q`` is looked for in: the value as the dashboard shows it
    (JSON), or the raw bytes when undecodable, and every error's text."""
    if msg.decode_error is None:
        try:
            text = json.dumps(msg.value, ensure_ascii=False, default=repr)
        except (TypeError, ValueError):
            text = repr(msg.value)
    else:
        text = msg.raw.decode("utf-8", "replace")
    reasons = " ".join(str(e.get("reason", "")) + " " + str(e.get("traceback", "")) for e in msg.errors)
    return f"{text} {reasons}"


@dataclass
class Scan:
    """What one bounded scan found."""

    rows: list[Message]
    scanned: int  # messages read
    last_id: int | None  # the last id read (the next scan goes on after it)
    exhausted: bool  # the end of the topic was reached


def scan(
    queues: Queues, topic: str, flt: Filter, after: int | None, limit: int | None, budget: int
) -> Scan:
    """Messages of ``topic`` after ``after`` that match ``flt``, in id order:
    at most ``limit`` (None: all), reading at most ``budget`` messages."""
    rows: list[Message] = []
    scanned, last = 0, after
    for msg in _read(queues, topic, flt.state, after, budget):
        scanned += 1
        last = msg.id
        if flt.matches(msg):
            rows.append(msg)
            if limit is not None and len(rows) >= limit:
                return Scan(rows, scanned, last, False)  # stopped at a match: the end is not known
    return Scan(rows, scanned, last, scanned < budget or _at_end(queues, topic, flt.state, last))


def _read(queues: Queues, topic: str, state: str | None, after: int | None, budget: int) -> Iterator[Message]:
    """Up to ``budget`` messages after ``after``, in id order, read in batches."""
    cursor, left = after, budget
    while left > 0:
        want = min(BATCH, left)
        batch = queues.messages(topic, state, after=cursor, limit=want)
        yield from batch
        if len(batch) < want:
            return
        cursor, left = batch[-1].id, left - len(batch)


def _at_end(queues: Queues, topic: str, state: str | None, last: int | None) -> bool:
    return not queues.messages(topic, state, after=last, limit=1)


def matching(queues: Queues, topic: str, flt: Filter, budget: int = BULK_BUDGET) -> Iterator[Message]:
    """Every message that matches, in id order, reading at most ``budget``;
    FilterError at the end when there was more to read than that (the
    dry run of a bulk action shows it before anything is changed)."""
    scanned, last = 0, None
    for msg in _read(queues, topic, flt.state, None, budget):
        scanned, last = scanned + 1, msg.id
        if flt.matches(msg):
            yield msg
    if scanned >= budget and not _at_end(queues, topic, flt.state, last):
        raise FilterError(
            f"more than {budget:,} messages to look through: narrow the filter (a state, a time range)"
        )
