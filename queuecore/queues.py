"""The public API: :class:`Queues`, :class:`Task` and :class:`Message`."""

from __future__ import annotations

import math
import re
import time
import traceback as traceback_module
from dataclasses import dataclass
from typing import Any

from queuecore import identity
from queuecore.backend import Backend, Delivery, Lease, Record, public_location
from queuecore.defaults import (
    DEFAULTS,
    MAX_ERROR_LENGTH,
    MAX_LEASE_SECONDS,
    OPTION_NAMES,
    PAUSE_CHECK_INTERVAL,
    STATES,
    STATS_KEYS,
    TOPIC_MAX_LENGTH,
)
from queuecore.errors import Closed, InvalidOption, InvalidTopic, MessageTooLarge
from queuecore.serializers import Serializer, get_serializer

_TOPIC_RE = re.compile(r"[A-Za-z0-9_.\-]+")
_valid_topics: set[str] = set()  # names already checked (bounded)


def validate_topic(topic: object) -> str:
    """Return ``topic`` if it is a valid name, else raise InvalidTopic.

    >>> validate_topic("orders.v2")
    'orders.v2'
    >>> validate_topic("../etc")
    Traceback (most recent call last):
    ...
    queuecore.errors.InvalidTopic: invalid topic name '../etc': must not start with a dot
    """
    if type(topic) is str and topic in _valid_topics:  # the hot path: a name seen before
        return topic
    if not isinstance(topic, str):
        raise InvalidTopic(topic, f"must be a str, not {type(topic).__name__}")
    if not topic:
        raise InvalidTopic(topic, "must not be empty")
    if len(topic) > TOPIC_MAX_LENGTH:
        raise InvalidTopic(topic, f"longer than {TOPIC_MAX_LENGTH} characters")
    if topic.startswith("."):
        raise InvalidTopic(topic, "must not start with a dot")
    if not _TOPIC_RE.fullmatch(topic):
        raise InvalidTopic(topic, "only letters, digits, '_', '.' and '-' are allowed")
    if len(_valid_topics) < 10_000:
        _valid_topics.add(topic)
    return topic


def validate_id(id: object) -> int:
    """A message id: a positive int (a bool is refused)."""
    if isinstance(id, bool) or not isinstance(id, int) or id < 1:
        raise ValueError(f"a message id is a positive integer, not {id!r}")
    return id


def _cut(text: str, limit: int = MAX_ERROR_LENGTH) -> str:
    # Every backend stores the text and every page shows it: a surrogate
    # (an exception naming a file in another encoding) cannot be either.
    text = identity.clean(text)
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + f"\n... [{len(text) - limit} characters cut] ...\n" + text[-half:]


def _error_record(reason: str | BaseException | None, tb: str | None, task: Task, outcome: str) -> dict[str, Any]:
    """What a delivery that did not complete leaves in the message's
    history: when and why it ended, which process had it, when it took it
    and how long the handler ran (from ``task.started_at``, else the take)."""
    if isinstance(reason, BaseException):
        if tb is None:
            tb = "".join(traceback_module.format_exception(reason))
        reason = f"{type(reason).__name__}: {reason}"
    now = time.time()
    started = task.started_at if task.started_at is not None else task.taken_at
    record: dict[str, Any] = {
        "at": now, "attempt": task.attempts, "reason": _cut(str(reason or "")), "outcome": outcome,
        "by": identity.label(identity.current()), "taken_at": task.taken_at,
        "ran": round(max(0.0, now - started), 6),
    }
    if tb:
        record["traceback"] = _cut(tb)
    return record


@dataclass(frozen=True)
class Message:
    """A stored message as seen by browsing (:meth:`Queues.messages`) or
    :meth:`Queues.peek`: its value, state and history."""

    topic: str
    id: int
    value: Any
    raw: bytes
    state: str
    attempts: int
    enqueued_at: float
    lease: Lease | None
    errors: tuple[dict[str, Any], ...]
    not_before: float | None = None
    decode_error: str | None = None
    # The process that put it: ``{"host", "pid", "cmd"}`` (None: not known).
    origin: dict[str, Any] | None = None

    @property
    def size(self) -> int:
        """Encoded size of the value in bytes."""
        return len(self.raw)


class Task:
    """A message taken from a topic, leased to this process until it is
    completed, retried or failed (or its lease runs out)."""

    __slots__ = ("_queues", "topic", "id", "value", "attempts", "enqueued_at", "errors", "ready_at",
                 "taken_at", "started_at", "_token", "_settled")

    def __init__(self, queues: Queues, topic: str, delivery: Delivery, value: Any,
                 taken_at: float | None = None) -> None:
        self._queues = queues
        self.topic = topic
        self.id = delivery.id
        self.value = value
        self.attempts = delivery.attempts
        self.enqueued_at = delivery.enqueued_at
        self.errors = delivery.errors
        # Since when it waited to be taken (its put, or its due time), and
        # when it was: the difference is its wait in the queue.
        self.ready_at = delivery.ready_at if delivery.ready_at is not None else delivery.enqueued_at
        self.taken_at = time.time() if taken_at is None else taken_at
        # When its handler began (a consumer sets it); None: at the take.
        self.started_at: float | None = None
        self._token = delivery.token
        self._settled = False

    def __repr__(self) -> str:
        return f"<Task {self.topic}#{self.id} attempts={self.attempts}>"

    def _settle(self, outcome: str, delay: float = 0.0, error: dict[str, Any] | None = None) -> bool:
        if self._settled:
            return False
        ok = self._queues._backend_open().settle(self.topic, self._token, outcome, delay, error)
        self._settled = True
        return ok

    def complete(self) -> bool:
        """Done: the message is never delivered again. False if the lease was lost."""
        return self._settle("complete")

    def extend(self, seconds: float | None = None) -> bool:
        """Keep the lease: it now ends ``seconds`` from now (None: the
        ``visibility_timeout``). Call it while a long handler works; False
        when the lease was already lost (then do not expect to settle it).

        >>> qs = Queues("memory://extend-doctest", visibility_timeout=30)
        >>> _ = qs.put("q1", "x")
        >>> task = qs.take("q1", timeout=0)
        >>> task.extend(), task.extend(600), task.complete(), task.extend()
        (True, True, True, False)
        """
        if self._settled:
            return False
        if seconds is None:
            seconds = float(self._queues.options["visibility_timeout"])
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (
            math.isfinite(seconds) and 0 < seconds <= MAX_LEASE_SECONDS
        ):
            raise ValueError(f"seconds must be a positive number up to {MAX_LEASE_SECONDS:.0f}, not {seconds!r}")
        return self._queues._backend_open().extend(self.topic, self._token, float(seconds))

    def retry(
        self,
        delay: float = 0.0,
        *,
        reason: str | BaseException | None = None,
        traceback: str | None = None,
    ) -> bool:
        """Back to the topic, ready again after ``delay`` seconds. An optional
        ``reason`` (and ``traceback``) is kept with the message's errors."""
        if delay < 0:
            raise ValueError("delay must be >= 0")
        error = _error_record(reason, traceback, self, "retry") if reason is not None else None
        return self._settle("retry", float(delay), error)

    def fail(self, reason: str | BaseException = "", *, traceback: str | None = None) -> bool:
        """To the topic's failed store with the reason (and traceback)."""
        return self._settle("fail", 0.0, _error_record(reason, traceback, self, "fail"))


def _open_backend(location: str, options: dict[str, Any]) -> Backend:
    if location.startswith("memory://"):
        from queuecore.memory import MemoryBackend

        return MemoryBackend(location[len("memory://") :], **options)
    if location.startswith(("redis://", "rediss://", "unix://")):
        from queuecore.redis_backend import RedisBackend  # type: ignore[import-not-found,unused-ignore]

        return RedisBackend(location, **options)  # type: ignore[no-any-return,unused-ignore]
    if location.startswith("file://"):
        location = location[len("file://") :]
    elif "://" in location:
        raise InvalidOption("location", f"unknown scheme in {public_location(location)!r}: use a path, memory:// or redis://")
    from queuecore.slab import SlabBackend

    return SlabBackend(location, **options)


# Numeric options: (lowest value, whether that value itself is allowed,
# whether an int is required, whether None is allowed).
_NUMBERS: dict[str, tuple[float, bool, bool, bool]] = {
    "slab_size": (4096, True, True, False),
    "max_message_size": (1, True, True, False),
    "max_queue_size": (1, True, True, True),
    "fsync_threshold": (1, True, True, True),
    "fsync_interval": (0, True, False, True),
    "visibility_timeout": (0, False, False, False),
    "owner_timeout": (0, False, False, False),
}


def _check_numbers(options: dict[str, Any]) -> None:
    """InvalidOption for a numeric option that is not a finite number in
    range (``nan`` would make every lease both live and expired).

    >>> _check_numbers({"visibility_timeout": float("nan")})
    Traceback (most recent call last):
    ...
    queuecore.errors.InvalidOption: option 'visibility_timeout': must be a finite number, not nan
    """
    for name, (low, low_ok, integral, nullable) in _NUMBERS.items():
        if name not in options:
            continue
        value = options[name]
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            kind = "an integer" if integral else "a finite number"
            raise InvalidOption(name, f"must be {kind}{' or None' if nullable else ''}, not {value!r}")
        if integral and value != int(value):
            raise InvalidOption(name, f"must be an integer, not {value!r}")
        if value < low or (value == low and not low_ok):
            raise InvalidOption(name, f"must be {'at least' if low_ok else 'more than'} {low}, not {value!r}")


class Queues:
    """Named topics of durable messages in one location.

    >>> import tempfile
    >>> with Queues(tempfile.mkdtemp(), fsync_put=False) as qs:
    ...     mid = qs.put("q1", {"uuid": "42"})
    ...     task = qs.take("q1", timeout=0)
    ...     (task.value, task.attempts, task.complete())
    ({'uuid': '42'}, 1, True)

    ``location`` is a directory (slab files, the default), ``memory://name``
    or ``redis://host:port/db``. Options are in ``queuecore.defaults``.
    """

    def __init__(self, location: str = "var/queues", **options: Any) -> None:
        unknown = set(options) - OPTION_NAMES
        if unknown:
            raise InvalidOption(sorted(unknown)[0], f"unknown option; known: {', '.join(sorted(OPTION_NAMES))}")
        _check_numbers(options)
        self.location = str(location)
        self.options = {**DEFAULTS, **options}
        self.serializer: Serializer = get_serializer(self.options["serializer"])
        self.max_message_size = int(self.options["max_message_size"])
        backend_options = {k: v for k, v in options.items() if k != "serializer"}
        self._backend: Backend | None = _open_backend(self.location, backend_options)
        # (when read, paused topics): see _paused_now.
        self._paused_cache: tuple[float, set[str]] = (float("-inf"), set())

    # -- plumbing ----------------------------------------------------------
    @property
    def backend(self) -> Backend:
        return self._backend_open()

    def _backend_open(self) -> Backend:
        if self._backend is None:
            raise Closed()
        return self._backend

    def _encode(self, value: Any) -> bytes:
        data = self.serializer.dumps(value)
        if len(data) > self.max_message_size:
            raise MessageTooLarge(len(data), self.max_message_size)
        return data

    def _message(self, topic: str, record: Record) -> Message:
        try:
            value, problem = self.serializer.loads(record.payload), None
        except Exception as exc:  # an undecodable payload is shown, not fatal
            value, problem = None, str(exc)
        return Message(
            topic=topic,
            id=record.id,
            value=value,
            raw=record.payload,
            state=record.state,
            attempts=record.attempts,
            enqueued_at=record.enqueued_at,
            lease=record.lease,
            errors=record.errors,
            not_before=record.not_before,
            decode_error=problem,
            origin=record.origin,
        )

    # -- producing ---------------------------------------------------------
    def put(self, topic: str, value: Any, timeout: float | None = None) -> int:
        """Append ``value`` to ``topic`` and return its id (ids increase per topic).

        When the topic holds ``max_queue_size`` messages, wait up to
        ``timeout`` seconds for room (None: as long as it takes), then raise
        QueueFull. With ``fsync_put`` (the default) it returns once on disk.
        """
        validate_topic(topic)
        return self._backend_open().put(topic, [self._encode(value)], timeout)[0]

    def put_many(self, topic: str, values: list[Any] | tuple[Any, ...], timeout: float | None = None) -> list[int]:
        """Append several values at once (all or none); returns their ids."""
        validate_topic(topic)
        backend = self._backend_open()
        payloads = [self._encode(v) for v in values]
        if not payloads:
            return []
        return backend.put(topic, payloads, timeout)

    def put_delayed(self, topic: str, value: Any, delay: float) -> int:
        """Append ``value`` as a delayed message that becomes ready ``delay``
        seconds from now (``delay <= 0``: ready at once); returns its id.

        >>> qs = Queues("memory://put-delayed-doctest")
        >>> qs.put_delayed("q1", "later", 60.0)
        1
        >>> qs.stats()["q1"]["delayed"], qs.take("q1", timeout=0)
        (1, None)

        Unlike :meth:`put`, it does not wait for room under
        ``max_queue_size``: it is for work scheduled ahead (deferred tasks),
        which a full topic must not refuse.
        """
        validate_topic(topic)
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not math.isfinite(delay):
            raise ValueError(f"delay must be a finite number of seconds, not {delay!r}")
        now = time.time()
        record = Record(
            id=0, payload=self._encode(value), state="delayed" if delay > 0 else "ready",
            attempts=0, enqueued_at=now, not_before=now + delay if delay > 0 else None,
            origin=identity.current(),
        )
        return self._backend_open().restore(topic, [record])[0]

    # -- consuming ---------------------------------------------------------
    def take(self, topic: str, timeout: float | None = None) -> Task | None:
        """Lease the oldest ready message of ``topic`` as a :class:`Task`.

        Waits up to ``timeout`` seconds (None: until one comes; 0: poll) and
        returns None when none came.
        """
        tasks = self.take_many(topic, 1, timeout)
        return tasks[0] if tasks else None

    def take_many(self, topic: str, limit: int, timeout: float | None = 0) -> list[Task]:
        """Lease up to ``limit`` ready messages; waits only for the first one."""
        validate_topic(topic)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, not {limit!r}")
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be >= 0 or None")
        backend = self._backend_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._paused_now(topic):
                left = self._wait_while_paused(topic, None if deadline is None else deadline - time.monotonic())
                if left is not None and left < 0:
                    return []  # still paused when the timeout ran out
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            # A wait longer than PAUSE_CHECK_INTERVAL goes in slices, so a
            # pause made meanwhile stops this take too.
            step = PAUSE_CHECK_INTERVAL if left is None else min(left, PAUSE_CHECK_INTERVAL)
            deliveries = backend.take(topic, limit, step)
            if deliveries or (left is not None and left <= step):
                break
        tasks = []
        taken_at = time.time()
        for delivery in deliveries:
            try:
                value = self.serializer.loads(delivery.payload)
            except Exception as exc:
                # A payload this serializer cannot read would fail every
                # consumer forever: send it to the failed store at once.
                task = Task(self, topic, delivery, None, taken_at)
                backend.settle(topic, delivery.token, "fail", 0.0, _error_record(exc, None, task, "fail"))
                continue
            tasks.append(Task(self, topic, delivery, value, taken_at))
        return tasks

    # -- pausing -------------------------------------------------------------
    def pause(self, topic: str) -> None:
        """Pause ``topic`` in every process and machine sharing this location:
        it still accepts puts, but takes deliver nothing (within
        ``PAUSE_CHECK_INTERVAL`` seconds) until :meth:`resume`. Messages
        already taken are not affected. The pause is stored with the queues,
        so it survives restarts.

        >>> qs = Queues("memory://pause-doctest")
        >>> _ = qs.put("q1", "x")
        >>> qs.pause("q1"); qs.take("q1", timeout=0), qs.paused()
        (None, ['q1'])
        >>> qs.resume("q1"); qs.take("q1", timeout=0).value
        'x'
        """
        validate_topic(topic)
        self._backend_open().set_paused(topic, True)
        self._paused_cache = (float("-inf"), set())  # read again at the next take

    def resume(self, topic: str) -> None:
        """Undo :meth:`pause`: takes deliver again."""
        validate_topic(topic)
        self._backend_open().set_paused(topic, False)
        self._paused_cache = (float("-inf"), set())

    def paused(self) -> list[str]:
        """The paused topics, sorted (read from the location, never cached)."""
        return sorted(self._backend_open().paused_topics())

    def _paused_now(self, topic: str) -> bool:
        # Read from the location at most every PAUSE_CHECK_INTERVAL seconds:
        # a take pays a clock read, not a file or a round trip.
        read_at, topics = self._paused_cache
        now = time.monotonic()
        if now - read_at >= PAUSE_CHECK_INTERVAL:
            topics = self._backend_open().paused_topics()
            self._paused_cache = (now, topics)
        return topic in topics

    def _wait_while_paused(self, topic: str, timeout: float | None) -> float | None:
        """Sleep while ``topic`` stays paused, up to ``timeout``; the time
        left for the take once it is resumed (negative: it ran out)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return -1.0
            time.sleep(PAUSE_CHECK_INTERVAL if left is None else min(PAUSE_CHECK_INTERVAL, left))
            if not self._paused_now(topic):
                return None if deadline is None else max(0.0, deadline - time.monotonic())

    def complete_many(self, tasks: list[Task] | tuple[Task, ...]) -> int:
        """Complete several tasks at once (one lock per topic on the slab
        backend); returns how many were completed (a lost lease is not).

        >>> qs = Queues("memory://complete-many-doctest")
        >>> _ = qs.put_many("q1", [1, 2, 3])
        >>> qs.complete_many(qs.take_many("q1", 10))
        3
        """
        backend = self._backend_open()
        by_topic: dict[str, list[Task]] = {}
        for task in tasks:
            if task._queues is not self:
                raise ValueError(f"{task!r} was taken through another Queues object")
            if not task._settled:
                by_topic.setdefault(task.topic, []).append(task)
        done = 0
        for topic, group in by_topic.items():
            for task in group:
                task._settled = True
            oks = backend.settle_many(topic, [task._token for task in group], "complete")
            done += sum(oks)
        return done

    # -- looking -----------------------------------------------------------
    def topics(self) -> list[str]:
        """The names of every topic, sorted."""
        return sorted(self._backend_open().topics())

    def stats(self) -> dict[str, dict[str, int]]:
        """Counters per topic (see DESIGN: enqueued, ready, delayed, in_progress,
        completed, retried, failed, num_slabs, num_active_slabs)."""
        backend = self._backend_open()
        out = {}
        for topic in self.topics():
            counts = backend.stats(topic)
            out[topic] = {k: int(counts.get(k, 0)) for k in STATS_KEYS}
        return out

    def info(self, topic: str) -> dict[str, Any]:
        """Storage facts of one topic: bytes on disk, entries dropped by
        recovery, enqueue time of the oldest ready message."""
        validate_topic(topic)
        return self._backend_open().info(topic)

    def messages(
        self, topic: str, state: str | None = None, after: int | None = None, limit: int = 50
    ) -> list[Message]:
        """Browse ``topic`` in id order: messages in ``state`` (None: all but
        completed) with an id greater than ``after``, at most ``limit``.
        Pass the last id of a page as ``after`` to get the next page."""
        validate_topic(topic)
        if state is not None and state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, not {state!r}")
        if after is not None and (isinstance(after, bool) or not isinstance(after, int) or after < 0):
            raise ValueError(f"after must be a non-negative integer, not {after!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, not {limit!r}")
        records = self._backend_open().messages(topic, state, after, limit)
        return [self._message(topic, r) for r in records]

    def peek(self, topic: str, id: int) -> Message:
        """The message with this id, whatever its state; MessageNotFound."""
        validate_topic(topic)
        return self._message(topic, self._backend_open().peek(topic, validate_id(id)))

    # -- operating ---------------------------------------------------------
    def requeue(self, topic: str, id: int) -> int:
        """Make a failed, delayed or in-progress message ready now (it keeps
        its id; a consumer holding it can no longer complete it). Returns the id."""
        validate_topic(topic)
        self._backend_open().requeue(topic, validate_id(id))
        return id

    def requeue_failed(self, topic: str) -> int:
        """Make every failed message of ``topic`` ready; returns how many."""
        validate_topic(topic)
        return self._backend_open().requeue_failed(topic)

    def delete(self, topic: str, id: int) -> None:
        """Remove one message, whatever its state; MessageNotFound."""
        validate_topic(topic)
        self._backend_open().delete(topic, validate_id(id))

    def purge(self, topic: str, state: str | None = None) -> int:
        """Remove the ready and delayed messages (``state=None``), or only the
        ``"ready"``, ``"delayed"`` or ``"failed"`` ones; returns how many.
        In-progress messages stay with their consumers; the topic stays."""
        validate_topic(topic)
        if state not in (None, "ready", "delayed", "failed"):
            raise ValueError(f"purge takes state None, 'ready', 'delayed' or 'failed', not {state!r}")
        return self._backend_open().purge(topic, state)

    def check(self, fix: bool = False) -> dict[str, Any]:
        """Check the stored files; with ``fix``, repair what can be repaired.
        Returns what was found: {"ok": bool, "problems": [...], "fixed": [...]}."""
        return self._backend_open().check(fix)

    def fsync(self) -> None:
        """Flush everything written so far to disk."""
        self._backend_open().fsync()

    def close(self) -> None:
        """Flush and release files; later calls raise Closed. Idempotent."""
        if self._backend is not None:
            backend, self._backend = self._backend, None
            backend.close()

    @property
    def closed(self) -> bool:
        return self._backend is None

    def __enter__(self) -> Queues:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Queues {public_location(self.location)!r}{' closed' if self.closed else ''}>"
