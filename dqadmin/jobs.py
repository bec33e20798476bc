"""Demo producers run by the dashboard: background threads in the web
process, with a small registry the progress bars poll.

A job sends N demo messages (``{"uuid": ...}``, like the seed's demo) to
one or more topics at a chosen rate, with the demo app's
:func:`dqadmin.demo.produce.produce` (``manage.py dqproduce`` uses it too). Jobs live in this process only: a
restart forgets them (the messages they sent stay in the queue).
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from dqadmin.demo.produce import produce
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
    rate: float  # messages per second; 0: as fast as possible
    done: int = 0
    state: str = "running"  # running, finished, cancelled, failed
    error: str = ""
    started: float = field(default_factory=time.time)
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def running(self) -> bool:
        return self.state == "running"


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
            produce(queues, job.total, job.topics, job.rate or None, progress=progress)
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
