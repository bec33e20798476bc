"""Load: 3 producers, 3 consumers and an admin process (peek, requeue,
requeue_failed, purge, check) on one directory, payloads from 0 bytes to
1 MiB, for a bounded time. No process may hang (each finishes within its
deadline), nothing acknowledged is lost (the admin purges only the topic
``scratch``, counted by what purge returned), and the counters agree with
the slabs throughout (the admin's check() under the lock) and at the end
(stats against what messages() lists per state)."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from queuecore import Queues
from tests.reliability import report
from tests.reliability.ledger import DEADLINE, Fleet, analyse, consistency, final_drain

OPTIONS = {"fsync_put": True, "slab_size": 2 * 1024 * 1024}
STRESS_SECONDS = float(os.environ.get("DQ_STRESS_LOAD_SECONDS", "60"))


def load(tmp_path: Path, seconds: float, seed: int) -> None:
    rng = random.Random(seed)
    location = str(tmp_path / "queues")
    fleet = Fleet(location, OPTIONS, tmp_path, rng, lifetime=seconds + DEADLINE)
    for n in (1, 2, 3):
        fleet.add(f"p{n}", "produce", topics=["load", "scratch"], weights=[4, 1], big=True,
                  pause=0.004)
        fleet.add(f"c{n}", "consume", topics=["load", "scratch"], plain_topics=["scratch"],
                  batch=n, retry_rate=0.05, fail_rate=0.03, retry_delay=0.05, pause=0.002)
    fleet.add("admin", "admin", topic="load", purge_topic="scratch", pause=0.02)
    try:
        fleet.start_all()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for m in fleet.members.values():
                fleet.check_exit(m)  # nobody died on the way
            time.sleep(0.1)
        t0 = time.monotonic()
        fleet.finish(timeout=DEADLINE)  # a deadlock fails here, with the stacks
        drain_time = time.monotonic() - t0
    finally:
        fleet.stop_everything()
    final_drain(location, OPTIONS, fleet.ledgers / "final.log", ["load", "scratch"])
    v = analyse(fleet.ledgers, purge_topics=frozenset({"scratch"}))
    v.problems += consistency(location, OPTIONS)
    with Queues(location, **OPTIONS) as qs:
        stats = qs.stats()
    assert v.ok(), v.explain()
    assert v.kills == 0 and v.duplicates <= v.lost_leases
    acked_load = v.acknowledged  # every put of the run was acknowledged (no kills)
    assert stats["load"]["enqueued"] + stats["scratch"]["enqueued"] == acked_load, stats
    report.record(f"load[{seconds:g}s]", acknowledged=v.acknowledged, handled=v.handled,
                  lost=v.lost, phantom=v.phantom, corrupt=v.corrupt, duplicates=v.duplicates,
                  bound=v.bound, purged=v.purged, lost_leases=v.lost_leases,
                  drain_s=drain_time)


def test_load_short(tmp_path: Path) -> None:
    load(tmp_path, seconds=5.0, seed=6)


@pytest.mark.stress
def test_load_long(tmp_path: Path) -> None:
    load(tmp_path, seconds=STRESS_SECONDS, seed=int(time.time()))
