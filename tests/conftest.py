"""Shared fixtures."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Long stress runs only with DQ_STRESS=1 (make stress); their short
    # versions are ordinary tests. The packaging test (a build and a pip
    # install from the index) only with DQ_PACKAGING=1 (make test-wheel, CI).
    skips = {
        "stress": (not os.environ.get("DQ_STRESS"), "stress run: set DQ_STRESS=1 or use make stress"),
        "packaging": (
            not os.environ.get("DQ_PACKAGING"),
            "builds and installs the wheel: set DQ_PACKAGING=1 or use make test-wheel",
        ),
    }
    for item in items:
        for marker, (skipped, reason) in skips.items():
            if skipped and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def python() -> str:
    """The interpreter running the tests, for child processes."""
    return sys.executable


@pytest.fixture
def project_root() -> Path:
    return ROOT


@pytest.fixture
def qdir(tmp_path: Path) -> Path:
    d = tmp_path / "queues"
    yield d
    shutil.rmtree(d, ignore_errors=True)
