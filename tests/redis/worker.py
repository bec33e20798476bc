"""A consumer process for the multi-process tests (run as a script).

    python worker.py URL PREFIX TOPIC MODE [VISIBILITY_TIMEOUT]

MODE "consume": take and complete until the topic holds nothing more
(ready, delayed or in progress), printing each completed id on stdout.
MODE "hog": take up to 50 messages, print "held <ids>", and sleep without
completing them (the test kills it with SIGKILL).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from queuecore import Queues  # noqa: E402


def main() -> None:
    url, prefix, topic, mode = sys.argv[1:5]
    vt = float(sys.argv[5]) if len(sys.argv) > 5 else 300.0
    qs = Queues(url, prefix=prefix, visibility_timeout=vt)
    if mode == "hog":
        tasks = qs.take_many(topic, 50, timeout=10)
        print("held", " ".join(str(t.id) for t in tasks), flush=True)
        time.sleep(600)
        return
    while True:
        task = qs.take(topic, timeout=0.5)
        if task is None:
            s = qs.stats()[topic]
            if s["ready"] + s["delayed"] + s["in_progress"] == 0:
                break
            continue
        if task.complete():
            print(task.id, flush=True)
    qs.close()


if __name__ == "__main__":
    main()
