"""The browser tests skip without chromium, but fail when DQ_REQUIRE_BROWSER
is set: a CI run can never pass by skipping them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(require: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DQ_REQUIRE_BROWSER"}
    env["DQ_CHROMIUM"] = "/nonexistent/chromium"
    if require:
        env["DQ_REQUIRE_BROWSER"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/browser/test_dashboard.py::test_log_in"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


def test_skips_without_chromium() -> None:
    result = _run(require=False)
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout


def test_fails_without_chromium_when_required() -> None:
    result = _run(require=True)
    assert result.returncode != 0, result.stdout
    assert "DQ_REQUIRE_BROWSER is set" in result.stdout
