"""Browser tests: a real ``runserver`` process on a slab directory, driven by
Playwright with Debian's chromium.

They skip when ``/usr/bin/chromium`` (or Playwright) is missing, unless
``DQ_REQUIRE_BROWSER`` is set (CI sets it): then they fail, so a CI run can
never pass by skipping them silently.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Debian's chromium; DQ_CHROMIUM points elsewhere (another distro, or a test of the skip logic).
CHROMIUM = os.environ.get("DQ_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
USERNAME, PASSWORD = "admin", "browser-test-pw"


def _unavailable(reason: str) -> None:
    if os.environ.get("DQ_REQUIRE_BROWSER"):
        pytest.fail(f"browser tests are required (DQ_REQUIRE_BROWSER is set) but {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class Server:
    url: str
    queue_dir: Path
    log: Path

    def queues(self, **options: Any) -> Any:
        """A Queues on the server's directory, opened by this (other) process."""
        from queuecore import Queues

        return Queues(str(self.queue_dir), fsync_put=False, **options)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``manage.py runserver`` in its own process, with its own database and
    queue directory, and a superuser to log in with."""
    var = tmp_path_factory.mktemp("dq-browser")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "dqsite.settings",
        "DQ_VAR_DIR": str(var),
        "DQ_LOCATION": str(var / "queues"),
        "DQ_DEBUG": "1",  # runserver serves the static files
        "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
        "PYTHONUNBUFFERED": "1",
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run(manage + ["migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True)
    subprocess.run(
        manage + ["createsuperuser", "--noinput", "--username", USERNAME, "--email", "admin@example.com"],
        env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
    )
    port = _free_port()
    log = var / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            manage + ["runserver", "--noreload", f"127.0.0.1:{port}"], env=env, cwd=ROOT, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/admin/login/", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"runserver did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield Server(url=url, queue_dir=var / "queues", log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) and shutil.which(CHROMIUM)):
        _unavailable(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def log_in(page: Any, server: Server) -> None:
    page.goto(f"{server.url}/")
    page.fill("input[name=username]", USERNAME)
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{server.url}/")


@pytest.fixture(scope="session")
def login_state(browser: Any, server: Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Cookies of a logged-in session, shared by the tests' pages."""
    context = browser.new_context()
    page = context.new_page()
    log_in(page, server)
    path = str(tmp_path_factory.mktemp("state") / "state.json")
    context.storage_state(path=path)
    context.close()
    return path


@pytest.fixture
def page(browser: Any, login_state: str, server: Server) -> Iterator[Any]:
    """A logged-in page; the test fails on any JavaScript or console error."""
    context = browser.new_context(storage_state=login_state, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # htmx reports bad trigger syntax and failed swaps on the console.
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield page
    context.close()
    assert not errors, errors
