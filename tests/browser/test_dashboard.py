"""The dashboard in a real browser against a real server process."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from .conftest import Server, log_in

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def test_log_in(browser: Any, server: Server) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server.url}/topics/q1/")
    assert "/admin/login/" in page.url
    log_in(page, server)
    expect(page.locator("h1")).to_have_text("Topics")
    context.close()


def test_count_changes_after_a_put_from_another_process(page: Any, server: Server) -> None:
    qs = server.queues()
    qs.put("live", {"n": 1})
    page.goto(f"{server.url}/")
    cell = page.locator("#topic-live [data-col=ready]")
    expect(cell).to_have_text("1")
    page.evaluate("window.dqMarker = 'same page'")
    qs.put_many("live", [{"n": 2}, {"n": 3}])
    expect(cell).to_have_text("3", timeout=5_000)
    assert page.evaluate("window.dqMarker") == "same page"  # updated in place, no reload
    qs.close()


def test_peek_a_message(page: Any, server: Server) -> None:
    qs = server.queues()
    mid = qs.put("peek", {"hello": "<b>world</b>", "n": [1, 2]})
    page.goto(f"{server.url}/topics/peek/")
    page.click(f"text=#{mid}")
    expect(page.locator("#value")).to_contain_text('"hello": "<b>world</b>"')
    expect(page.locator("#hex")).to_contain_text("00000000")
    assert page.locator("#value b").count() == 0  # shown as text, never as HTML
    qs.close()


def test_requeue_a_failed_message(page: Any, server: Server) -> None:
    qs = server.queues()
    mid = qs.put("fails", {"order": 7})
    task = qs.take("fails", timeout=0)
    assert task is not None and task.fail(ValueError("no such order"))
    page.goto(f"{server.url}/topics/fails/?state=failed&every=1")
    box = page.locator(f"#messages input.pick[value='{mid}']")
    box.check()
    # While a row is selected the table must not change under the cursor.
    qs.put("fails", {"order": 8})
    other = qs.take("fails", timeout=0)
    assert other is not None and other.fail("later")
    page.wait_for_timeout(1500)
    assert page.locator("#messages input.pick").count() == 1
    expect(box).to_be_checked()
    page.click("text=Requeue selected")
    expect(page.locator(".flash")).to_contain_text("Requeued 1 message of fails.")
    assert qs.peek("fails", mid).state == "ready"
    # Nothing selected now: the table follows the queue again.
    expect(page.locator("#messages input.pick")).to_have_count(1)
    qs.close()


def test_demo_producer_progress_bar(page: Any, server: Server) -> None:
    page.goto(f"{server.url}/demo/")
    page.fill("input[name=count]", "400")
    page.fill("input[name=topics]", "demo1, demo2")
    page.fill("input[name=rate]", "1000")
    page.click("text=Start")
    job = page.locator("#jobs .job").first
    expect(job).to_have_attribute("data-state", "running")
    expect(job).to_have_attribute("data-state", "finished", timeout=10_000)
    expect(job.locator("[data-done]")).to_have_text("400")
    assert job.locator(".bar span").get_attribute("style") == "width: 100%"
    qs = server.queues()
    stats = qs.stats()
    assert stats["demo1"]["enqueued"] + stats["demo2"]["enqueued"] == 400
    qs.close()


def _consume(qs: Any, topic: str, fail_every: int, n: int) -> None:
    for i in range(n):
        task = qs.take(topic, timeout=0)
        if task is None:
            return
        if fail_every and i % fail_every == 0:
            try:
                raise KeyError(f"sku-{(i // fail_every) % 3}")
            except KeyError as exc:
                task.fail(exc)
        else:
            task.complete()


def test_screenshots(page: Any, server: Server, tmp_path: Path) -> None:
    """The main pages with some traffic; with DQ_SCREENSHOTS=1 they are
    saved to docs/screenshots (for the README), else to a temporary folder."""
    save = SCREENSHOTS if os.environ.get("DQ_SCREENSHOTS") else tmp_path
    save.mkdir(parents=True, exist_ok=True)
    seconds = 40 if os.environ.get("DQ_SCREENSHOTS") else 2
    qs = server.queues()
    now = time.time()
    qs.backend.write_heartbeat(
        "worker-1:4242",
        {"host": "worker-1", "pid": 4242, "topics": ["q1", "q2"], "handled": 0, "failed": 0,
         "started": now - 3725, "last_beat": now, "concurrency": 4},
    )
    page.goto(f"{server.url}/?every=1")
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        qs.put_many("q1", [{"uuid": f"{i}-{k}", "customer": k} for k in range(20 + 15 * (i % 4))])
        qs.put_many("q2", [{"uuid": f"{i}-{k}"} for k in range(5)])
        _consume(qs, "q1", 9, 22)
        _consume(qs, "q2", 0, 5)
        qs.backend.write_heartbeat(
            "worker-1:4242",
            {"host": "worker-1", "pid": 4242, "topics": ["q1", "q2"], "handled": 27 * i, "failed": 3 * i,
             "started": now - 3725, "last_beat": time.time(), "concurrency": 4},
        )
        page.wait_for_timeout(500)
    qs.put_many("reports", [{"month": "2026-10"}] * 12)
    page.wait_for_timeout(1200)
    page.screenshot(path=str(save / "overview.png"), full_page=True)
    page.goto(f"{server.url}/topics/q1/?state=failed&limit=8")
    page.wait_for_timeout(300)
    page.screenshot(path=str(save / "topic.png"), full_page=True)
    # A message with a history: a retry after a timeout, then a failure.
    mid = qs.put("payments", {"order": 1234, "amount": "49.90", "currency": "EUR"})
    task = qs.take("payments", timeout=0)
    task.started_at = time.time()
    time.sleep(0.35)
    task.retry(reason=TimeoutError("payment gateway did not answer in 30 s"))
    task = qs.take("payments", timeout=0)
    try:
        raise KeyError("card_token")
    except KeyError as exc:
        task.fail(exc)
    page.goto(f"{server.url}/topics/payments/messages/{mid}/")
    expect(page.locator("#timeline")).to_contain_text("retried after")
    expect(page.locator("#timeline")).to_contain_text("failed after")
    page.screenshot(path=str(save / "message.png"), full_page=True)
    page.goto(f"{server.url}/failed/")
    page.screenshot(path=str(save / "failed.png"), full_page=True)
    page.goto(f"{server.url}/demo/")
    page.fill("input[name=count]", "5000")
    page.fill("input[name=rate]", "2000")
    page.click("text=Start")
    page.wait_for_timeout(1200)
    page.screenshot(path=str(save / "demo.png"), full_page=True)
    assert re.search(r"\d", page.locator("#jobs [data-done]").first.inner_text())
    qs.close()


def _luminance(css_color: str) -> float:
    r, g, b = (int(x) for x in re.findall(r"\d+", css_color)[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


def test_dark_theme_follows_the_system_and_the_toggle(page: Any, server: Server, tmp_path: Path) -> None:
    save = SCREENSHOTS if os.environ.get("DQ_SCREENSHOTS") else tmp_path
    page.emulate_media(color_scheme="dark")
    page.goto(f"{server.url}/")
    body = page.locator("body")
    assert _luminance(body.evaluate("e => getComputedStyle(e).backgroundColor")) < 0.2
    page.screenshot(path=str(save / "overview-dark.png"), full_page=True)
    page.click("[data-theme-toggle]")  # system -> dark
    page.click("[data-theme-toggle]")  # dark -> light
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    assert _luminance(body.evaluate("e => getComputedStyle(e).backgroundColor")) > 0.8
    page.reload()  # the choice is kept
    assert _luminance(body.evaluate("e => getComputedStyle(e).backgroundColor")) > 0.8
    page.keyboard.press("t")  # light -> system (dark here)
    assert _luminance(body.evaluate("e => getComputedStyle(e).backgroundColor")) < 0.2
    page.emulate_media(color_scheme="light")


def test_keyboard_shortcuts(page: Any, server: Server) -> None:
    qs = server.queues()
    qs.put("keys", 1)
    page.goto(f"{server.url}/topics/keys/")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.name") == "q"
    page.keyboard.press("Escape")
    page.locator("body").click(position={"x": 5, "y": 300})
    page.keyboard.press("?")
    expect(page.locator("#shortcuts")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#shortcuts")).to_be_hidden()
    page.keyboard.press("g")
    page.keyboard.press("f")
    page.wait_for_url(f"{server.url}/failed/")
    page.keyboard.press("g")
    page.keyboard.press("a")
    page.wait_for_url(f"{server.url}/activity/")
    qs.close()


def test_a_narrow_screen_has_no_sideways_scroll(browser: Any, login_state: str, server: Server,
                                                 tmp_path: Path) -> None:
    save = SCREENSHOTS if os.environ.get("DQ_SCREENSHOTS") else tmp_path
    context = browser.new_context(storage_state=login_state, viewport={"width": 400, "height": 800})
    page = context.new_page()
    for path in ("/", "/topics/keys/", "/failed/"):
        page.goto(f"{server.url}{path}")
        width = page.evaluate("document.documentElement.scrollWidth")
        wide = page.evaluate("""() => [...document.querySelectorAll('body *')]
            .filter(e => e.getBoundingClientRect().right > 401 && !e.closest('.grid'))
            .slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))""")
        assert width <= 400, f"{path} is {width} px wide: {wide}"
    page.goto(f"{server.url}/")
    page.screenshot(path=str(save / "overview-narrow.png"), full_page=True)
    context.close()
