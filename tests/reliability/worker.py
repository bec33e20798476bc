"""Worker processes of the reliability campaign.

Run as ``python tests/reliability/worker.py ROLE JSON-ARGS`` (with the
project root on PYTHONPATH). Each writes its ledger (see ledger.py).

- produce: put values on ``topics`` until the ``stop`` file exists (or
  ``count`` puts); ``try`` before each put, ``ack`` after it returned.
- consume: take from ``topics``; mostly handle and complete (``got`` before
  ``complete``, ``done``/``lost`` after), sometimes retry or fail
  (``retry_rate``, ``fail_rate``), and extends some leases first
  (``extend_rate``); ends when the ``drain`` file exists and nothing is
  ready or delayed.
- admin: until the ``drain`` file exists, peek and requeue random messages of
  ``topic``, requeue its failed ones, purge ``purge_topic`` (writing how many
  purge removed) and run ``check()`` (a problem is written to the ledger).

``crash_at`` / ``crash_after``: arm the engine's named crash point
``crash_at`` (queuecore.slab's DQ_CRASH_AT) after that many operations, so the
process kills itself at that step of a later operation.
"""

from __future__ import annotations

import faulthandler
import json
import os
import random
import sys
import threading
import time
from typing import Any

from queuecore import MessageNotFound, Queues
from tests.reliability.ledger import (
    LedgerFile,
    make_value,
    payload_size,
    value_key,
    value_ok,
)


def _arm(a: dict[str, Any], ops: int) -> None:
    if a.get("crash_at") and ops == a.get("crash_after", 0):
        from queuecore.slab import crashpoints

        crashpoints.arm(a["crash_at"])  # the engine's own crash hook


def produce(qs: Queues, a: dict[str, Any], led: LedgerFile, rng: random.Random) -> None:
    topics: list[str] = a["topics"]
    weights = a.get("weights") or [1] * len(topics)
    n = 0
    while not os.path.exists(a["stop"]) and n < a.get("count", 10**9):
        _arm(a, n)
        topic = rng.choices(topics, weights)[0]
        key = f"{a['tag']}.{n}"
        value = make_value(key, payload_size(rng, a.get("big", False)), rng)
        led.write("try", topic, key)
        mid = qs.put(topic, value)
        led.write("ack", topic, mid, key)
        n += 1
        if a.get("pause"):
            time.sleep(rng.uniform(0, a["pause"]))


def fill(qs: Queues, a: dict[str, Any], led: LedgerFile, rng: random.Random) -> None:
    """Put until the disk is full: every failure must be a typed DiskFull,
    raised before the put is acknowledged; stop after ``full`` of them."""
    from queuecore import DiskFull

    n = full = 0
    while full < a.get("full", 3) and not os.path.exists(a["stop"]):
        key = f"{a['tag']}.{n}"
        n += 1
        value = make_value(key, rng.randrange(0, a.get("max_size", 20_000)), rng)
        led.write("try", a["topic"], key)
        try:
            mid = qs.put(a["topic"], value)
        except DiskFull:
            led.write("full", a["topic"], key)
            full += 1
            continue
        led.write("ack", a["topic"], mid, key)


def consume(qs: Queues, a: dict[str, Any], led: LedgerFile, rng: random.Random) -> None:
    topics: list[str] = a["topics"]
    plain = set(a.get("plain_topics", []))  # handled and completed only
    retry_rate, fail_rate = a.get("retry_rate", 0.0), a.get("fail_rate", 0.0)
    me = threading.current_thread().name.replace(" ", "_")
    n = 0
    idle = 0
    while True:
        draining = os.path.exists(a["drain"])  # looked at before the takes
        got_any = False
        for topic in topics:
            # Wait in a take only when the last pass found nothing anywhere.
            tasks = qs.take_many(topic, a.get("batch", 1),
                                 timeout=a.get("wait", 0.05) if idle else 0)
            got_any = got_any or bool(tasks)
            for t in tasks:
                _arm(a, n)
                n += 1
                if a.get("extend_rate") and rng.random() < a["extend_rate"]:
                    t.extend()  # a long handler keeps its lease (none runs out here)
                key = value_key(t.value)
                r = rng.random()
                if topic not in plain and t.attempts < 3 and r < fail_rate:
                    led.write("fail", topic, t.id, key)
                    t.fail("the campaign fails some messages")
                elif topic not in plain and t.attempts < 3 and r < fail_rate + retry_rate:
                    led.write("retry", topic, t.id, key)
                    t.retry(delay=rng.choice([0.0, a.get("retry_delay", 0.05)]))
                else:
                    led.write("got", topic, t.id, key, "ok" if value_ok(t.value) else "bad",
                              t.attempts, me)
                    ok = t.complete()
                    led.write("done" if ok else "lost", topic, t.id, key)
                if a.get("pause"):
                    time.sleep(rng.uniform(0, a["pause"]))
        if got_any:
            idle = 0
            continue
        idle += 1
        if draining:
            stats = qs.stats()
            waiting = sum(stats.get(t, {}).get("ready", 0) + stats.get(t, {}).get("delayed", 0)
                          for t in topics)
            if waiting == 0 and idle >= 3:
                return


def admin(qs: Queues, a: dict[str, Any], led: LedgerFile, rng: random.Random) -> None:
    topic, scratch = a["topic"], a.get("purge_topic")
    ops = 0
    while not os.path.exists(a["drain"]) or ops < 3:
        ops += 1
        stats = qs.stats()
        top = stats.get(topic, {}).get("enqueued", 0)
        if top:
            mid = rng.randint(1, top)
            try:
                qs.peek(topic, mid)
            except MessageNotFound:
                pass
            if rng.random() < 0.5:
                try:
                    qs.requeue(topic, rng.randint(1, top))
                except MessageNotFound:
                    pass
        for m in qs.messages(topic, state="in_progress", limit=5)[:1]:
            if rng.random() < 0.3:
                try:
                    qs.requeue(topic, m.id)  # its consumer's complete() returns False
                except MessageNotFound:
                    pass
        if rng.random() < 0.3:
            qs.requeue_failed(topic)
        if scratch and rng.random() < 0.3:
            led.write("purge", scratch, qs.purge(scratch))
        report = qs.check()
        if not report["ok"]:
            led.write("problem", json.dumps(report["problems"]).replace(" ", "_"))
        time.sleep(rng.uniform(0, a.get("pause", 0.02)))
    qs.requeue_failed(topic)


ROLES = {"fill": fill, "produce": produce, "consume": consume, "admin": admin}


def main() -> None:
    role, a = sys.argv[1], json.loads(sys.argv[2])
    # A hang prints every thread's stack and exits non-zero: the test sees it.
    faulthandler.dump_traceback_later(a.get("deadline", 60.0), exit=True)
    rng = random.Random(a.get("seed"))
    led = LedgerFile(a["ledger"])
    with Queues(a["location"], **a.get("options", {})) as qs:
        ROLES[role](qs, a, led, rng)
    led.close()


if __name__ == "__main__":
    main()
