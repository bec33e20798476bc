"""Random kill -9 campaign: producers, consumers and a ``runconsumers``
process on one location (a slab directory, or a Redis server); a random
subset is killed at random moments and restarted, round after round. Nothing
acknowledged may be lost, nothing handled may be a phantom or corrupt, and
duplicates stay within what the killed consumers held. On Redis a killed
consumer's messages come back once its liveness record lapses
(``owner_timeout``)."""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from queuecore import Queues
from tests.core.conftest import REDIS_URL, skip_or_fail_without_redis
from tests.reliability import report
from tests.reliability.ledger import Fleet, Verdict, analyse, consistency, final_drain

STRESS_ROUNDS = int(os.environ.get("DQ_STRESS_ROUNDS", "60"))
SLAB_OPTIONS = {"fsync_put": True, "slab_size": 64 * 1024}


@pytest.fixture(params=["slab", pytest.param("redis", marks=pytest.mark.redis)])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(backend, location, options) of one campaign."""
    if request.param == "slab":
        yield "slab", str(tmp_path / "queues"), dict(SLAB_OPTIONS)
        return
    skip_or_fail_without_redis()
    prefix = f"dqkill-{uuid.uuid4().hex[:8]}"
    yield "redis", REDIS_URL, {"prefix": prefix, "owner_timeout": 1.0}
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}*", count=1000):
        client.delete(key)


def campaign(
    tmp_path: Path, rounds: int, seed: int, where: tuple[str, str, dict[str, Any]], runconsumers: bool = True
) -> Verdict:
    backend, location, OPTIONS = where
    rng = random.Random(seed)
    fleet = Fleet(location, OPTIONS, tmp_path, rng, lifetime=rounds * 0.7 + 60)
    for n in (1, 2):
        fleet.add(f"p{n}", "produce", topics=["rel"], pause=0.003)
        fleet.add(f"c{n}", "consume", topics=["rel"], batch=n * 2 - 1, retry_rate=0.05,
                  fail_rate=0.02, retry_delay=0.05, pause=0.002)
    if runconsumers:
        fleet.add("rc", "runconsumers", topics=["rel"], concurrency=2)
    try:
        fleet.start_all()
        fleet.wait_until_working()
        for _ in range(rounds):
            time.sleep(rng.uniform(0.1, 0.7))  # a random moment, not a timed check
            fleet.kill_some()
        # Last, everyone at once (a crash of the whole application), then
        # time the first open of the crashed directory.
        for m in fleet.members.values():
            fleet.kill(m)
        t0 = time.perf_counter()
        with Queues(location, **OPTIONS) as qs:
            qs.stats()
        recovery = time.perf_counter() - t0
        fleet.start_all()
        time.sleep(0.3)
        fleet.finish()
    finally:
        fleet.stop_everything()
    final_drain(location, OPTIONS, fleet.ledgers / "final.log", ["rel"])
    verdict = analyse(fleet.ledgers, fleet.kills)
    verdict.problems += consistency(location, OPTIONS)
    with Queues(location, **OPTIONS) as qs:
        s = qs.stats()["rel"]
        if s["ready"] or s["in_progress"] or s["delayed"] or s["failed"]:
            verdict.problems.append(f"left over after the drain: {s}")
    rc_handled = sum(len(p.read_text().splitlines()) for p in fleet.ledgers.glob("rc-*.log"))
    report.record(
        f"kill9[{backend}, {seed}]", rounds=rounds, starts=fleet.starts, recovery_s=recovery,
        runconsumers_handled=rc_handled,
        **verdict.summary(),
    )
    return verdict


def test_kill9_campaign_short(tmp_path: Path, where: tuple[str, str, dict[str, Any]]) -> None:
    v = campaign(tmp_path, rounds=3, seed=6, where=where)
    assert v.ok(), v.explain()
    assert v.acknowledged > 0 and v.kills >= 3


@pytest.mark.stress
def test_kill9_campaign_long(tmp_path: Path, where: tuple[str, str, dict[str, Any]]) -> None:
    v = campaign(tmp_path, rounds=STRESS_ROUNDS, seed=int(time.time()), where=where)
    assert v.ok(), v.explain()
