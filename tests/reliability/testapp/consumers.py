"""The campaign's consumer for ``manage.py runconsumers``: it checks each
value and writes a ``got`` line (with its thread's name) to the process's
ledger ``$DQ_LEDGER_DIR/rc-<pid>.log`` before returning, i.e. before the
runner completes the message (see tests/reliability/ledger.py)."""

from __future__ import annotations

import os
import threading
from typing import Any

from dqadmin.consumers import consumer
from queuecore import Task
from tests.reliability.ledger import value_key, value_ok

_fd: int | None = None
_lock = threading.Lock()


def _write(line: str) -> None:
    global _fd
    with _lock:
        if _fd is None:
            path = os.path.join(os.environ["DQ_LEDGER_DIR"], f"rc-{os.getpid()}.log")
            _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, line.encode())


@consumer("rel", concurrency=2)
def rel(value: Any, task: Task) -> None:
    ok = "ok" if value_ok(value) else "bad"
    name = threading.current_thread().name.replace(" ", "_")
    _write(f"got rel {task.id} {value_key(value)} {ok} {task.attempts} {name}\n")
