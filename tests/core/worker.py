"""Child processes of tests/core/test_processes.py and test_slab.py.

Run as ``python tests/core/worker.py COMMAND JSON-ARGS``. It imports nothing
but the standard library and ``queuecore``, like a user's plain script.

Commands (args is one JSON object):

- produce: put ``count`` values ``"<tag>-<i>"`` on ``topic``; after each put
  returns, append ``"<id> <value>"`` to the ``ledger`` file (what was acknowledged).
- consume: take (``batch`` at a time) and complete; after each complete that
  returned True, append ``"<id> <value> <attempts>"`` to ``ledger``. Stops
  when the ``done`` file exists and a poll finds nothing ready.
- hold: take ``count`` messages, print their ids as one JSON line, and sleep
  without completing them (the test kills it).
- take_one: print ``"waiting"``, take with ``timeout``, print a JSON line with
  the value, the wall time it returned and the CPU time spent waiting.
- abandon: take ``count`` messages and exit at once without completing them.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any

from queuecore import Queues


def produce(qs: Queues, a: dict[str, Any]) -> None:
    with open(a["ledger"], "a", buffering=1) as ledger:
        for i in range(a["count"]):
            value = f"{a['tag']}-{i}"
            mid = qs.put(a["topic"], value)
            ledger.write(f"{mid} {value}\n")


def consume(qs: Queues, a: dict[str, Any]) -> None:
    with open(a["ledger"], "a", buffering=1) as ledger:
        while True:
            done = os.path.exists(a["done"])  # looked at before the poll
            tasks = qs.take_many(a["topic"], a.get("batch", 1), timeout=0.5)
            if not tasks and done:
                return
            for task in tasks:
                if not task.complete():
                    raise SystemExit(f"complete() of {task.id} returned False")
                ledger.write(f"{task.id} {task.value} {task.attempts}\n")


def hold(qs: Queues, a: dict[str, Any]) -> None:
    tasks: list[Any] = []
    while len(tasks) < a["count"]:
        tasks += qs.take_many(a["topic"], a["count"] - len(tasks), timeout=30)
    print(json.dumps([t.id for t in tasks]), flush=True)
    time.sleep(600)


def take_one(qs: Queues, a: dict[str, Any]) -> None:
    qs.take(a["topic"], timeout=0)  # opens the topic: the wait below is the take's own
    print("waiting", flush=True)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.monotonic()
    task = qs.take(a["topic"], timeout=a["timeout"])
    woke_at = time.time()
    wall = time.monotonic() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    value = None if task is None else task.value
    if task is not None:
        task.complete()
    print(json.dumps({"value": value, "woke_at": woke_at, "wall": wall, "cpu": cpu}), flush=True)


def abandon(qs: Queues, a: dict[str, Any]) -> None:
    tasks = qs.take_many(a["topic"], a["count"], timeout=30)
    print(json.dumps([t.id for t in tasks]), flush=True)
    os._exit(0)  # no close, no complete: like a crash that the kernel cleans up


COMMANDS = {
    "produce": produce,
    "consume": consume,
    "hold": hold,
    "take_one": take_one,
    "abandon": abandon,
}


def main() -> None:
    command, args = sys.argv[1], json.loads(sys.argv[2])
    with Queues(args["location"], **args.get("options", {})) as qs:
        COMMANDS[command](qs, args)
    assert "django" not in sys.modules, "queuecore imported django"


if __name__ == "__main__":
    main()
