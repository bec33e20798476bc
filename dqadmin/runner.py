"""The consumer runtime behind ``manage.py runconsumers``.

One :class:`Runner` per process runs registered :class:`~dqadmin.consumers.Consumer`
handlers: for each topic, ``concurrency`` worker threads each take one
message at a time and hand its value to the handler.

- The handler returns: ``task.complete()``.
- It raises one of the consumer's ``permanent`` exceptions, or it was the
  ``max_attempts``-th delivery: ``task.fail(exc, traceback=...)``, so the
  message lands in the topic's failed store with the error and traceback.
- It raises anything else: ``task.retry(delay=backoff(attempt), reason=exc,
  traceback=...)``.

:meth:`Runner.stop` (SIGTERM, SIGINT) stops taking and lets the handlers
that run finish, for up to ``grace`` seconds; a message whose handler did
not finish in time is given back with ``task.retry()`` so that no lease is
left behind, then :meth:`Runner.run` returns. Delivery is at least once: a
handler can run again for a message it already handled if its process died
before completing it, so handlers should be idempotent.

While a handler runs, its lease is kept: every third of the queues'
``visibility_timeout`` the runner extends the lease of each message a
handler holds (``Task.extend``), so a handler of any length keeps its message
while its process lives; ``visibility_timeout`` only bounds a process that
is alive but hung (or stopped), and a dead process's messages come back by
its owner's liveness (at once on slab files, after ``owner_timeout`` on Redis).

An operator can ask a running process, through the queue location, to be
**quiet** (stop taking new messages; those it holds finish; its heartbeat
says "quiet") or to **stop** (as SIGTERM): :func:`request` writes the
request, and the process reads it at each heartbeat. A paused topic
(``Queues.pause``) delivers nothing to any process until resumed.

Each handler's run time and each message's wait in the queue (its take
less when it became ready: its put, or its due time if delayed) go into
histograms (:mod:`queuecore.timings`) that the
heartbeat carries, so the dashboard and ``/metrics`` show the whole fleet.

A heartbeat record is written through the backend every
``DQ["HEARTBEAT_INTERVAL"]`` seconds for the dashboard, and removed on a
clean exit. Logs go to ``logging.getLogger("dq.consumers")``: one INFO line
per message handled, a WARNING per retry, an ERROR per failed message.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from dqadmin.consumers import Consumer
from dqadmin.stats import public_location
from queuecore import Closed, QueueError, Queues, Task
from queuecore.timings import Timings

logger = logging.getLogger("dq.consumers")

# Seconds the handlers that run get to finish after a stop was asked for.
DEFAULT_GRACE = 30.0
# Longest wait of one take: a worker notices a stop request within this.
POLL_INTERVAL = 0.5
# Pause after the backend failed a take (a full disk, a lost Redis), so a
# broken store is not hammered in a tight loop.
ERROR_PAUSE = 1.0


def _hostname() -> str:
    return socket.gethostname() or "localhost"


def _heartbeat_key(host: str, pid: int) -> str:
    # A key may become a file name in some backends: keep it to safe characters.
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{host}-{pid}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


@dataclass
class _InFlight:
    """A task a worker holds. ``settled`` is set by whoever settles it first:
    the worker when its handler ends, or the runner giving it back when the
    grace period ran out."""

    task: Task
    consumer: Consumer
    started: float
    thread: threading.Thread = field(default_factory=threading.current_thread)
    lock: threading.Lock = field(default_factory=threading.Lock)
    settled: bool = False
    lost: bool = False  # an extend found the lease lost


@dataclass
class RunReport:
    """What one :meth:`Runner.run` did."""

    handled: int = 0  # handler calls that ended (returned or raised)
    completed: int = 0
    retried: int = 0  # retries after an exception
    failed: int = 0  # messages sent to the failed store
    errors: int = 0  # handler calls that raised
    given_back: int = 0  # in-flight messages retried because the grace period ran out
    lost_leases: int = 0  # settles refused because the lease had passed to another taker


class Runner:
    """Run consumers against a :class:`~queuecore.Queues` until stopped
    (or, with ``burst``, until their topics are drained).

    >>> from queuecore import Queues
    >>> from dqadmin.consumers import ConsumerRegistry
    >>> qs = Queues("memory://runner-doctest")
    >>> reg = ConsumerRegistry()
    >>> @reg.consumer("words")
    ... def shout(value):
    ...     return value.upper()
    >>> qs.put_many("words", ["a", "b"])
    [1, 2]
    >>> Runner(qs, list(reg), burst=True, heartbeat_interval=None).run().completed
    2
    """

    def __init__(
        self,
        queues: Queues,
        consumers: Sequence[Consumer],
        *,
        concurrency: int | None = None,
        burst: bool = False,
        grace: float = DEFAULT_GRACE,
        heartbeat_interval: float | None = 2.0,
        poll_interval: float = POLL_INTERVAL,
        call: Callable[[Consumer, Task], Any] | None = None,
        keepalive_interval: float | None = None,
    ) -> None:
        if not consumers:
            raise ValueError("no consumers to run")
        topics = [c.topic for c in consumers]
        if len(set(topics)) != len(topics):
            raise ValueError("one consumer per topic")
        if concurrency is not None and concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if grace < 0:
            raise ValueError("grace must be >= 0")
        self.queues = queues
        self.consumers = list(consumers)
        self.concurrency = {c.topic: concurrency or c.concurrency for c in self.consumers}
        self.burst = burst
        self.grace = float(grace)
        self.heartbeat_interval = heartbeat_interval
        self.poll_interval = poll_interval
        # Seconds between two extensions of the leases handlers hold.
        visibility = float(queues.options.get("visibility_timeout", 300.0))
        self.keepalive_interval = keepalive_interval or max(0.05, visibility / 3)
        # How a handler is called; runconsumers wraps it to manage Django's
        # database connections.
        self._call = call or (lambda consumer, task: consumer(task))

        self.host = _hostname()
        self.pid = os.getpid()
        self.key = _heartbeat_key(self.host, self.pid)
        self.report = RunReport()
        self.started: float | None = None
        # Handler run times and queue waits, in the heartbeat for the dashboard.
        self.timings = Timings()

        self._lock = threading.Lock()
        self._stop = threading.Event()  # stop taking
        self._quiet = threading.Event()  # take nothing new, stay up
        self._hurry = threading.Event()  # stop waiting for handlers
        self._wake = threading.Event()  # something for the main loop to look at
        self._finished = False  # in-flight messages were given back
        self._in_flight: dict[int, _InFlight] = {}
        # Burst mode: per topic, the time until which this runner's own
        # delayed retries may still come back and must be waited for.
        self._horizon: dict[str, float] = {t: 0.0 for t in topics}
        self._threads: list[threading.Thread] = []

    # -- control -------------------------------------------------------------
    def stop(self, hurry: bool = False) -> None:
        """Stop taking messages; let the handlers that run finish within the
        grace period. With ``hurry``, give their messages back at once
        instead. Safe to call from a signal handler, and more than once."""
        self._stop.set()
        if hurry:
            self._hurry.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def in_flight(self) -> int:
        """How many messages the handlers hold now."""
        with self._lock:
            return len(self._in_flight)

    # -- the main loop -------------------------------------------------------
    def run(self) -> RunReport:
        """Run until stopped (or drained, with ``burst``); returns the report.
        On return no message taken by this runner is left in progress."""
        self.started = time.time()
        beat_stop = threading.Event()
        beat_thread = None
        if self.heartbeat_interval:
            self._prune_dead_heartbeats()
            self._beat()
            beat_thread = threading.Thread(
                target=self._beat_loop, args=(beat_stop,), name="dq-heartbeat", daemon=True
            )
            beat_thread.start()
        logger.info(
            "consumers started on %s (pid %d%s): %s",
            public_location(self.queues.location),  # never a Redis password in the log
            self.pid,
            ", burst" if self.burst else "",
            ", ".join(
                f"{c.topic} x{self.concurrency[c.topic]} -> {c.name}" for c in self.consumers
            ),
        )
        keep_stop = threading.Event()
        keep_thread = threading.Thread(
            target=self._keepalive_loop, args=(keep_stop,), name="dq-keepalive", daemon=True
        )
        keep_thread.start()
        for c in self.consumers:
            for n in range(self.concurrency[c.topic]):
                thread = threading.Thread(
                    target=self._work, args=(c,), name=f"dq-{c.topic}-{n + 1}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        try:
            self._wait()
        finally:
            self._stop.set()
            stuck = self._give_back()
            # Workers not stuck in a handler leave within one poll interval;
            # wait for them so none is inside the backend when we return.
            deadline = time.monotonic() + self.poll_interval + 1.0
            for thread in self._threads:
                if thread not in stuck:
                    thread.join(max(0.0, deadline - time.monotonic()))
            keep_stop.set()
            keep_thread.join(timeout=5)
            beat_stop.set()
            if beat_thread is not None:
                beat_thread.join(timeout=5)
                try:
                    self.queues.backend.remove_heartbeat(self.key)
                    self.queues.backend.remove_control(self.key)  # a request for a process that is gone
                except QueueError as exc:
                    logger.warning("could not remove the heartbeat %s: %s", self.key, exc)
        r = self.report
        logger.info(
            "consumers stopped: %d handled, %d completed, %d retried, %d failed%s",
            r.handled,
            r.completed,
            r.retried,
            r.failed,
            f", {r.given_back} given back unfinished" if r.given_back else "",
        )
        return r

    def _wait(self) -> None:
        stop_deadline: float | None = None
        while True:
            if not any(t.is_alive() for t in self._threads):
                return
            if self._stop.is_set():
                now = time.monotonic()
                if stop_deadline is None:
                    stop_deadline = now + self.grace
                    busy = self.in_flight()
                    if busy:
                        logger.info(
                            "stopping: waiting up to %g s for %d handler%s to finish",
                            self.grace,
                            busy,
                            "" if busy == 1 else "s",
                        )
                    else:
                        logger.info("stopping")
                if self._hurry.is_set() or now >= stop_deadline:
                    return
                if not self.in_flight():
                    # Nothing held: the workers only wait in a take; go now.
                    return
            self._wake.wait(0.2)
            self._wake.clear()

    def _give_back(self) -> set[threading.Thread]:
        """Retry what the handlers still hold; returns their threads."""
        with self._lock:
            self._finished = True
            flights = list(self._in_flight.values())
        for flight in flights:
            task = flight.task
            why = "the consumer stopped before its handler finished"
            ok = self._settle(flight, partial(task.retry, 0.0, reason=why))
            if ok is None:
                continue
            if not ok:
                self._log_unsettled(task, ok)
                continue
            with self._lock:
                self.report.given_back += 1
            logger.warning("%s#%d given back: %s", task.topic, task.id, why)
        return {flight.thread for flight in flights}

    # -- workers ---------------------------------------------------------------
    def quiet(self) -> None:
        """Take no new messages (handlers that run finish); stay up until
        stopped. Safe from a signal handler."""
        self._quiet.set()
        self._wake.set()

    @property
    def quieted(self) -> bool:
        return self._quiet.is_set()

    def _work(self, consumer: Consumer) -> None:
        topic = consumer.topic
        while not self._stop.is_set():
            if self._quiet.is_set():
                if self.burst:
                    break  # a quiet burst has nothing left to do
                self._stop.wait(self.poll_interval)
                continue
            timeout = self.poll_interval
            if self.burst:
                with self._lock:
                    left = self._horizon[topic] - time.time()
                timeout = 0.0 if left <= 0 else min(left, self.poll_interval)
            try:
                task = self.queues.take(topic, timeout=timeout)
            except Closed:
                return
            except Exception:
                logger.exception("taking from %s failed; trying again in %g s", topic, ERROR_PAUSE)
                self._stop.wait(ERROR_PAUSE)
                continue
            if task is None:
                if self.burst:
                    with self._lock:
                        drained = time.time() >= self._horizon[topic]
                    if drained:
                        break
                continue
            self._handle(consumer, task)
        self._wake.set()

    def _handle(self, consumer: Consumer, task: Task) -> None:
        flight = _InFlight(task, consumer, time.monotonic())
        with self._lock:
            given_back = self._finished
            if not given_back:
                self._in_flight[id(flight)] = flight
        if given_back:
            # Taken just as the runner finished: hand it straight back (its
            # wait is counted by the take that runs it).
            try:
                task.retry(0.0)
            except QueueError as exc:
                logger.warning("%s#%d could not be given back: %s", task.topic, task.id, exc)
            return
        # How long it waited: from when it became ready (its put, its due
        # time, or its retry's) to this take.
        self.timings.observe(task.topic, "wait", max(0.0, task.taken_at - task.ready_at))
        task.started_at = time.time()  # the handler's run time, in its history
        try:
            self._run_handler(consumer, task, flight)
        finally:
            self.timings.observe(task.topic, "handler", time.monotonic() - flight.started)
            with self._lock:
                self._in_flight.pop(id(flight), None)
            self._wake.set()

    def _run_handler(self, consumer: Consumer, task: Task, flight: _InFlight) -> None:
        topic, mid, attempt = task.topic, task.id, task.attempts
        try:
            self._call(consumer, task)
        except Exception as exc:
            took = time.monotonic() - flight.started
            tb = "".join(traceback.format_exception(exc))
            permanent = isinstance(exc, consumer.permanent)
            if permanent or attempt >= consumer.max_attempts:
                ok = self._settle(flight, partial(task.fail, exc, traceback=tb))
                self._count(handled=1, errors=1, failed=1 if ok else 0, lost_leases=ok is False)
                if ok:
                    why = (
                        f"permanent {type(exc).__name__}"
                        if permanent
                        else f"attempt {attempt}/{consumer.max_attempts}"
                    )
                    logger.error(
                        "%s#%d failed (%s) after %.1f ms: %s: %s",
                        topic,
                        mid,
                        why,
                        took * 1000,
                        type(exc).__name__,
                        exc,
                        exc_info=exc,
                    )
                else:
                    self._log_unsettled(task, ok)
            else:
                delay = consumer.delay(attempt)
                ok = self._settle(flight, partial(task.retry, delay, reason=exc, traceback=tb))
                if ok:
                    with self._lock:
                        # Burst mode waits for the retry to come back (plus a
                        # margin for the backend's own clock reading).
                        self._horizon[topic] = max(self._horizon[topic], time.time() + delay + 0.1)
                    logger.warning(
                        "%s#%d raised %s: %s on attempt %d/%d; retry in %.2f s",
                        topic,
                        mid,
                        type(exc).__name__,
                        exc,
                        attempt,
                        consumer.max_attempts,
                        delay,
                    )
                else:
                    self._log_unsettled(task, ok)
                self._count(handled=1, errors=1, retried=1 if ok else 0, lost_leases=ok is False)
            return
        except BaseException as exc:
            # SystemExit, KeyboardInterrupt inside a handler: give the
            # message back untouched and let the exception end this thread.
            self._settle(flight, partial(task.retry, 0.0, reason=exc))
            raise
        took = time.monotonic() - flight.started
        ok = self._settle(flight, task.complete)
        self._count(handled=1, completed=1 if ok else 0, lost_leases=ok is False)
        if ok:
            logger.info(
                "%s#%d completed in %.1f ms (attempt %d)",
                topic,
                mid,
                took * 1000,
                attempt,
            )
        else:
            self._log_unsettled(task, ok)

    def _settle(self, flight: _InFlight, action: Callable[[], bool]) -> bool | None:
        """Settle once: None if it was already settled (given back by the
        runner), else what the backend said (False: the lease was lost)."""
        with flight.lock:
            if flight.settled:
                return None
            flight.settled = True
            try:
                return action()
            except QueueError as exc:
                logger.error(
                    "%s#%d could not be settled: %s", flight.task.topic, flight.task.id, exc
                )
                return False

    def _log_unsettled(self, task: Task, ok: bool | None) -> None:
        if ok is None:
            logger.warning(
                "%s#%d: handler ended after its message was given back; outcome dropped",
                task.topic,
                task.id,
            )
        else:
            logger.warning(
                "%s#%d: lease lost (it expired or was requeued); another delivery will handle it",
                task.topic,
                task.id,
            )

    def _count(self, **deltas: int | bool) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self.report, name, getattr(self.report, name) + int(delta))

    # -- lease keep-alive ----------------------------------------------------------
    def _keepalive_loop(self, done: threading.Event) -> None:
        while not done.wait(self.keepalive_interval):
            self.keep_leases()

    def keep_leases(self) -> int:
        """Extend the lease of every message a handler holds; returns how many
        were kept. A lease found lost is logged once: its message may be
        running elsewhere too, and this handler's outcome will be refused."""
        with self._lock:
            flights = list(self._in_flight.values())
        kept = 0
        for flight in flights:
            with flight.lock:
                if flight.settled or flight.lost:
                    continue
                try:
                    ok = flight.task.extend()
                except QueueError as exc:
                    logger.warning("%s#%d: could not extend its lease: %s", flight.task.topic, flight.task.id, exc)
                    continue
                if ok:
                    kept += 1
                    continue
                flight.lost = True
            logger.warning(
                "%s#%d: lease lost while its handler runs (it expired, was requeued, or this process "
                "was stalled past the owner timeout); its outcome will be refused",
                flight.task.topic,
                flight.task.id,
            )
        return kept

    # -- heartbeats --------------------------------------------------------------
    def heartbeat(self) -> dict[str, Any]:
        """The record this runner publishes (see the module docstring)."""
        with self._lock:
            r = self.report
            return {
                "key": self.key,
                "host": self.host,
                "pid": self.pid,
                # The name leases and liveness records give this process.
                "owner": getattr(self.queues.backend, "owner", None),
                "topics": [c.topic for c in self.consumers],
                "concurrency": sum(self.concurrency.values()),
                "concurrency_by_topic": dict(self.concurrency),
                "handled": r.handled,
                "completed": r.completed,
                "retried": r.retried,
                "failed": r.failed,
                "errors": r.errors,
                "in_progress": len(self._in_flight),
                "started": self.started,
                "last_beat": time.time(),
                "burst": self.burst,
                "stopping": self._stop.is_set(),
                "quiet": self._quiet.is_set(),
                "timings": self.timings.snapshot(),
            }

    def _beat(self) -> None:
        self._obey()
        try:
            self.queues.backend.write_heartbeat(self.key, self.heartbeat())
        except QueueError as exc:
            logger.warning("could not write the heartbeat: %s", exc)

    def _obey(self) -> None:
        """Act on an operator's request for this process (see request())."""
        try:
            control = self.queues.backend.controls().get(self.key)
        except QueueError as exc:
            logger.warning("could not read the requests for this process: %s", exc)
            return
        if not control:
            return
        started = control.get("started")
        if isinstance(started, (int, float)) and self.started is not None and abs(started - self.started) > 1e-3:
            # For an earlier process of the same host and pid (a restarted
            # container is pid 1 again): not for this one.
            try:
                self.queues.backend.remove_control(self.key)
            except QueueError:
                pass
            return
        action = control.get("action")
        by = control.get("by") or "an operator"
        if action == "quiet" and not self._quiet.is_set():
            logger.info("quiet, as %s asked: taking no new messages", by)
            self.quiet()
        elif action == "stop" and not self._stop.is_set():
            logger.info("stopping, as %s asked", by)
            self.stop()
            try:
                self.queues.backend.remove_control(self.key)
            except QueueError:
                pass

    def _beat_loop(self, done: threading.Event) -> None:
        assert self.heartbeat_interval
        while not done.wait(self.heartbeat_interval):
            self._beat()

    def _prune_dead_heartbeats(self) -> None:
        # A consumer killed with -9 leaves its record behind; a later one on
        # the same host removes those whose process is gone.
        try:
            for beat in self.queues.backend.heartbeats():
                key, pid = beat.get("key"), beat.get("pid")
                if (
                    beat.get("host") != self.host
                    or not isinstance(key, str)
                    or not isinstance(pid, int)
                ):
                    continue
                if pid != self.pid and not _pid_alive(pid):
                    self.queues.backend.remove_heartbeat(key)
                    self.queues.backend.remove_control(key)
        except QueueError as exc:
            logger.warning("could not prune old heartbeats: %s", exc)


CONTROL_ACTIONS = ("quiet", "stop")


def request(queues: Queues, key: str, action: str, by: str = "", started: float | None = None) -> None:
    """Ask the consumer process whose heartbeat key is ``key`` (and, when
    ``started`` is given, that started then: its heartbeat says) to be quiet
    (take nothing new) or to stop gracefully; it acts at its next heartbeat."""
    if action not in CONTROL_ACTIONS:
        raise ValueError(f"action must be one of {', '.join(CONTROL_ACTIONS)}, not {action!r}")
    queues.backend.write_control(key, {"action": action, "by": by, "at": time.time(), "started": started})
