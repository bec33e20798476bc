"""The engine's named crash points (``DQ_CRASH_AT``), hit again and again
inside running producers and consumers on one directory, then checked with
the ledger: a crash before a put returned never leaves a half message, a
crash after it never loses the message, a crash in a settle, a move or an
extend never loses or duplicates beyond what the dead consumer held.

A worker arms the point after a random number of its operations (it calls
``queuecore.slab.crashpoints.arm``, which arms what DQ_CRASH_AT arms), so each
run dies at that step of a different operation."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from queuecore import Queues
from tests.reliability import report
from tests.reliability.ledger import (
    Fleet,
    Kill,
    LedgerFile,
    analyse,
    consistency,
    final_drain,
    make_value,
    payload_size,
)

OPTIONS = {"fsync_put": True, "slab_size": 4096}
PUT_POINTS = [
    "append.before_header",
    "append.after_header",
    "put.before_counters",
    "put.after_return",
    "slab.before_rename",
]
SETTLE_POINTS = [
    "complete.after_status",
    "slab.before_delete",
    "move.after_append",
    "move.after_status",
    "extend.after_write",
]
STRESS_REPEATS = int(os.environ.get("DQ_STRESS_CRASH_REPEATS", "12"))


def crash_campaign(tmp_path: Path, repeats: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    location = str(tmp_path / "queues")
    fleet = Fleet(location, OPTIONS, tmp_path, rng)
    fleet.drain_file.touch()  # consumers stop once the topic is empty
    fired: dict[str, int] = {}
    recovery: list[float] = []
    puts = LedgerFile(fleet.ledgers / "setup.log")
    n = 0
    plan = [p for p in PUT_POINTS + SETTLE_POINTS for _ in range(repeats)]
    rng.shuffle(plan)
    try:
        for i, point in enumerate(plan):
            if point in PUT_POINTS:
                m = fleet.add(f"p{i}-{point}", "produce", topics=["rel"], count=40, crash_at=point,
                              crash_after=rng.randrange(0, 25))
            else:
                with Queues(location, **OPTIONS) as qs:  # something to settle
                    for _ in range(30):
                        key = f"setup.{n}"
                        n += 1
                        puts.write("try", "rel", key)
                        mid = qs.put("rel", make_value(key, payload_size(rng) % 1500, rng))
                        puts.write("ack", "rel", mid, key)
                m = fleet.add(f"c{i}-{point}", "consume", topics=["rel"], batch=rng.choice([1, 3]),
                              retry_rate=0.3, fail_rate=0.15, retry_delay=0.0, extend_rate=0.3,
                              crash_at=point, crash_after=rng.randrange(0, 10))
            fleet.start(m)
            rc = fleet.wait(m)
            if rc == -9:
                fleet.kills.append(Kill(m.role, m.ledger, time.time()))
                fired[point] = fired.get(point, 0) + 1
            else:
                fleet.check_exit(m)
            t0 = time.perf_counter()
            with Queues(location, **OPTIONS) as qs:  # the first open after the crash
                qs.stats()
            recovery.append(time.perf_counter() - t0)
            problems = consistency(location, OPTIONS)
            assert not problems, (point, problems)
    finally:
        puts.close()
        fleet.stop_everything()
    final_drain(location, OPTIONS, fleet.ledgers / "final.log", ["rel"])
    v = analyse(fleet.ledgers, fleet.kills)
    assert v.ok(), v.explain()
    report.record(f"crash_points[{seed}]", rounds=len(plan), recovery_s=max(recovery),
                  points_fired=sum(fired.values()), **v.summary())
    return fired


def test_crash_points_short(tmp_path: Path) -> None:
    fired = crash_campaign(tmp_path, repeats=1, seed=6)
    assert set(fired) == set(PUT_POINTS + SETTLE_POINTS), fired


@pytest.mark.stress
def test_crash_points_long(tmp_path: Path) -> None:
    fired = crash_campaign(tmp_path, repeats=STRESS_REPEATS, seed=int(time.time()))
    assert set(fired) == set(PUT_POINTS + SETTLE_POINTS), fired
