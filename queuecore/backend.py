"""The backend contract: a handful of primitives every storage implements.

:class:`~queuecore.Queues` validates names, encodes values and builds the
public API on these; a backend deals in topics, ids and bytes only. The
backends are ``slab`` (the embedded default), ``memory`` and ``redis``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit


@dataclass(frozen=True)
class Lease:
    """Who holds an in-progress message, and until when (unix seconds)."""

    owner: str
    deadline: float
    # When the holder last extended it (None: not since the take, or a
    # backend that does not keep it).
    extended_at: float | None = None


@dataclass(frozen=True)
class Record:
    """A stored message as a backend returns it: the payload still encoded."""

    id: int
    payload: bytes
    state: str
    attempts: int
    enqueued_at: float
    lease: Lease | None = None
    errors: tuple[dict[str, Any], ...] = ()
    not_before: float | None = None
    # The process that put it (queuecore.identity.current() there), if known.
    origin: dict[str, Any] | None = None


@dataclass
class Delivery:
    """One take: the message plus the backend's handle on this lease."""

    id: int
    payload: bytes
    attempts: int
    enqueued_at: float
    token: Any
    errors: tuple[dict[str, Any], ...] = field(default=())
    # Since when it was ready to take: its put, its due time (delayed, or a
    # retry with a delay), or when a retry, a requeue or a lost lease put
    # it back. None: the backend does not know (then its put).
    ready_at: float | None = None


# Why a lease ended without a settle, as lost_lease() records it.
LEASE_EXPIRED = "lease expired: not settled or extended within visibility_timeout"
OWNER_DIED = "the process holding it ended (exited, was killed, or closed its queues)"
OWNER_CLOSED = "the process holding it closed its queues"
OWNER_LAPSED = "the process holding it stopped renewing its liveness within owner_timeout"


def lost_lease(attempt: int, reason: str, by: str, at: float) -> dict[str, Any]:
    """The error a backend keeps with a message whose lease it took back."""
    return {"at": at, "attempt": attempt, "reason": reason, "outcome": "lost", "by": by}


class Backend:
    """Storage primitives. Methods raise ``NotImplementedError`` naming the
    contract; see ``queuecore.memory.MemoryBackend`` for the simplest one."""

    name = "base"

    def put(self, topic: str, payloads: list[bytes], timeout: float | None) -> list[int]:
        """Append the payloads as ready messages, all or none, and return their
        ids; each keeps ``queuecore.identity.current()`` as its origin. Waits up to ``timeout`` for room under ``max_queue_size`` (None:
        forever, 0: not at all), then raises QueueFull."""
        raise NotImplementedError("Backend.put(topic, payloads, timeout) -> list[int]")

    def take(self, topic: str, limit: int, timeout: float | None) -> list[Delivery]:
        """Lease up to ``limit`` ready messages, oldest first; wait up to
        ``timeout`` for the first one. An empty list when none came."""
        raise NotImplementedError("Backend.take(topic, limit, timeout) -> list[Delivery]")

    def settle(
        self,
        topic: str,
        token: Any,
        outcome: str,
        delay: float = 0.0,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """End a lease: ``outcome`` is "complete", "retry" (ready again after
        ``delay`` seconds) or "fail" (to the failed store). ``error`` is a
        dict with "reason" (and "traceback", and the delivery's "by",
        "taken_at", "ran"), kept with the message (the last MAX_ERRORS_KEPT).
        False when the lease was lost (expired, or its owner was found dead).

        A lease lost that way is kept with the message too, as an error
        with "outcome": "lost", the "reason" and (where the backend knows
        the owner) "by": the message's history names every delivery that
        did not complete."""
        raise NotImplementedError("Backend.settle(topic, token, outcome, delay, error) -> bool")

    def extend(self, topic: str, token: Any, seconds: float) -> bool:
        """Keep a lease: its deadline becomes ``seconds`` from now (the
        backend's clock), earlier or later. False when the lease was already
        lost (expired, its owner found dead, requeued or settled): the
        message may be with another taker, and this one must not settle it."""
        raise NotImplementedError("Backend.extend(topic, token, seconds) -> bool")

    def lapsed_owners(self, topics: list[str]) -> set[str]:
        """Lease owners (as ``Lease.owner`` and heartbeats name them) whose
        liveness lapsed lately in any of ``topics``, for the dashboard. Only
        a backend that declares stalled owners dead has any (Redis): on slab
        files the kernel tells only of dead ones."""
        return set()

    def settle_many(self, topic: str, tokens: list[Any], outcome: str) -> list[bool]:
        """settle() for several leases of one topic (a backend may do it in
        one lock or round trip); one bool per token."""
        return [self.settle(topic, token, outcome) for token in tokens]

    def topics(self) -> list[str]:
        raise NotImplementedError("Backend.topics() -> list[str]")

    def stats(self, topic: str) -> dict[str, int]:
        """The counters of queuecore.defaults.STATS_KEYS for one topic."""
        raise NotImplementedError("Backend.stats(topic) -> dict[str, int]")

    def info(self, topic: str) -> dict[str, Any]:
        """Storage facts for the dashboard: bytes, dropped, oldest_ready_at."""
        raise NotImplementedError("Backend.info(topic) -> dict")

    def messages(self, topic: str, state: str | None, after: int | None, limit: int) -> list[Record]:
        """Messages in ``state`` (None: every state but completed) with
        ``id > after``, in id order, at most ``limit``."""
        raise NotImplementedError("Backend.messages(topic, state, after, limit) -> list[Record]")

    def peek(self, topic: str, id: int) -> Record:
        """The message with this id, in whatever state; MessageNotFound."""
        raise NotImplementedError("Backend.peek(topic, id) -> Record")

    def restore(self, topic: str, records: list[Record]) -> list[int]:
        """Store messages read from another location as they were there
        (state ready, delayed or failed; attempts, enqueue time, due time,
        errors), under new ids, not limited by ``max_queue_size``. Used by
        ``manage.py dqmigrate``."""
        raise NotImplementedError("Backend.restore(topic, records) -> list[int]")

    def requeue(self, topic: str, id: int) -> None:
        """Make a delayed, in-progress or failed message ready now."""
        raise NotImplementedError("Backend.requeue(topic, id)")

    def requeue_failed(self, topic: str) -> int:
        raise NotImplementedError("Backend.requeue_failed(topic) -> int")

    def delete(self, topic: str, id: int) -> None:
        raise NotImplementedError("Backend.delete(topic, id)")

    def purge(self, topic: str, state: str | None) -> int:
        """state None: ready and delayed; "failed": the failed store."""
        raise NotImplementedError("Backend.purge(topic, state) -> int")

    def check(self, fix: bool) -> dict[str, Any]:
        raise NotImplementedError("Backend.check(fix) -> dict")

    def fsync(self) -> None:
        raise NotImplementedError("Backend.fsync()")

    def close(self) -> None:
        raise NotImplementedError("Backend.close()")

    # Paused topics: kept with the queues, so every process and machine sees
    # them and they survive restarts. A paused topic accepts puts; takes
    # from it deliver nothing (see Queues.take_many).
    def set_paused(self, topic: str, paused: bool) -> None:
        raise NotImplementedError("Backend.set_paused(topic, paused)")

    def paused_topics(self) -> set[str]:
        raise NotImplementedError("Backend.paused_topics() -> set[str]")

    # Requests to consumer processes (quiet, stop), by heartbeat key; a
    # process reads its own at each heartbeat. ``record`` is a JSON-able dict.
    def write_control(self, key: str, record: dict[str, Any]) -> None:
        raise NotImplementedError("Backend.write_control(key, record)")

    def remove_control(self, key: str) -> None:
        raise NotImplementedError("Backend.remove_control(key)")

    def controls(self) -> dict[str, dict[str, Any]]:
        raise NotImplementedError("Backend.controls() -> dict[str, dict]")

    # Consumer heartbeats, shown by the dashboard. ``key`` names one consumer
    # process; ``record`` is a small JSON-able dict.
    def write_heartbeat(self, key: str, record: dict[str, Any]) -> None:
        raise NotImplementedError("Backend.write_heartbeat(key, record)")

    def remove_heartbeat(self, key: str) -> None:
        raise NotImplementedError("Backend.remove_heartbeat(key)")

    def heartbeats(self) -> list[dict[str, Any]]:
        raise NotImplementedError("Backend.heartbeats() -> list[dict]")


def public_location(location: str) -> str:
    """The location as shown to people, logs and scrapers: a URL's password (in
    its user part or a ``password=`` query argument, both read by redis-py)
    replaced by ``***``; anything else unchanged."""
    if "://" not in location:
        return location
    parts = urlsplit(location)
    netloc, query = parts.netloc, parts.query
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key == "password" for key, _ in pairs):
        query = urlencode([(k, "***" if k == "password" else v) for k, v in pairs], safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return location
    # Not urlunsplit: it would turn unix:///path into unix:/path.
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    return shown + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
