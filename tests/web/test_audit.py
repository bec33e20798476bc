"""The audit log and the message timeline: real actions from the dashboard
and from management commands leave entries naming who did what to how many
messages; the Activity page and the admin list them; a message's page shows
its own history."""

from __future__ import annotations

import io
import time
from html import escape

import pytest
from django.core.management import call_command
from django.test import Client

from dqadmin.audit import os_user
from dqadmin.models import AuditEntry
from queuecore import Queues, identity

from .conftest import fail_one


def entries() -> list[tuple[str, str, str, int]]:
    return [(e.user, e.action, e.topic, e.count) for e in AuditEntry.objects.order_by("id")]


def test_dashboard_actions_are_logged_with_the_user(op_client: Client, qs: Queues) -> None:
    a, b = fail_one(qs, "q1"), fail_one(qs, "q1")
    op_client.post("/topics/q1/requeue/", {"id": [a]})
    op_client.post("/topics/q1/bulk/", {"action": "move", "state": "failed", "to": "repair", "confirm": "yes"})
    op_client.post("/topics/q1/pause/")
    op_client.post("/topics/q1/resume/")
    c = qs.put("q1", {"x": 1})
    op_client.post(f"/topics/q1/messages/{c}/resend/", {"value": '{"x": 2}', "to": "q1"})
    op_client.post("/topics/q1/delete/", {"id": [c], "confirm": "yes"})
    assert entries() == [
        ("olga", "requeue", "q1", 1),
        ("olga", "move", "q1", 1),
        ("olga", "pause", "q1", 0),
        ("olga", "resume", "q1", 0),
        ("olga", "resend", "q1", 1),
        ("olga", "delete", "q1", 1),
    ]
    move = AuditEntry.objects.get(action="move")
    assert move.ids() == [b] and "to repair" in move.detail and move.source == "dashboard"


def test_a_dry_run_and_a_refused_action_log_nothing(op_client: Client, ro_client: Client, qs: Queues) -> None:
    fail_one(qs, "q1")
    op_client.get("/topics/q1/bulk/?action=delete&state=failed")
    ro_client.post("/topics/q1/bulk/", {"action": "delete", "state": "failed", "confirm": "yes"})
    assert entries() == []


def test_commands_are_logged_with_the_os_user(qs: Queues, db: None, dq_settings: dict) -> None:
    fail_one(qs, "q1")
    qs.put("q2", 1)
    out = io.StringIO()
    call_command("dqrequeue", "q1", "--failed", stdout=out)
    call_command("dqpause", "q2", stdout=out)
    call_command("dqresume", "q2", stdout=out)
    call_command("dqpurge", "q2", "--yes", stdout=out)
    user = os_user()
    assert entries() == [(user, "requeue_failed", "q1", 1), (user, "pause", "q2", 0), (user, "resume", "q2", 0),
                         (user, "purge", "q2", 1)]
    assert {e.source for e in AuditEntry.objects.all()} == {"command"}


def test_activity_page_filters_by_user_topic_and_action(op_client: Client, qs: Queues) -> None:
    qs.put("q1", 1)
    qs.put("q2", 1)
    op_client.post("/topics/q1/pause/")
    op_client.post("/topics/q2/pause/")
    op_client.post("/topics/q2/resume/")
    AuditEntry.objects.create(user="root", source="command", action="purge", topic="q1", count=3)
    page = op_client.get("/activity/").content.decode()
    assert page.count("<tr>") == 5 and "olga" in page and "command" in page
    only_q2 = op_client.get("/activity/?topic=q2").content.decode()
    assert only_q2.count("<tr>") == 3
    assert op_client.get("/activity/?action=purge&user=root").content.decode().count("<tr>") == 2
    assert op_client.get("/activity/?user=nobody").content.decode().count("<tr>") == 2  # head + "nothing"
    assert op_client.get("/activity/?before=abc").status_code == 400


def test_activity_is_staff_only(client: Client, ro_client: Client, qs: Queues) -> None:
    assert client.get("/activity/").status_code == 302  # to the login
    assert ro_client.get("/activity/").status_code == 200  # read-only staff may look


def test_the_admin_lists_the_log_read_only(admin_client: Client, qs: Queues, dq_settings: dict) -> None:
    AuditEntry.objects.create(user="root", source="command", action="purge", topic="q1", count=3)
    listing = admin_client.get("/admin/dqadmin/auditentry/")
    assert listing.status_code == 200 and "purge" in listing.content.decode()
    assert admin_client.get("/admin/dqadmin/auditentry/add/").status_code == 403


def test_a_message_timeline_shows_its_history(op_client: Client, qs: Queues) -> None:
    mid = qs.put("q1", "job")
    task = qs.take("q1", timeout=0)
    assert task is not None and task.retry(reason="TimeoutError: upstream")
    task = qs.take("q1", timeout=0)
    assert task is not None and task.fail("ValueError: bad input")
    op_client.post("/topics/q1/requeue/", {"id": [mid]})
    html = op_client.get(f"/topics/q1/messages/{mid}/").content.decode()
    timeline = html.split('id="timeline"', 1)[1].split("</ol>", 1)[0]
    me = escape(identity.label(identity.current()))
    order = [timeline.index(s) for s in (
        f"enqueued</strong> <span class=\"muted\">— by {me}", f"delivery 1 to {me}: retried after",
        f"delivery 2 to {me}: failed after", "requeue by olga",
    )]
    assert order == sorted(order)
    assert "TimeoutError: upstream" in timeline and "ValueError: bad input" in timeline
    assert "without a record" not in timeline


def timeline_of(client: Client, topic: str, mid: int) -> str:
    html = client.get(f"/topics/{topic}/messages/{mid}/").content.decode()
    return html.split('id="timeline"', 1)[1].split("</ol>", 1)[0]


def test_the_timeline_shows_a_running_delivery_and_one_requeued_unsettled(op_client: Client, qs: Queues) -> None:
    mid = qs.put("q1", "job")
    first = qs.take("q1", timeout=0)
    assert first is not None
    qs.requeue("q1", mid)  # an operator takes it back from a stuck consumer
    second = qs.take("q1", timeout=0)
    assert second is not None
    timeline = timeline_of(op_client, "q1", mid)
    assert "delivery 2 to" in timeline and ": running" in timeline and "lease until" in timeline
    # The requeue ended delivery 1 without a settle or a loss record.
    assert "1 delivery without a record" in timeline
    assert "lease extended" not in timeline
    assert second.extend(120)
    timeline = timeline_of(op_client, "q1", mid)
    assert "ago</span> <strong>delivery 2 to" in timeline and "3m 0s ago" not in timeline
    if qs.backend.name != "slab":  # slab entries keep the deadline alone
        assert "lease extended at " in timeline
    assert not first.complete() and second.complete() is True


def test_the_timeline_names_a_lease_that_ran_out(op_client: Client, qs: Queues) -> None:
    with Queues(qs.location, **{**qs.options, "visibility_timeout": 0.2}) as short:
        mid = short.put("q1", "slow")
        assert short.take("q1", timeout=0) is not None
        time.sleep(0.3)
        assert short.stats()["q1"]["ready"] == 1
    timeline = timeline_of(op_client, "q1", mid)
    me = escape(identity.label(identity.current()))
    assert f"delivery 1 to {me}" in timeline and "lease lost" in timeline and "lease expired" in timeline


@pytest.mark.parametrize("bad", ["x" * 151])
def test_activity_bad_filter(op_client: Client, qs: Queues, bad: str) -> None:
    assert op_client.get(f"/activity/?user={bad}").status_code == 400
