"""Named crash points for the reliability tests: with ``DQ_CRASH_AT=<name>``
in the environment, or after ``arm(name)``, the process kills itself
(SIGKILL) at that step. A step is marked where it happens, in its own
module, by ``if CRASH_AT: crash("<name>")``: in a normal run CRASH_AT is an
empty set, and the mark costs one truth test.

Knows nothing of the engine, so that every module of it can import it.
"""

from __future__ import annotations

import os

# The armed point (at most one). Changed in place only, never rebound:
# every module holds this same set under its own name.
CRASH_AT: set[str] = {os.environ["DQ_CRASH_AT"]} if os.environ.get("DQ_CRASH_AT") else set()


def crash(point: str) -> None:
    if point in CRASH_AT:
        os.kill(os.getpid(), 9)


def arm(point: str) -> None:
    """Arm ``point`` in this process at run time (in place of any other)."""
    CRASH_AT.clear()
    CRASH_AT.add(point)
