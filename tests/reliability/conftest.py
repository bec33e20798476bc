"""Fixtures of the reliability campaign and its report (see report.py)."""

from __future__ import annotations

import os

import pytest

from tests.reliability import report

# The test app registers a consumer in the project-wide registry when
# imported: only the runconsumers children may import it (like
# tests/consumers/testapp). The worker is a script of the child processes.
collect_ignore = ["testapp", "worker.py", "settings.py"]

STRESS = bool(os.environ.get("DQ_STRESS"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not (STRESS or os.environ.get("DQ_REPORT")):
        return
    lines = report.render()
    if lines:
        terminalreporter.section("dq reliability report")
        for line in lines:
            terminalreporter.write_line(line)
