"""Demo producers run by the dashboard: background threads in the web
process, with a small registry the progress bars poll.

A job sends N demo messages (``{"uuid": ...}``, like the seed's demo) to
one or more topics at a chosen rate. Jobs live in this process only: a
restart forgets them (the messages they sent stay in the queue).
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from queuecore import Queues

# Finished jobs kept for the page (the newest ones).
KEEP_FINISHED = 10
# Most jobs running at once in one web process.
MAX_RUNNING = 4


class Cancelled(Exception):
    """Raised inside a job's progress callback to stop it."""


@dataclass
class Job:
    id: int
    topics: list[str]
    total: int
    rate: float
    done: int = 0
    state: str = "running"  # running, finished, cancelled, failed
    error: str = ""
    started: float = field(default_factory=time.time)
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def running(self) -> bool:
        return self.state == "running"


def _produce_fallback(
    queues: Queues,
    n: int,
    topics: list[str],
    rate: float,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Put ``n`` demo messages round-robin on ``topics``, ``rate`` per second
    (0: as fast as possible), in small batches; ``progress(done)`` after each."""
    done = 0
    start = time.monotonic()
    batch = 100 if rate <= 0 else max(1, min(100, int(rate / 20)))
    cycle = itertools.cycle(topics)
    while done < n:
        size = min(batch, n - done)
        topic = next(cycle)
        queues.put_many(topic, [{"uuid": str(uuid.uuid4())} for _ in range(size)])
        done += size
        if progress is not None:
            progress(done)
        if rate > 0:
            wait = start + done / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
    return done


def _producer() -> Callable[..., Any]:
    # The demo app's producer when it is there (manage.py's demo command
    # uses it too); else the small one above.
    try:
        from dqadmin.demo.produce import produce  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return _produce_fallback
    return produce  # type: ignore[no-any-return,unused-ignore]


class Jobs:
    """The jobs of this process, newest first."""

    def __init__(self) -> None:
        self._jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, queues: Queues, total: int, topics: list[str], rate: float) -> Job:
        with self._lock:
            if sum(1 for j in self._jobs.values() if j.running) >= MAX_RUNNING:
                raise RuntimeError(f"{MAX_RUNNING} demo producers are running already; wait or cancel one")
            job = Job(id=next(self._ids), topics=list(topics), total=total, rate=rate)
            self._jobs[job.id] = job
            finished = sorted((j for j in self._jobs.values() if not j.running), key=lambda j: j.id)
            for old in finished[:-KEEP_FINISHED]:
                del self._jobs[old.id]
        thread = threading.Thread(target=self._run, args=(job, queues), name=f"dq-demo-{job.id}", daemon=True)
        thread.start()
        return job

    def _run(self, job: Job, queues: Queues) -> None:
        def progress(done: int, *rest: Any) -> None:
            job.done = min(int(done), job.total)
            if job.cancel.is_set():
                raise Cancelled()

        try:
            _producer()(queues, job.total, job.topics, job.rate, progress=progress)
            job.done, job.state = job.total, "finished"
        except Cancelled:
            job.state = "cancelled"
        except Exception as exc:  # shown on the page; the thread must not die silently
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            job.finished = time.time()

    def get(self, job_id: int) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: -j.id)


jobs = Jobs()
