"""The management commands, called in-process on memory, slab and redis (the
``queues`` fixture)."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from queuecore import Queues

# The commands that change the queues write the audit log.
pytestmark = pytest.mark.django_db


def run(*args: str, **options: Any) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue()


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


# -- dqproduce ------------------------------------------------------------------
def test_dqproduce_scatters_uuid_messages(queues: Queues) -> None:
    out = run("dqproduce", "50")
    assert "50/50" in out and "Put 50 messages" in out
    stats = queues.stats()
    assert set(stats) <= {"q1", "q2"}
    assert sum(s["ready"] for s in stats.values()) == 50
    values = [m.value for t in stats for m in queues.messages(t, limit=100)]
    assert all(set(v) == {"uuid"} and len(v["uuid"]) == 36 for v in values)
    assert len({v["uuid"] for v in values}) == 50


def test_dqproduce_topics_and_rate(queues: Queues) -> None:
    run("dqproduce", "6", "--topics", "only", "--rate", "1000")
    assert queues.stats()["only"]["ready"] == 6


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-1"], "0 or more"),
        (["5", "--rate", "0"], "--rate"),
        (["5", "--topics", "../x"], "invalid topic name"),
        (["many"], "invalid int value"),
    ],
)
def test_dqproduce_bad_input(queues: Queues, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("dqproduce", *args)


# -- runconsumers -----------------------------------------------------------------
def test_runconsumers_burst_handles_the_demo_messages(
    queues: Queues, caplog: pytest.LogCaptureFixture
) -> None:
    run("dqproduce", "20")
    with caplog.at_level(logging.INFO, logger="dq"):
        out = run("runconsumers", "--burst")
    assert "Handled 20 messages: 20 completed" in out
    stats = queues.stats()
    assert sum(s["completed"] for s in stats.values()) == 20
    assert all(s["in_progress"] == 0 and s["ready"] == 0 for s in stats.values())
    demo = [r.getMessage() for r in caplog.records if r.name == "dq.demo"]
    assert len(demo) == 20
    first = {
        "q1": "Got the message! - {'uuid': '",
        "q2": "Got the message on second queue! - {'uuid': '",
    }
    assert sum(line.startswith(first["q1"]) for line in demo) == stats.get("q1", {}).get(
        "completed", 0
    )
    assert sum(line.startswith(first["q2"]) for line in demo) == stats.get("q2", {}).get(
        "completed", 0
    )
    assert queues.backend.heartbeats() == []  # removed on a clean exit


def test_runconsumers_only_the_topics_named(queues: Queues) -> None:
    queues.put("q1", {"uuid": "a"})
    queues.put("q2", {"uuid": "b"})
    run("runconsumers", "q2", "--burst", "--concurrency", "2")
    assert queues.stats()["q1"]["ready"] == 1
    assert queues.stats()["q2"]["completed"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nobody"], "No consumer is registered for topic 'nobody'; registered: q1, q2"),
        ([".hidden"], "invalid topic name"),
        (["--concurrency", "0"], "at least 1"),
        (["--grace", "-1"], ">= 0"),
    ],
)
def test_runconsumers_bad_input(queues: Queues, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("runconsumers", "--burst", *args)


# -- dqstats ----------------------------------------------------------------------
def test_dqstats_table_and_json(queues: Queues) -> None:
    queues.put_many("q1", [1, 2, 3])
    queues.put("q2", 4)
    queues.take("q1", timeout=0)
    lines = run("dqstats").splitlines()
    header = next(line for line in lines if line.startswith("topic"))
    assert header.split() == [
        "topic",
        "ready",
        "delayed",
        "in_progress",
        "failed",
        "enqueued",
        "completed",
        "retried",
        "consumers",
    ]
    q1 = next(line for line in lines if line.startswith("q1 "))
    assert q1.split()[1:4] == ["2", "0", "1"]
    total = next(line for line in lines if line.startswith("total"))
    assert total.split()[1] == "3"
    data = json.loads(run("dqstats", "--json"))
    assert data["topics"]["q1"]["in_progress"] == 1 and data["totals"]["enqueued"] == 4
    assert data["location"] == queues.location


def test_dqstats_empty(queues: Queues) -> None:
    assert "No topics yet." in run("dqstats")


# -- dqrequeue ----------------------------------------------------------------------
def _fail(queues: Queues, topic: str, n: int) -> list[int]:
    ids = queues.put_many(topic, list(range(n)))
    for task in queues.take_many(topic, n):
        task.fail("bad")
    return ids


def test_dqrequeue_failed_and_ids(queues: Queues) -> None:
    ids = _fail(queues, "q1", 3)
    assert f"Requeued q1#{ids[0]}." in run("dqrequeue", "q1", str(ids[0]))
    assert queues.peek("q1", ids[0]).state == "ready"
    assert "Requeued 2 failed messages of q1." in run("dqrequeue", "q1", "--failed")
    assert queues.stats()["q1"]["failed"] == 0 and queues.stats()["q1"]["ready"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["q1"], "either message ids or --failed"),
        (["q1", "1", "--failed"], "either message ids or --failed"),
        (["q1", "abc"], "Invalid message id 'abc'"),
        (["q1", "0"], "Invalid message id '0'"),
        (["q1", "-3"], "Invalid message id '-3'"),
        (["nope", "--failed"], "No topic named 'nope'"),
        (["bad/name", "1"], "invalid topic name"),
        (["q1", "999"], "No message 999 in topic 'q1'"),
    ],
)
def test_dqrequeue_bad_input(queues: Queues, args: list[str], message: str) -> None:
    _fail(queues, "q1", 1)
    with pytest.raises(CommandError, match=message):
        run("dqrequeue", *args)


def test_dqrequeue_some_unknown_ids_requeue_the_others(queues: Queues) -> None:
    (mid,) = _fail(queues, "q1", 1)
    with pytest.raises(CommandError, match="No message 42"):
        run("dqrequeue", "q1", "42", str(mid))
    assert queues.peek("q1", mid).state == "ready"


# -- dqpurge ---------------------------------------------------------------------------
def test_dqpurge_with_yes(queues: Queues) -> None:
    queues.put_many("q1", [1, 2])
    _fail(queues, "q1", 1)
    assert "Removed 2 messages from q1." in run("dqpurge", "q1", "--yes")
    assert "Removed 1 messages from q1." in run("dqpurge", "q1", "--state", "failed", "--no-input")
    stats = queues.stats()["q1"]
    assert (stats["ready"], stats["failed"]) == (0, 0)
    assert "q1" in queues.topics()  # a purged topic still exists


def test_dqpurge_without_a_tty_needs_yes(queues: Queues, monkeypatch: pytest.MonkeyPatch) -> None:
    queues.put("q1", 1)
    monkeypatch.setattr("sys.stdin", io.StringIO("yes\n"))
    with pytest.raises(CommandError, match="pass --yes"):
        run("dqpurge", "q1")
    assert queues.stats()["q1"]["ready"] == 1


def test_dqpurge_asks_on_a_tty(queues: Queues, monkeypatch: pytest.MonkeyPatch) -> None:
    queues.put_many("q1", [1, 2])
    monkeypatch.setattr("sys.stdin", Tty("no\n"))
    with pytest.raises(CommandError, match="cancelled"):
        run("dqpurge", "q1")
    assert queues.stats()["q1"]["ready"] == 2
    monkeypatch.setattr("sys.stdin", Tty("yes\n"))
    out = run("dqpurge", "q1")
    assert "(2 now)? Type 'yes'" in out and "Removed 2 messages" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--yes"], "No topic named 'nope'"),
        (["../up", "--yes"], "invalid topic name"),
        (["q1", "--state", "in_progress", "--yes"], "invalid choice"),
    ],
)
def test_dqpurge_bad_input(queues: Queues, args: list[str], message: str) -> None:
    queues.put("q1", 1)
    with pytest.raises(CommandError, match=message):
        run("dqpurge", *args)


# -- dqcheck --------------------------------------------------------------------------------
def test_dqcheck_ok(queues: Queues) -> None:
    queues.put("q1", 1)
    assert f"{queues.location}: OK." in run("dqcheck")
    assert "OK." in run("dqcheck", "--fix")


def test_dqcheck_reports_problems(queues: Queues, monkeypatch: pytest.MonkeyPatch) -> None:
    # A damaged store cannot be made in memory://: inject the check's answer.
    answers = iter(
        [
            {"ok": False, "problems": ["q1: torn entry at 4096"], "fixed": []},
            {"ok": True, "problems": [], "fixed": ["q1: truncated torn entry at 4096"]},
            {"ok": True, "problems": [], "fixed": []},
        ]
    )
    monkeypatch.setattr(Queues, "check", lambda self, fix=False: next(answers))
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"1 problem\(s\).*--fix"):
        call_command("dqcheck", stdout=out)
    assert "problem: q1: torn entry at 4096" in out.getvalue()
    fixed = run("dqcheck", "--fix")
    assert "fixed: q1: truncated torn entry at 4096" in fixed and "OK." in fixed


# -- dqpause / dqresume ----------------------------------------------------------------------
def test_dqpause_and_dqresume(queues: Queues) -> None:
    queues.put("q1", 1)
    assert "Paused q1" in run("dqpause", "q1")
    assert queues.paused() == ["q1"]
    assert "Resumed q1." in run("dqresume", "q1")
    assert queues.paused() == []


@pytest.mark.parametrize(("command", "topic", "message"), [
    ("dqpause", "nope", "No topic named 'nope'"),
    ("dqresume", "../x", "invalid topic name"),
])
def test_dqpause_bad_input(queues: Queues, command: str, topic: str, message: str) -> None:
    queues.put("q1", 1)
    with pytest.raises(CommandError, match=message):
        run(command, topic)
