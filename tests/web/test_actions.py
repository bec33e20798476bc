"""Each action's effect on the queue, and its answers to bad input."""

from __future__ import annotations

import time

import pytest
from django.test import Client
from django.urls import reverse

from dqadmin import jobs as jobs_module
from dqadmin.views import _error_key, _group_id
from queuecore import DiskFull, Queues

from .conftest import HTMX, fail_one

pytestmark = pytest.mark.django_db


def test_requeue_selected(op_client: Client, qs: Queues) -> None:
    a, b, c = fail_one(qs, "q1"), fail_one(qs, "q1"), fail_one(qs, "q1")
    back = reverse("dqadmin:topic", args=["q1"]) + "?state=failed&limit=10"
    response = op_client.post(reverse("dqadmin:requeue", args=["q1"]), {"id": [a, c], "next": back})
    assert response.status_code == 302 and response["Location"] == back
    assert [qs.peek("q1", m).state for m in (a, b, c)] == ["ready", "failed", "ready"]
    page = op_client.get(back)
    assert b"Requeued 2 messages of q1." in page.content


def test_requeue_refuses_an_outside_next(op_client: Client, qs: Queues) -> None:
    mid = fail_one(qs, "q1")
    response = op_client.post(reverse("dqadmin:requeue", args=["q1"]), {"id": mid, "next": "https://evil.example/"})
    assert response["Location"] == reverse("dqadmin:topic", args=["q1"])


def test_requeue_an_in_progress_message(op_client: Client, qs: Queues) -> None:
    mid = qs.put("q1", 1)
    task = qs.take("q1", timeout=0)
    op_client.post(reverse("dqadmin:requeue", args=["q1"]), {"id": mid})
    assert qs.peek("q1", mid).state == "ready"
    assert task is not None and task.complete() is False  # its lease is gone


@pytest.mark.parametrize("ids", [[], ["x"], ["0"], ["1", "-2"], [str(i) for i in range(1, 1003)]])
def test_bad_ids_are_400(op_client: Client, qs: Queues, ids: list[str]) -> None:
    qs.put("q1", 1)
    for name in ("dqadmin:requeue", "dqadmin:delete"):
        response = op_client.post(reverse(name, args=["q1"]), {"id": ids, "confirm": "yes"})
        assert response.status_code == 400, (name, ids[:3])
    assert qs.stats()["q1"]["ready"] == 1


def test_missing_ids_are_reported_not_fatal(op_client: Client, qs: Queues) -> None:
    mid = fail_one(qs, "q1")
    op_client.post(reverse("dqadmin:requeue", args=["q1"]), {"id": [mid, 777]})
    assert qs.peek("q1", mid).state == "ready"
    assert b"Gone already: 777" in op_client.get(reverse("dqadmin:overview")).content


def test_delete_confirms_first(op_client: Client, qs: Queues) -> None:
    ids = qs.put_many("q1", ["a", "b", "c"])
    url = reverse("dqadmin:delete", args=["q1"])
    # The selection form posts without confirm: that only asks.
    ask = op_client.post(url, {"id": ids[:2]})
    assert ask.status_code == 200 and b"Delete 2 messages of q1?" in ask.content
    assert qs.stats()["q1"]["ready"] == 3
    done = op_client.post(url, {"id": ids[:2], "confirm": "yes"})
    assert done.status_code == 302
    assert [m.id for m in qs.messages("q1")] == [ids[2]]


def test_delete_from_the_message_page_goes_back_to_the_topic(op_client: Client, qs: Queues) -> None:
    mid = qs.put("q1", "a")
    page = reverse("dqadmin:message", args=["q1", mid])
    response = op_client.post(reverse("dqadmin:delete", args=["q1"]), {"id": mid, "confirm": "yes", "next": page})
    assert response["Location"] == reverse("dqadmin:topic", args=["q1"])
    assert op_client.get(page).status_code == 404


def test_requeue_all_failed(op_client: Client, qs: Queues) -> None:
    ids = [fail_one(qs, "q1") for _ in range(3)]
    op_client.post(reverse("dqadmin:requeue_failed", args=["q1"]))
    assert {qs.peek("q1", m).state for m in ids} == {"ready"}
    assert qs.stats()["q1"]["failed"] == 0


def test_purge_confirms_then_removes_ready_and_delayed(op_client: Client, qs: Queues) -> None:
    qs.put_many("q1", [1, 2])
    failed = fail_one(qs, "q1")
    url = reverse("dqadmin:purge", args=["q1"])
    ask = op_client.get(url)
    assert b"removes the <strong>2</strong> ready and delayed messages" in ask.content
    assert qs.stats()["q1"]["ready"] == 2
    op_client.post(url)
    stats = qs.stats()["q1"]
    assert (stats["ready"], stats["failed"]) == (0, 1)
    assert "q1" in qs.topics()
    op_client.post(url, {"state": "failed"})
    assert qs.stats()["q1"]["failed"] == 0
    assert op_client.get(reverse("dqadmin:message", args=["q1", failed])).status_code == 404


def test_purge_bad_state_is_400(op_client: Client, qs: Queues) -> None:
    qs.put("q1", 1)
    assert op_client.post(reverse("dqadmin:purge", args=["q1"]), {"state": "in_progress"}).status_code == 400
    assert op_client.get(reverse("dqadmin:purge", args=["q1"]) + "?state=all").status_code == 400
    assert qs.stats()["q1"]["ready"] == 1


def test_requeue_a_group_of_failed(op_client: Client, qs: Queues) -> None:
    boom = [fail_one(qs, "q1", "ValueError: boom"), fail_one(qs, "q2", "ValueError: boom")]
    slow = fail_one(qs, "q1", "TimeoutError: slow")
    group = _group_id(_error_key(qs.peek("q1", boom[0])))
    op_client.post(reverse("dqadmin:failed_requeue"), {"group": group})
    assert [qs.peek("q1", boom[0]).state, qs.peek("q2", boom[1]).state] == ["ready", "ready"]
    assert qs.peek("q1", slow).state == "failed"
    assert op_client.post(reverse("dqadmin:failed_requeue"), {"group": "nothex"}).status_code == 400


def test_demo_producer_runs_in_the_background(op_client: Client, qs: Queues) -> None:
    response = op_client.post(reverse("dqadmin:demo_start"), {"count": 50, "topics": "d1, d2", "rate": 0})
    assert response.status_code == 302
    job = jobs_module.jobs.all()[0]
    deadline = time.monotonic() + 5
    while job.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job.state == "finished" and job.done == 50
    stats = qs.stats()
    assert stats["d1"]["enqueued"] + stats["d2"]["enqueued"] == 50
    bar = op_client.get(reverse("dqadmin:demo_job", args=[job.id])).content.decode()
    assert 'data-state="finished"' in bar and "hx-trigger" not in bar and "width: 100%" in bar


def test_demo_producer_with_htmx_returns_its_progress_bar(op_client: Client, qs: Queues) -> None:
    response = op_client.post(reverse("dqadmin:demo_start"), {"count": 1000, "topics": "d1", "rate": 100}, headers=HTMX)
    html = response.content.decode()
    assert response.status_code == 200 and html.startswith('<div class="job running"')
    assert 'hx-trigger="every 500ms"' in html
    job = jobs_module.jobs.all()[0]
    cancel = op_client.post(reverse("dqadmin:demo_cancel", args=[job.id]), headers=HTMX)
    assert cancel.status_code == 200
    deadline = time.monotonic() + 5
    while job.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job.state == "cancelled" and job.done < 1000


@pytest.mark.parametrize(
    "data",
    [
        {"count": 0, "topics": "q1", "rate": 0},
        {"count": "many", "topics": "q1", "rate": 0},
        {"count": 5, "topics": "../etc", "rate": 0},
        {"count": 5, "topics": " , ", "rate": 0},
        {"count": 5, "topics": "q1", "rate": -1},
    ],
)
def test_demo_form_errors(op_client: Client, qs: Queues, data: dict) -> None:
    response = op_client.post(reverse("dqadmin:demo_start"), data)
    assert response.status_code == 400 and b"errorlist" in response.content
    htmx = op_client.post(reverse("dqadmin:demo_start"), data, headers=HTMX)
    assert htmx.status_code == 200 and htmx["HX-Retarget"] == "#demo-form"
    assert qs.topics() == []


def test_unknown_job_is_404(op_client: Client, qs: Queues) -> None:
    assert op_client.get(reverse("dqadmin:demo_job", args=["999999"])).status_code == 404
    assert op_client.get(reverse("dqadmin:demo_job", args=["x"])).status_code == 400
    # A polling bar whose job this process does not know stops polling (htmx's 286).
    assert op_client.get(reverse("dqadmin:demo_job", args=["999999"]), headers=HTMX).status_code == 286


def test_disk_full_is_503(op_client: Client, qs: Queues, monkeypatch: pytest.MonkeyPatch) -> None:
    # A full disk cannot be produced for real in a unit test: inject it.
    fail_one(qs, "q1")

    def full(self: Queues, topic: str) -> int:
        raise DiskFull("/var/queues", "no space left")

    monkeypatch.setattr(Queues, "requeue_failed", full)
    response = op_client.post(reverse("dqadmin:requeue_failed", args=["q1"]))
    assert response.status_code == 503
    assert b"The disk holding the queues is full" in response.content
