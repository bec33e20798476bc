"""The operator's controls on the topic and failed pages: search and
filters, bulk actions on everything that matches (a dry run first), move to
another topic, edit and resend; on every backend."""

from __future__ import annotations

import importlib
import re
import threading
import time

import pytest
from django.test import Client

from dqadmin.views import pages
from queuecore import Queues, identity

from .conftest import fail_one


def summary(html: str) -> str:
    found = re.search(r'<p class="note" id="search-summary">(.*?)</p>', html, re.S)
    assert found, "no search summary"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", found.group(1))).strip()


def ids_on(html: str) -> list[int]:
    return [int(m) for m in re.findall(r'name="id" value="(\d+)"', html)]


# -- search --------------------------------------------------------------------------
def test_search_finds_a_substring_of_the_value_in_any_case(op_client: Client, qs: Queues) -> None:
    ids = qs.put_many("q1", [{"email": "Alice@Example.com"}, {"email": "bob@example.com"}, "alice again"])
    html = op_client.get("/topics/q1/?q=ALICE").content.decode()
    assert ids_on(html) == [ids[0], ids[2]]
    assert "2 matches" in summary(html) and "that is the end" in summary(html)
    assert 'value="ALICE"' in html  # the box keeps the query: the view can be bookmarked


def test_search_looks_in_the_errors_of_failed_messages(op_client: Client, qs: Queues) -> None:
    fail_one(qs, "q1", reason="TimeoutError: smtp.example.com")
    other = fail_one(qs, "q1", reason="KeyError: 'name'")
    html = op_client.get("/topics/q1/?state=failed&q=keyerror").content.decode()
    assert ids_on(html) == [other]
    failed_page = op_client.get("/failed/?q=smtp").content.decode()
    assert "TimeoutError: smtp.example.com" in failed_page and "KeyError" not in failed_page


def test_filters_on_attempts_and_enqueue_time(op_client: Client, qs: Queues) -> None:
    tried = qs.put("q1", "tried once")
    task = qs.take("q1", timeout=0)
    assert task is not None and task.retry()
    fresh = qs.put("q1", "never taken")
    html = op_client.get("/topics/q1/?min_attempts=1").content.decode()
    assert ids_on(html) == [tried]
    assert ids_on(op_client.get("/topics/q1/?max_attempts=0").content.decode()) == [fresh]
    assert ids_on(op_client.get("/topics/q1/?since=1h").content.decode()) == [tried, fresh]
    assert ids_on(op_client.get("/topics/q1/?until=2000-01-01").content.decode()) == []


def test_a_search_is_bounded_and_says_how_far_it_got(
    op_client: Client, qs: Queues, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "SEARCH_BUDGET", 30)
    ids = qs.put_many("q1", [f"n{i}" for i in range(100)])
    html = op_client.get("/topics/q1/?q=n9").content.decode()
    text = summary(html)
    assert text.startswith("Searched 30 messages of 100") and "continue" in text
    assert ids_on(html) == [ids[9]]
    more = re.search(r'<a href="([^"]+)">continue</a>', html)
    assert more
    second = op_client.get(more.group(1).replace("&amp;", "&")).content.decode()
    assert "after #30" in summary(second)
    assert ids_on(second) == []  # n90..n99 are past the second page's 30 as well
    third = op_client.get(re.search(r'<a href="([^"]+)">continue</a>', second).group(1).replace("&amp;", "&"))
    fourth = op_client.get(re.search(r'<a href="([^"]+)">continue</a>', third.content.decode()).group(1)
                           .replace("&amp;", "&")).content.decode()
    assert ids_on(fourth) == ids[90:]


@pytest.mark.parametrize(
    "query",
    ["min_attempts=x", "max_attempts=-1", "since=yesterday", "until=12:99", "q=" + "x" * 201, "state=bogus"],
)
def test_bad_filters_are_400(op_client: Client, qs: Queues, query: str) -> None:
    qs.put("q1", 1)
    assert op_client.get(f"/topics/q1/?{query}").status_code == 400
    if not query.startswith("state"):
        assert op_client.get(f"/failed/?{query}").status_code == 400
        assert op_client.get(f"/topics/q1/bulk/?action=delete&{query}").status_code == 400


# -- bulk actions on a filter ------------------------------------------------------------------
def test_bulk_requeue_of_a_filter_dry_run_then_act(op_client: Client, qs: Queues) -> None:
    smtp = [fail_one(qs, "q1", reason="TimeoutError: smtp") for _ in range(3)]
    fail_one(qs, "q1", reason="KeyError: x")
    dry = op_client.get("/topics/q1/bulk/?action=requeue&state=failed&q=smtp")
    assert dry.status_code == 200
    html = dry.content.decode()
    assert '<strong id="bulk-count">3</strong>' in html
    assert all(f"#{mid}<" in html for mid in smtp)
    assert qs.stats()["q1"]["failed"] == 4  # the dry run changed nothing
    done = op_client.post(
        "/topics/q1/bulk/", {"action": "requeue", "state": "failed", "q": "smtp", "confirm": "yes"}, follow=True
    )
    assert "Requeued 3 messages of q1." in done.content.decode()
    stats = qs.stats()["q1"]
    assert (stats["failed"], stats["ready"]) == (1, 3)


def test_bulk_skips_what_a_consumer_took_since_the_count(op_client: Client, qs: Queues) -> None:
    qs.put_many("q1", [f"v{i}" for i in range(5)])
    dry = op_client.get("/topics/q1/bulk/?action=delete&state=ready").content.decode()
    assert '<strong id="bulk-count">5</strong>' in dry
    taken = qs.take("q1", timeout=0)  # a consumer, between the count and the act
    assert taken is not None
    done = op_client.post("/topics/q1/bulk/", {"action": "delete", "state": "ready", "confirm": "yes"},
                          follow=True).content.decode()
    assert "Deleted 4 messages of q1." in done
    assert "Skipped" not in done or "Skipped 0" not in done
    assert taken.complete()  # the taken one was left alone
    stats = qs.stats()["q1"]
    assert (stats["ready"], stats["completed"]) == (0, 1)


def test_bulk_counts_a_message_taken_during_the_act_as_skipped(
    op_client: Client, qs: Queues, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race (a take between the count and the change of one message) is
    # injected: it cannot be timed for real.
    ids = qs.put_many("q1", [f"v{i}" for i in range(3)])
    bulk_views = importlib.import_module("dqadmin.views.bulk")
    real_still = bulk_views._still
    calls = 0

    def still_then_taken(queues: Queues, topic: str, msg: object, flt: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 2:  # a consumer takes the second message just as it is looked at
            assert queues.take(topic, timeout=0) is not None
        return real_still(queues, topic, msg, flt)  # type: ignore[arg-type]

    monkeypatch.setattr(bulk_views, "_still", still_then_taken)
    done = op_client.post("/topics/q1/bulk/", {"action": "delete", "state": "ready", "confirm": "yes"},
                          follow=True).content.decode()
    assert "Deleted 2 messages" in done and "Skipped 1 " in done
    assert [m.id for m in qs.messages("q1")] == [ids[1]]


def test_bulk_move_of_a_filter(op_client: Client, qs: Queues) -> None:
    failed = [fail_one(qs, "q1", reason="ValueError: bad address") for _ in range(3)]
    qs.put("q1", "stays ready")
    dry = op_client.get("/topics/q1/bulk/?action=move&state=failed").content.decode()
    assert '<strong id="bulk-count">3</strong>' in dry and 'name="to"' in dry
    done = op_client.post(
        "/topics/q1/bulk/", {"action": "move", "state": "failed", "to": "repair", "confirm": "yes"}, follow=True
    ).content.decode()
    assert "Moved 3 messages of q1 to repair." in done
    assert qs.stats()["q1"]["failed"] == 0 and qs.stats()["q1"]["ready"] == 1
    moved = qs.messages("repair")
    assert len(moved) == 3 and all(m.state == "ready" for m in moved)
    # Their history travels with them.
    assert all(m.attempts == 1 and m.errors and "bad address" in m.errors[-1]["reason"] for m in moved)
    assert all(m.origin == identity.current() for m in moved)
    # Ready there from the move: its wait counts from then, not from its put.
    task = qs.take("repair", timeout=0)
    assert task is not None and task.ready_at > task.enqueued_at
    for mid in failed:
        assert op_client.get(f"/topics/q1/messages/{mid}/").status_code == 404


def test_move_of_one_message_and_of_a_selection(op_client: Client, qs: Queues) -> None:
    ids = qs.put_many("q1", ["a", "b", "c"])
    page = op_client.get(f"/topics/q1/messages/{ids[0]}/").content.decode()
    assert f"/topics/q1/bulk/?action=move&amp;id={ids[0]}" in page
    op_client.post("/topics/q1/bulk/", {"action": "move", "id": [ids[0]], "to": "q2", "confirm": "yes"})
    dry = op_client.post("/topics/q1/bulk/?action=move", {"id": [ids[1], ids[2]]}).content.decode()
    assert '<strong id="bulk-count">2</strong>' in dry
    op_client.post("/topics/q1/bulk/", {"action": "move", "id": [ids[1], ids[2]], "to": "q2", "confirm": "yes"})
    assert sorted(m.value for m in qs.messages("q2")) == ["a", "b", "c"]
    assert qs.messages("q1") == []


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"action": "move", "to": "q1"}, "not its own"),
        ({"action": "move", "to": "../x"}, "invalid topic name"),
        ({"action": "move"}, "choose the topic"),
        ({"action": "explode"}, "action must be one of"),
        ({"action": "delete", "id": "abc"}, "message id"),
    ],
)
def test_bulk_bad_input_is_400(op_client: Client, qs: Queues, data: dict[str, str], why: str) -> None:
    qs.put("q1", 1)
    answer = op_client.post("/topics/q1/bulk/", {**data, "confirm": "yes"})
    assert answer.status_code == 400 and why in answer.content.decode()
    assert qs.stats()["q1"]["ready"] == 1


# -- edit and resend ---------------------------------------------------------------------
def test_edit_and_resend_a_failed_message(op_client: Client, qs: Queues) -> None:
    mid = qs.put("q1", {"to": "a@exmaple.com", "n": 1})
    task = qs.take("q1", timeout=0)
    assert task is not None and task.fail("SMTPRecipientsRefused: a@exmaple.com")
    form = op_client.get(f"/topics/q1/messages/{mid}/resend/").content.decode()
    assert "&quot;a@exmaple.com&quot;" in form and "<textarea" in form
    bad = op_client.post(f"/topics/q1/messages/{mid}/resend/", {"value": '{"to": "a@example.com",', "to": "q1"})
    assert bad.status_code == 400
    assert "Invalid JSON: Expecting property name enclosed in double quotes at line 1" in bad.content.decode()
    done = op_client.post(f"/topics/q1/messages/{mid}/resend/", {"value": '{"to": "a@example.com", "n": 1}',
                                                                  "to": "q1"})
    assert done.status_code == 302
    new_id = int(done["Location"].rstrip("/").rsplit("/", 1)[1])
    assert qs.peek("q1", new_id).value == {"to": "a@example.com", "n": 1}
    assert qs.peek("q1", new_id).state == "ready" and qs.peek("q1", new_id).attempts == 0
    assert qs.peek("q1", mid).state == "failed"  # the original stays until deleted
    elsewhere = op_client.post(f"/topics/q1/messages/{mid}/resend/", {"value": "[1, 2]", "to": "repair"})
    assert elsewhere.status_code == 302 and qs.messages("repair")[0].value == [1, 2]
    assert op_client.post(f"/topics/q1/messages/{mid}/resend/", {"value": "1", "to": "bad/x"}).status_code == 400


def test_an_undecodable_message_cannot_be_edited(op_client: Client, qs: Queues, dq_settings: dict) -> None:
    raw = Queues(dq_settings["LOCATION"], **{**dq_settings.get("OPTIONS", {}), "serializer": "raw"})
    try:
        mid = raw.put("q1", b"\xc1 not msgpack")
    finally:
        raw.close()
    html = op_client.get(f"/topics/q1/messages/{mid}/resend/").content.decode()
    assert "cannot be edited as JSON" in html and "<textarea" not in html


# -- who may act -------------------------------------------------------------------------------
def test_read_only_staff_see_no_buttons_and_get_403(ro_client: Client, qs: Queues) -> None:
    mid = fail_one(qs, "q1")
    page = ro_client.get("/topics/q1/?q=x").content.decode()
    assert "/bulk/" not in page and "Move selected" not in page
    assert "/resend/" not in ro_client.get(f"/topics/q1/messages/{mid}/").content.decode()
    assert ro_client.get("/topics/q1/bulk/?action=delete").status_code == 403
    assert ro_client.post("/topics/q1/bulk/", {"action": "delete", "confirm": "yes"}).status_code == 403
    assert ro_client.post(f"/topics/q1/messages/{mid}/resend/", {"value": "1"}).status_code == 403
    assert qs.stats()["q1"]["failed"] == 1


def test_actions_need_the_csrf_token(operator: object, qs: Queues) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)  # type: ignore[arg-type]
    mid = fail_one(qs, "q1")
    assert client.post("/topics/q1/bulk/", {"action": "delete", "confirm": "yes"}).status_code == 403
    assert client.post(f"/topics/q1/messages/{mid}/resend/", {"value": "1"}).status_code == 403
    assert qs.stats()["q1"]["failed"] == 1


# -- concurrent use --------------------------------------------------------------------------------
def test_moving_and_requeueing_while_consumers_run_loses_nothing(op_client: Client, qs: Queues) -> None:
    values = [f"v{i}" for i in range(300)]
    qs.put_many("src", values)
    done: list[str] = []
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            for topic in ("src", "dst"):
                task = qs.take(topic, timeout=0)
                if task is None:
                    continue
                if task.value.endswith("7") and task.attempts == 1:
                    task.fail("a failure to requeue")  # some go to the failed store
                elif task.complete():
                    done.append(task.value)
            time.sleep(0.001)

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    try:
        for _ in range(3):
            op_client.post("/topics/src/bulk/", {"action": "move", "state": "ready", "to": "dst", "confirm": "yes"})
            op_client.post("/topics/src/bulk/", {"action": "requeue", "state": "failed", "confirm": "yes"})
            op_client.post("/topics/dst/bulk/", {"action": "move", "state": "failed", "to": "src", "confirm": "yes"})
        op_client.post("/topics/src/bulk/", {"action": "requeue", "state": "failed", "confirm": "yes"})
        deadline = time.monotonic() + 30
        while set(done) != set(values) and time.monotonic() < deadline:
            for topic in ("src", "dst"):
                if qs.stats().get(topic, {}).get("failed"):
                    qs.requeue_failed(topic)
            time.sleep(0.02)
    finally:
        stop.set()
        worker.join(5)
    assert set(done) == set(values), f"lost: {sorted(set(values) - set(done))[:10]}"
    for topic in ("src", "dst"):
        s = qs.stats()[topic]
        assert (s["ready"], s["in_progress"], s["failed"]) == (0, 0, 0), (topic, s)


# -- pause and resume, quiet and stop ------------------------------------------------------------
def test_pause_and_resume_from_the_topic_page(op_client: Client, qs: Queues) -> None:
    qs.put("q1", "x")
    page = op_client.get("/topics/q1/").content.decode()
    assert 'id="pause-button"' in page and "paused-banner" not in page
    answer = op_client.post("/topics/q1/pause/", {"next": "/topics/q1/"})
    assert answer.status_code == 302 and qs.paused() == ["q1"]
    page = op_client.get("/topics/q1/").content.decode()
    assert 'id="resume-button"' in page and 'id="paused-banner"' in page
    overview = op_client.get("/").content.decode()
    assert 'class="pill paused"' in overview
    assert op_client.get("/api/stats").json()["topics"]["q1"]["paused"] is True
    op_client.post("/topics/q1/resume/")
    assert qs.paused() == []
    assert "pill paused" not in op_client.get("/").content.decode()


def test_pause_needs_post_the_permission_and_a_topic(op_client: Client, ro_client: Client, qs: Queues) -> None:
    qs.put("q1", "x")
    assert op_client.get("/topics/q1/pause/").status_code == 405
    assert ro_client.post("/topics/q1/pause/").status_code == 403
    assert 'id="pause-button"' not in ro_client.get("/topics/q1/").content.decode()
    assert op_client.post("/topics/nope/pause/").status_code == 404
    assert qs.paused() == []


def test_quiet_and_stop_a_consumer_from_the_overview(op_client: Client, ro_client: Client, qs: Queues) -> None:
    key = "vm-4242"
    qs.backend.write_heartbeat(key, {"key": key, "host": "vm", "pid": 4242, "topics": ["q1"],
                                     "last_beat": time.time(), "started": time.time()})
    overview = op_client.get("/").content.decode()
    assert f"/consumers/{key}/quiet/" in overview and f"/consumers/{key}/stop/" in overview
    assert "/consumers/" not in ro_client.get("/").content.decode()
    assert ro_client.post(f"/consumers/{key}/quiet/").status_code == 403
    assert op_client.post(f"/consumers/{key}/quiet/").status_code == 302
    assert qs.backend.controls()[key]["action"] == "quiet"
    assert qs.backend.controls()[key]["by"] == "olga"
    assert op_client.post(f"/consumers/{key}/stop/").status_code == 302
    assert qs.backend.controls()[key]["action"] == "stop"
    assert op_client.post("/consumers/nobody/stop/").status_code == 404
    assert op_client.post(f"/consumers/{key}/explode/").status_code == 404
    qs.backend.remove_heartbeat(key)
    qs.backend.remove_control(key)


def test_a_confirmed_bulk_action_leaves_what_came_after_the_dry_run(op_client: Client, qs: Queues) -> None:
    qs.put_many("q1", ["a", "b"])
    dry = op_client.get("/topics/q1/bulk/?action=delete&state=ready").content.decode()
    upto = re.search(r'name="upto" value="(\d+)"', dry)
    assert upto and upto.group(1) == "2"
    later = qs.put("q1", "put after the count")
    op_client.post("/topics/q1/bulk/", {"action": "delete", "state": "ready", "confirm": "yes", "upto": upto.group(1)})
    assert [m.id for m in qs.messages("q1")] == [later]


def test_deeply_nested_json_is_refused(op_client: Client, qs: Queues) -> None:
    mid = qs.put("q1", {"a": 1})
    answer = op_client.post(f"/topics/q1/messages/{mid}/resend/", {"value": "[" * 100_000, "to": "q1"})
    assert answer.status_code == 400 and "nested too deeply" in answer.content.decode()
