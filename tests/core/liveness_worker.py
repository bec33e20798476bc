"""Child process of tests/core/test_liveness.py: a plain script on queuecore.

    python tests/core/liveness_worker.py JSON-ARGS

It takes ``count`` messages of ``topic``, prints their ids as one JSON line,
then waits for a line on stdin (the test may SIGSTOP, SIGCONT or kill it
meanwhile), completes them, and prints what each ``complete()`` returned.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from queuecore import Queues


def main() -> None:
    a: dict[str, Any] = json.loads(sys.argv[1])
    with Queues(a["location"], **a.get("options", {})) as qs:
        tasks: list[Any] = []
        while len(tasks) < a["count"]:
            tasks += qs.take_many(a["topic"], a["count"] - len(tasks), timeout=30)
        print(json.dumps([t.id for t in tasks]), flush=True)
        sys.stdin.readline()
        print(json.dumps([t.complete() for t in tasks]), flush=True)


if __name__ == "__main__":
    main()
