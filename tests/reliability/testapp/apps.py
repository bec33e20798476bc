"""A Django app for the campaign's runconsumers processes."""

from __future__ import annotations

from django.apps import AppConfig


class ReliabilityAppConfig(AppConfig):
    name = "tests.reliability.testapp"
    label = "dqreliabilityapp"
