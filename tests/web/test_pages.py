"""What the pages show: counters, fragments, the message browser, the
message page (escaped, truncated), the failed groups, bad input."""

from __future__ import annotations

import os
import re
import time

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from dqadmin import views
from dqadmin.queues import get_queues
from queuecore import Queues

from .conftest import HTMX, fail_one

pytestmark = pytest.mark.django_db


def test_overview_page_and_fragment(op_client: Client, qs: Queues) -> None:
    qs.put_many("q1", [1, 2, 3])
    qs.put("q2", 1)
    page = op_client.get(reverse("dqadmin:overview"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "<html" in html and 'id="live"' in html
    assert re.search(r'id="topic-q1">.*?data-col="ready">3<', html, re.S)
    assert "every 1s [document.visibilityState === &#x27;visible&#x27;]" in html
    assert "htmx" in html and "://" not in re.findall(r'<script src="([^"]+)"', html)[0]  # vendored, no CDN
    fragment = op_client.get(reverse("dqadmin:overview"), headers=HTMX)
    body = fragment.content.decode()
    assert body.startswith('<div id="live"') and "<html" not in body
    assert "q2" in body


def test_overview_interval_choice(op_client: Client, qs: Queues) -> None:
    html = op_client.get(reverse("dqadmin:overview") + "?every=5").content.decode()
    assert "every 5s" in html and '<option value="5" selected>' in html
    off = op_client.get(reverse("dqadmin:overview") + "?every=0").content.decode()
    assert "hx-trigger" not in off.split('id="live"')[1].split(">")[0]


def test_backlog_without_consumer_warning(op_client: Client, qs: Queues) -> None:
    qs.put("lonely", 1)
    html = op_client.get(reverse("dqadmin:overview")).content.decode()
    assert "no live consumer" in html
    qs.backend.write_heartbeat(
        "h:1",
        {"host": "h", "pid": 1, "topics": ["lonely"], "handled": 7, "failed": 1,
         "started": __import__("time").time() - 90, "last_beat": __import__("time").time(), "concurrency": 2},
    )
    html = op_client.get(reverse("dqadmin:overview")).content.decode()
    assert "no live consumer" not in html
    assert "h:1" in html and "1m 30s" in html


def test_storage_panel(op_client: Client, qs: Queues, backend_name: str) -> None:
    qs.put("q1", "x" * 100)
    response = op_client.get(reverse("dqadmin:overview"))
    html = response.content.decode()
    storage = response.context["stats"]["storage"]
    assert "Dropped by recovery" in html and f"<dt>Backend</dt><dd>{backend_name}</dd>" in html
    assert storage["dropped"] == 0 and storage["bytes"] > 100
    if backend_name == "slab":
        # Files on a disk: slabs and the free space of the disk holding them.
        assert storage["num_slabs"] >= 1 and storage["total"] > 0
        assert re.search(r"<dt>Slabs</dt><dd>[1-9][0-9]* \([0-9]+ active\)</dd>", html)
        assert re.search(r"<dt>Free disk</dt><dd>[^<–]+ of [^<]+</dd>", html)
    else:
        # No slabs and no disk of this process to measure (by design).
        assert storage["num_slabs"] == 0 and "total" not in storage
        assert "<dt>Slabs</dt><dd>0 (0 active)</dd>" in html
        assert "<dt>Free disk</dt><dd>–</dd>" in html


def test_topic_page_counts_and_fragments(op_client: Client, qs: Queues) -> None:
    qs.put_many("q1", ["a", "b", "c"])
    qs.take("q1", timeout=0)
    url = reverse("dqadmin:topic", args=["q1"])
    html = op_client.get(url).content.decode()
    assert 'data-count="ready">2<' in html and 'data-count="in_progress">1<' in html
    live = op_client.get(url, headers={**HTMX, "HX-Target": "topic-live"}).content.decode()
    assert live.startswith('<div id="topic-live"') and 'data-count="ready">2<' in live
    table = op_client.get(url + "?state=ready", headers={**HTMX, "HX-Target": "messages"}).content.decode()
    assert table.startswith('<div id="messages"')
    # The table stops polling while a row is selected.
    assert "!document.querySelector(&#x27;#messages input.pick:checked&#x27;)" in table
    assert table.count('name="id"') == 2


def test_in_progress_rows_show_the_lease(op_client: Client, qs: Queues) -> None:
    mid = qs.put("q1", "a")
    qs.take("q1", timeout=0)
    lease = qs.peek("q1", mid).lease
    assert lease is not None and lease.owner
    html = op_client.get(reverse("dqadmin:topic", args=["q1"]) + "?state=in_progress").content.decode()
    assert lease.owner in html and "left" in html
    # The owner names this process (slab: "pid N on host"; memory, redis: "host:pid").
    assert str(os.getpid()) in lease.owner


def test_keyset_paging_and_filters_in_the_url(op_client: Client, qs: Queues) -> None:
    qs.put_many("q1", list(range(7)))
    url = reverse("dqadmin:topic", args=["q1"])
    first = op_client.get(url + "?state=ready&limit=3")
    assert [m.id for m in first.context["rows"]] == [1, 2, 3]
    assert first.context["next_url"] == url + "?state=ready&limit=3&every=1&after=3"
    second = op_client.get(first.context["next_url"])
    assert [m.id for m in second.context["rows"]] == [4, 5, 6]
    third = op_client.get(second.context["next_url"])
    assert [m.id for m in third.context["rows"]] == [7]
    assert third.context["next_url"] is None
    assert third.context["first_url"] == url + "?state=ready&limit=3&every=1"


def test_failed_state_filter(op_client: Client, qs: Queues) -> None:
    qs.put("q1", "fine")
    mid = fail_one(qs, "q1")
    response = op_client.get(reverse("dqadmin:topic", args=["q1"]) + "?state=failed")
    assert [m.id for m in response.context["rows"]] == [mid]
    assert b"ValueError: boom" in response.content


@pytest.mark.parametrize(
    "query",
    ["state=bogus", "after=x", "after=-1", "after=" + "9" * 5000, "limit=0", "limit=100000", "limit=1e3", "every=3", "every=x"],
)
def test_bad_browser_params_are_400(op_client: Client, qs: Queues, query: str) -> None:
    qs.put("q1", 1)
    assert op_client.get(reverse("dqadmin:topic", args=["q1"]) + "?" + query).status_code == 400


@pytest.mark.parametrize("topic", ["nope", "..evil", ".hidden", "a" * 101, "sp ace"])
def test_unknown_or_invalid_topic_is_404(op_client: Client, qs: Queues, topic: str) -> None:
    qs.put("q1", 1)
    for name, args in [
        ("dqadmin:topic", [topic]),
        ("dqadmin:message", [topic, 1]),
        ("dqadmin:message_raw", [topic, 1]),
        ("dqadmin:purge", [topic]),
    ]:
        assert op_client.get(reverse(name, args=args)).status_code == 404
    assert op_client.post(reverse("dqadmin:requeue", args=[topic]), {"id": 1}).status_code == 404
    assert "nope" not in qs.topics()  # looking never creates a topic


@pytest.mark.parametrize(
    "mid,status",
    [("abc", 400), ("0", 400), ("-1", 400), ("1.5", 400), ("²", 400), ("1" * 5000, 400), ("99", 404), ("9" * 19, 404)],
)
def test_bad_message_ids(op_client: Client, qs: Queues, mid: str, status: int) -> None:
    qs.put("q1", 1)
    assert op_client.get(reverse("dqadmin:message", args=["q1", mid])).status_code == status
    assert op_client.get(reverse("dqadmin:message_raw", args=["q1", mid])).status_code == status


def test_message_page(op_client: Client, qs: Queues) -> None:
    mid = fail_one(qs, "q1", "KeyError: 'sku'", traceback='Traceback (most recent call last):\n  File "x.py"\nKeyError: sku')
    response = op_client.get(reverse("dqadmin:message", args=["q1", mid]))
    html = response.content.decode()
    assert response.status_code == 200
    assert "&quot;n&quot;: &quot;to fail&quot;" in html  # pretty JSON, escaped
    assert "81 a1 6e a7 74 6f 20 66" in html  # the msgpack bytes as hex
    assert "KeyError: &#x27;sku&#x27;" in html and "Traceback (most recent call last)" in html
    assert 'class="state failed"' in html


def test_script_payload_is_escaped(op_client: Client, qs: Queues) -> None:
    evil = "<script>alert('x')</script>"
    mid = qs.put("q1", {"html": evil, evil: 1})
    fail_one(qs, "q1", reason=evil, traceback=evil)
    for url in (
        reverse("dqadmin:message", args=["q1", mid]),
        reverse("dqadmin:message", args=["q1", mid + 1]),
        reverse("dqadmin:topic", args=["q1"]),
        reverse("dqadmin:topic", args=["q1"]) + "?state=failed",
        reverse("dqadmin:failed"),
    ):
        html = op_client.get(url).content.decode()
        assert "<script>alert" not in html, url
        assert "&lt;script&gt;alert" in html, url


def test_undecodable_payload(op_client: Client, qs: Queues) -> None:
    qs.backend.put("q1", [b"\xc1\xc1"], None)  # 0xc1 is never valid msgpack
    html = op_client.get(reverse("dqadmin:message", args=["q1", 1])).content.decode()
    assert "cannot be decoded" in html and "c1 c1" in html
    assert op_client.get(reverse("dqadmin:topic", args=["q1"])).status_code == 200


def test_large_payload_is_truncated(op_client: Client, qs: Queues) -> None:
    mid = qs.put("q1", {"blob": "y" * (views.PREVIEW_CHARS * 2)})
    url = reverse("dqadmin:message", args=["q1", mid])
    short = op_client.get(url)
    assert short.context["value_cut"] and short.context["hex_cut"]
    assert len(short.context["pretty"]) == views.PREVIEW_CHARS
    assert b"Show all" in short.content and f"{url}?full=1".encode() in short.content
    full = op_client.get(url + "?full=1")
    assert not full.context["value_cut"] and not full.context["hex_cut"]
    assert full.content.count(b"y") > views.PREVIEW_CHARS * 2


def test_raw_download(op_client: Client, qs: Queues) -> None:
    mid = qs.put("q1", b"\x00\x01<b>")
    response = op_client.get(reverse("dqadmin:message_raw", args=["q1", mid]))
    assert response["Content-Type"] == "application/octet-stream"
    assert "attachment" in response["Content-Disposition"]
    assert response.content == qs.peek("q1", mid).raw


def test_failed_page_groups_by_error(op_client: Client, qs: Queues) -> None:
    fail_one(qs, "q1", "ValueError: boom")
    fail_one(qs, "q1", "ValueError: boom\nmore detail")
    fail_one(qs, "q2", "ValueError: boom")
    fail_one(qs, "q2", "TimeoutError: slow")
    response = op_client.get(reverse("dqadmin:failed"))
    groups = response.context["groups"]
    assert [(g["key"], g["count"], g["topic_list"]) for g in groups] == [
        ("ValueError: boom", 3, [("q1", 2), ("q2", 1)]),
        ("TimeoutError: slow", 1, [("q2", 1)]),
    ]


def test_demo_page(op_client: Client, qs: Queues) -> None:
    html = op_client.get(reverse("dqadmin:demo")).content.decode()
    assert 'name="count"' in html and 'name="topics"' in html and 'name="rate"' in html


def test_completed_messages_per_backend(op_client: Client, qs: Queues, backend_name: str) -> None:
    """By design the slab backend keeps a completed message readable until
    its slab is deleted (the slab still holds an unfinished one here);
    memory and Redis forget it at once. The counters agree everywhere."""
    done, waiting = qs.put_many("q1", ["done", "waiting"])
    task = qs.take("q1", timeout=0)
    assert task is not None and task.id == done and task.complete()
    topic = reverse("dqadmin:topic", args=["q1"])
    live = op_client.get(topic, headers={**HTMX, "HX-Target": "topic-live"}).content.decode()
    assert 'data-count="completed">1<' in live and 'data-count="ready">1<' in live
    assert [m.id for m in op_client.get(topic + "?state=ready").context["rows"]] == [waiting]
    completed_rows = op_client.get(topic + "?state=completed").context["rows"]
    all_rows = op_client.get(topic).context["rows"]
    page = op_client.get(reverse("dqadmin:message", args=["q1", done]))
    if backend_name == "slab":
        assert [(m.id, m.state) for m in completed_rows] == [(done, "completed")]
        assert page.status_code == 200 and 'class="state completed"' in page.content.decode()
        assert b">Requeue</button>" not in page.content  # nothing to requeue once done
        timeline = page.content.decode().split('id="timeline"', 1)[1].split("</ol>", 1)[0]
        assert "delivery 1: completed" in timeline and "without a record" not in timeline
    else:
        assert completed_rows == []
        assert page.status_code == 404
    # "all" lists what is there now: never a completed message.
    assert [m.id for m in all_rows] == [waiting]


def test_delayed_messages(op_client: Client, qs: Queues) -> None:
    mid = qs.put("q1", "later")
    qs.put("q1", "now")
    task = qs.take("q1", timeout=0)
    assert task is not None and task.id == mid and task.retry(delay=600)
    topic = reverse("dqadmin:topic", args=["q1"])
    live = op_client.get(topic, headers={**HTMX, "HX-Target": "topic-live"}).content.decode()
    assert 'data-count="delayed">1<' in live and 'data-count="ready">1<' in live
    delayed = op_client.get(topic + "?state=delayed")
    assert [(m.id, m.state, m.attempts) for m in delayed.context["rows"]] == [(mid, "delayed", 1)]
    assert re.search(r"due in (9|10)m", delayed.content.decode())
    html = op_client.get(reverse("dqadmin:message", args=["q1", mid])).content.decode()
    assert 'class="state delayed"' in html and "<dt>Due</dt>" in html and ">Requeue</button>" in html
    # Requeue makes it ready at once; purge counts and removes ready and delayed.
    op_client.post(reverse("dqadmin:requeue", args=["q1"]), {"id": mid})
    assert qs.peek("q1", mid).state == "ready" and qs.stats()["q1"]["delayed"] == 0
    task = qs.take("q1", timeout=0)
    assert task is not None and task.retry(delay=600)
    assert b"removes the <strong>2</strong> ready and delayed messages" in op_client.get(
        reverse("dqadmin:purge", args=["q1"])
    ).content
    op_client.post(reverse("dqadmin:purge", args=["q1"]))
    stats = qs.stats()["q1"]
    assert (stats["ready"], stats["delayed"], stats["retried"]) == (0, 0, 2)


def test_expired_lease_per_backend(op_client: Client, dq_settings: dict, backend_name: str) -> None:
    """A lease past its deadline shows the message ready again at once on
    every backend (the counts tell the truth without waiting for a take).
    A late complete is refused on all."""
    options = {**dq_settings.get("OPTIONS", {}), "visibility_timeout": 0.2}
    with override_settings(DQ={**dq_settings, "OPTIONS": options}):
        queues = get_queues()
        mid = queues.put("q1", "slow")
        task = queues.take("q1", timeout=0)
        assert task is not None
        time.sleep(0.4)
        topic = reverse("dqadmin:topic", args=["q1"])
        rows = op_client.get(topic).context["rows"]
        in_progress = op_client.get(topic + "?state=in_progress").content.decode()
        assert [(m.id, m.state) for m in rows] == [(mid, "ready")]
        assert "overdue" not in in_progress and f"#{mid}<" not in in_progress
        assert task.complete() is False
        again = queues.take("q1", timeout=0)
        assert again is not None and again.id == mid and again.attempts == 2 and again.complete()


def test_a_lease_shows_its_owner_deadline_and_renewal(op_client: Client, qs: Queues) -> None:
    mid = qs.put("q1", "held")
    task = qs.take("q1", timeout=0)
    assert task is not None
    assert task.extend(120)
    page = op_client.get("/topics/q1/?state=in_progress").content.decode()
    assert f"#{mid}<" in page and "left" in page and "renewed" in page
    detail = op_client.get(f"/topics/q1/messages/{mid}/").content.decode()
    assert "held by" in detail and ("last extended" in detail or "taken or last extended" in detail)
    task.complete()
