"""The dashboard shows Django tasks as tasks: the Tasks page, the task panel
of a message's page, the task column of a topic's messages, and requeue of a
failed task; on every backend."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from dqadmin.queues import get_queues
from dqadmin.runner import Runner
from dqadmin.tasks import configured_task_consumers
from queuecore import Queues

tasks = pytest.importorskip("tests.tasks.tasks")


def work(*topics: str) -> None:
    """Run the task queues' workers until drained, in this process (not
    through runconsumers, which closes the Queues the views share)."""
    consumers = [c for c in configured_task_consumers() if not topics or c.topic in topics]
    Runner(get_queues(), consumers, burst=True, heartbeat_interval=None).run()


def test_tasks_page_lists_results_by_status(op_client: Client, qs: Queues) -> None:
    ok = tasks.add.enqueue(2, 3)
    bad = tasks.explode.enqueue("kaboom <script>")
    work()
    page = op_client.get("/tasks/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "add(2, 3)" in html and "explode(" in html
    assert "ValueError: kaboom &lt;script&gt;" in html and "<script>" not in html.split("</head>")[1]
    assert html.count('class="state successful"') == 1 and html.count('class="state failed"') == 1
    failed_only = op_client.get("/tasks/?status=FAILED").content.decode()
    assert "explode(" in failed_only and "add(2, 3)" not in failed_only
    mid = bad.id.split(":")[1]
    assert f'name="id" value="{mid}"' in failed_only  # a requeue button for the failed task
    assert f'href="/tasks/{ok.id}/"' in html


def test_requeue_a_failed_task_from_the_tasks_page(op_client: Client, qs: Queues) -> None:
    bad = tasks.explode.enqueue("again")
    work()
    topic, mid, _ = bad.id.split(":")
    answer = op_client.post(f"/topics/{topic}/requeue/", {"id": mid, "next": "/tasks/?status=FAILED"})
    assert answer.status_code == 302 and answer["Location"] == "/tasks/?status=FAILED"
    bad.refresh()
    assert bad.status == "READY"
    assert qs.stats()[topic]["ready"] == 1


def test_a_task_message_page_shows_the_task(op_client: Client, qs: Queues) -> None:
    result = tasks.send.enqueue("a@example.com", subject="hi")
    topic, mid, _ = result.id.split(":")
    waiting = op_client.get(f"/topics/{topic}/messages/{mid}/").content.decode()
    assert 'id="task"' in waiting and "tests.tasks.tasks.send" in waiting
    assert 'class="state ready"' in waiting and result.id in waiting
    assert "&quot;a@example.com&quot;" in waiting and "&quot;subject&quot;: &quot;hi&quot;" in waiting
    work("tasks.emails")
    # Its message may be gone once completed (memory and Redis keep none):
    # the task's own page has everything until its result expires.
    done = op_client.get(f"/tasks/{result.id}/").content.decode()
    assert 'class="state successful"' in done and 'id="task-return"' in done
    assert "&quot;to&quot;: &quot;a@example.com&quot;" in done


@pytest.mark.parametrize(("path", "status"), [("/tasks/nope/", 400), ("/tasks/tasks.default:999:0000abcd/", 404)])
def test_task_page_of_no_task(op_client: Client, qs: Queues, path: str, status: int) -> None:
    assert op_client.get(path).status_code == status


def test_a_failed_task_page_shows_its_traceback(op_client: Client, qs: Queues) -> None:
    result = tasks.explode.enqueue("deep")
    work()
    topic, mid, _ = result.id.split(":")
    html = op_client.get(f"/topics/{topic}/messages/{mid}/").content.decode()
    assert "builtins.ValueError" in html and "raise ValueError(message)" in html


def test_the_topic_page_names_tasks(op_client: Client, qs: Queues) -> None:
    tasks.add.enqueue(7, 8)
    html = op_client.get("/topics/tasks.default/").content.decode()
    assert "add(7, 8)" in html


def test_the_overview_counts_task_topics(op_client: Client, qs: Queues) -> None:
    tasks.add.enqueue(1, 1)
    html = op_client.get("/").content.decode()
    assert "tasks.default" in html


def test_read_only_staff_see_no_requeue(ro_client: Client, qs: Queues) -> None:
    bad = tasks.explode.enqueue("ro")
    work()
    html = ro_client.get("/tasks/?status=FAILED").content.decode()
    assert "explode(" in html and "Requeue" not in html
    topic, mid, _ = bad.id.split(":")
    assert ro_client.post(f"/topics/{topic}/requeue/", {"id": mid}).status_code == 403


@pytest.mark.parametrize("query", ["status=DONE", "before=abc", "before=-5", "before=1e300"])
def test_bad_parameters_are_400(op_client: Client, qs: Queues, query: str) -> None:
    assert op_client.get(f"/tasks/?{query}").status_code == 400


def test_paging_back(op_client: Client, qs: Queues) -> None:
    for i in range(55):
        tasks.add.enqueue(i, 0)
    work()
    first = op_client.get("/tasks/").content.decode()
    older = re.search(r'href="(/tasks/\?before=[^"]+)"', first)
    assert older, "no link to older results"
    second = op_client.get(older.group(1).replace("&amp;", "&")).content.decode()
    assert first.count('class="state successful"') == 50 and second.count('class="state successful"') == 5
