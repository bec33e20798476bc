"""DQBackend's system checks, by id, through Django's own check run."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import checks
from django.test import override_settings

from tests.tasks.conftest import TASKS_SETTING


def ids_with(options: dict[str, Any] | None = None, **params: Any) -> set[str]:
    setting = {"default": {**TASKS_SETTING["default"], **params}}
    if options is not None:
        setting["default"]["OPTIONS"] = options
    with override_settings(TASKS=setting):
        return {m.id for m in checks.run_checks() if m.id}


def test_the_test_settings_pass() -> None:
    assert not {i for i in ids_with() if i.startswith("dqadmin.E01")}


def test_unknown_option() -> None:
    assert "dqadmin.E010" in ids_with({"RESULT_TTLS": 5})


def test_queue_that_cannot_be_a_topic() -> None:
    assert "dqadmin.E011" in ids_with(QUEUES=["default", "bad/name"])


@pytest.mark.parametrize(
    "options",
    [{"RESULT_TTL": 0}, {"RESULT_TTL": "long"}, {"MAX_ATTEMPTS": 0}, {"MAX_ATTEMPTS": 1.5}, {"CONCURRENCY": True}],
)
def test_bad_numbers(options: dict[str, Any]) -> None:
    assert "dqadmin.E012" in ids_with(options)


def test_raw_serializer_cannot_hold_arguments(tmp_path: Any) -> None:
    with override_settings(DQ={"LOCATION": str(tmp_path / "q"), "OPTIONS": {"serializer": "raw"}}):
        assert "dqadmin.E013" in ids_with()
