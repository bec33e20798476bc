"""The operator's controls in a real browser: pause a topic while a real
``runconsumers`` process consumes it, see the count stop moving, resume it;
search; edit and resend."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from .conftest import ROOT, Server

pytestmark = pytest.mark.browser


@pytest.fixture
def consumers(server: Server) -> Iterator[subprocess.Popen[bytes]]:
    """``manage.py runconsumers q2`` (the demo's second topic) on the server's queues."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "dqsite.settings",
        "DQ_VAR_DIR": str(server.queue_dir.parent),
        "DQ_LOCATION": str(server.queue_dir),
        "DQ_HEARTBEAT_INTERVAL": "0.5",
    }
    proc = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "runconsumers", "q2"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _count(page: Any, name: str) -> int:
    return int(page.locator(f"#topic-live [data-count={name}]").inner_text())


def test_pause_a_topic_while_consumers_run_then_resume(
    page: Any, server: Server, consumers: subprocess.Popen[bytes]
) -> None:
    qs = server.queues()
    qs.resume("q2")
    stop = threading.Event()

    def produce() -> None:  # a steady stream, from this (another) process
        while not stop.is_set():
            qs.put("q2", {"uuid": "browser-pause"})
            time.sleep(0.05)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        page.goto(f"{server.url}/topics/q2/?every=1")
        expect(page.locator("#topic-live [data-count=completed]")).not_to_have_text("0", timeout=15_000)
        page.click("#pause-button")
        expect(page.locator("#paused-banner")).to_be_visible()
        time.sleep(2.0)  # the pause reaches the consumer within a second; the page polls every second
        held = _count(page, "completed")
        time.sleep(2.5)
        assert _count(page, "completed") == held, "completions went on while paused"
        assert _count(page, "ready") > 0  # puts were still accepted
        page.goto(f"{server.url}/")
        expect(page.locator("#topic-q2 .pill.paused")).to_be_visible()
        page.goto(f"{server.url}/topics/q2/?every=1")
        page.click("#resume-button")
        expect(page.locator("#paused-banner")).to_have_count(0)
        page.wait_for_function(
            f"Number(document.querySelector('#topic-live [data-count=completed]').innerText) > {held}",
            timeout=15_000,
        )
    finally:
        stop.set()
        producer.join(5)
        qs.resume("q2")
        qs.close()


def test_search_then_edit_and_resend(browser: Any, login_state: str, server: Server) -> None:
    # Its own page: the refused JSON is a 400 on purpose, which the browser
    # reports on the console; any other console error fails the test.
    context = browser.new_context(storage_state=login_state, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    qs = server.queues()
    mid = qs.put("resend", {"to": "a@exmaple.com"})
    qs.put("resend", {"to": "someone@else.org"})
    task = qs.take("resend", timeout=0)
    assert task is not None and task.id == mid and task.fail("SMTPRecipientsRefused: a@exmaple.com")
    page.goto(f"{server.url}/topics/resend/")
    page.fill("#search input[name=q]", "EXMAPLE")
    page.click("#search button[type=submit]")
    expect(page.locator("#search-summary")).to_contain_text("1 match")
    page.click(f"text=#{mid}")
    page.click("text=Edit and resend…")
    page.fill("#id_value", '{"to": "a@example.com",')
    page.click("text=Send as a new message")
    expect(page.locator("#resend-error")).to_contain_text("Invalid JSON")
    page.fill("#id_value", '{"to": "a@example.com"}')
    page.click("text=Send as a new message")
    expect(page.locator("#value")).to_contain_text('"to": "a@example.com"')
    assert qs.peek("resend", mid).state == "failed"
    qs.close()
    context.close()
    assert [e for e in errors if "status of 400" not in e] == []
    assert len(errors) == 1  # the refused JSON, once


def test_an_action_shows_in_the_timeline_and_the_activity(page: Any, server: Server) -> None:
    qs = server.queues()
    mid = qs.put("audited", {"order": 9})
    task = qs.take("audited", timeout=0)
    assert task is not None and task.fail("KeyError: 'sku'")
    page.goto(f"{server.url}/topics/audited/messages/{mid}/")
    expect(page.locator("#timeline")).to_contain_text(f"by pid {os.getpid()} on ")
    expect(page.locator("#timeline")).to_contain_text("delivery 1 to pid")
    expect(page.locator("#timeline")).to_contain_text("failed after")
    page.click("text=Requeue")
    expect(page.locator("#timeline")).to_contain_text("requeue by admin")
    page.goto(f"{server.url}/activity/?topic=audited")
    expect(page.locator("#activity")).to_contain_text("requeue")
    expect(page.locator("#activity")).to_contain_text("admin")
    qs.close()
