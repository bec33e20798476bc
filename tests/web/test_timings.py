"""How long work takes: handler run times and queue waits measured by
runconsumers, shared through the heartbeats, shown on the topic page and
exported as Prometheus histograms (read back with prometheus_client's own
parser). Bounds are generous: nothing here times the machine."""

from __future__ import annotations

import os
import time
from typing import Any

from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from dqadmin.consumers import ConsumerRegistry
from dqadmin.runner import Runner
from queuecore import Queues
from queuecore.timings import BUCKETS, Histogram, Timings, merged, summary


def _run_handlers(qs: Queues, sleeps: list[float]) -> Runner:
    registry = ConsumerRegistry()

    @registry.consumer("slow")
    def handle(value: Any) -> None:
        time.sleep(value)

    qs.put_many("slow", sleeps)
    time.sleep(0.2)  # a known least wait in the queue
    runner = Runner(qs, list(registry), burst=True, heartbeat_interval=None)
    runner.run()
    return runner


def test_histograms_count_what_was_handled(qs: Queues) -> None:
    runner = _run_handlers(qs, [0.05] * 4 + [0.3] * 2)
    beat = runner.heartbeat()
    h = merged([beat], "slow", "handler")
    assert h.count == 6
    assert 0.05 * 4 + 0.3 * 2 <= h.sum < 5.0
    p50, p99 = h.quantile(0.5), h.quantile(0.99)
    assert p50 is not None and p99 is not None and 0.025 <= p50 <= 0.25 and 0.25 <= p99 <= 1.0
    wait = merged([beat], "slow", "wait")
    assert wait.count == 6 and wait.quantile(0.01) is not None and wait.quantile(0.01) >= 0.1


def test_the_topic_page_shows_percentiles(op_client: Client, qs: Queues) -> None:
    runner = _run_handlers(qs, [0.05, 0.05, 0.05])
    beat = {**runner.heartbeat(), "last_beat": time.time()}
    qs.backend.write_heartbeat(runner.key, beat)
    html = op_client.get("/topics/slow/").content.decode()
    assert 'id="timings"' in html and "Handler run time" in html and "Wait in the queue" in html
    assert "<td>3</td>" in html  # the count of each
    qs.backend.remove_heartbeat(runner.key)


def test_metrics_export_histograms_a_prometheus_parser_reads(op_client: Client, qs: Queues) -> None:
    runner = _run_handlers(qs, [0.05] * 3 + [0.3])
    qs.backend.write_heartbeat(runner.key, {**runner.heartbeat(), "last_beat": time.time()})
    text = op_client.get("/metrics").content.decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    handler = families["dq_handler_duration_seconds"]
    assert handler.type == "histogram"
    samples = {(s.name, s.labels.get("le")): s.value for s in handler.samples if s.labels.get("topic") == "slow"}
    assert samples[("dq_handler_duration_seconds_count", None)] == 4
    assert samples[("dq_handler_duration_seconds_bucket", "+Inf")] == 4
    assert 0.05 * 3 + 0.3 <= samples[("dq_handler_duration_seconds_sum", None)] < 5.0
    under_a_tenth = samples[("dq_handler_duration_seconds_bucket", "0.1")]
    assert 0 <= under_a_tenth <= 3
    assert families["dq_queue_wait_seconds"].type == "histogram"
    qs.backend.remove_heartbeat(runner.key)


def test_processes_add_up_and_old_minutes_drop_out() -> None:
    now = [1_000_000.0]
    a, b = Timings(clock=lambda: now[0]), Timings(clock=lambda: now[0])
    for _ in range(3):
        a.observe("t", "handler", 0.01)
    b.observe("t", "handler", 2.0)
    beats = [{"timings": a.snapshot()}, {"timings": b.snapshot()}, {"timings": "not a dict"}, {}]
    assert merged(beats, "t", "handler").count == 4
    now[0] += 20 * 60
    a.observe("t", "handler", 0.01)
    recent = summary([{"timings": a.snapshot()}], "t", now[0])
    assert recent["handler"]["count"] == 1  # only the last five minutes
    assert summary([], "t", now[0])["wait"] == {"count": 0, "p50": None, "p95": None, "p99": None}


def test_a_histogram_read_back_is_checked() -> None:
    assert Histogram.from_json({"counts": [1] * (len(BUCKETS) + 1), "sum": 1.0}) is not None
    for bad in (None, [], {"counts": [1, 2]}, {"counts": [-1] * (len(BUCKETS) + 1)},
                {"counts": [0] * (len(BUCKETS) + 1), "sum": float("nan")}):
        assert Histogram.from_json(bad) is None


def test_a_delayed_message_waits_from_its_due_time(qs: Queues) -> None:
    registry = ConsumerRegistry()

    @registry.consumer("later")
    def handle(value: Any) -> None:
        pass

    qs.put_delayed("later", "x", 1.5)
    time.sleep(1.7)  # due 1.5 s after its put, then 0.2 s in the queue
    runner = Runner(qs, list(registry), burst=True, heartbeat_interval=None)
    runner.run()
    wait = merged([runner.heartbeat()], "later", "wait")
    # From its put it would be 1.7 s or more.
    assert wait.count == 1 and 0.1 <= wait.sum < 1.5


def test_a_failed_delivery_keeps_who_ran_it_and_for_how_long(qs: Queues) -> None:
    registry = ConsumerRegistry()

    @registry.consumer("doomed", max_attempts=1)
    def handle(value: Any) -> None:
        time.sleep(0.2)
        raise RuntimeError("no such customer")

    mid = qs.put("doomed", "x")
    runner = Runner(qs, list(registry), burst=True, heartbeat_interval=None)
    runner.run()
    msg = qs.peek("doomed", mid)
    (failed,) = msg.errors
    assert msg.state == "failed" and failed["outcome"] == "fail"
    assert failed["reason"] == "RuntimeError: no such customer"
    assert failed["by"].startswith(f"pid {os.getpid()} on ")
    assert 0.2 <= failed["ran"] < 30 and failed["taken_at"] <= failed["at"]
