"""Consumers of the child processes started by tests/consumers/test_processes.py.

Each handler appends a line to the file named by ``DQ_TEST_OUT``:
``start <topic> <id> <attempt>`` when it begins and ``done ...`` when it
returns, so a test sees which messages were handled, and when.

``work`` sleeps ``value["sleep"]`` seconds, plus ``value["hang"]`` seconds on
the first delivery only: a test can kill its process while it holds that
message and see it handled again by another one.
"""

from __future__ import annotations

import os
import time
from typing import Any

from dqadmin.consumers import Backoff, consumer
from queuecore import Task


def _record(what: str, task: Task) -> None:
    path = os.environ.get("DQ_TEST_OUT")
    if not path:
        return
    # One write() per line on an O_APPEND file: lines from several threads
    # and processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{what} {task.topic} {task.id} {task.attempts}\n".encode())
    finally:
        os.close(fd)


@consumer("work", concurrency=2)
def work(value: Any, task: Task) -> None:
    _record("start", task)
    if isinstance(value, dict):
        time.sleep(float(value.get("sleep", 0)))
        if task.attempts == 1:
            time.sleep(float(value.get("hang", 0)))
    _record("done", task)


@consumer("flaky", max_attempts=3, backoff=Backoff(base=0.01, cap=0.05))
def flaky(value: Any, task: Task) -> None:
    _record("start", task)
    raise RuntimeError(f"boom on attempt {task.attempts}")
