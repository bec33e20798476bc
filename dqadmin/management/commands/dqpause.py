"""Pause TOPIC in every process: it still accepts messages, consumers take none until dqresume."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from dqadmin import audit
from dqadmin.management.commands._topics import command_errors
from dqadmin.queues import get_queues
from queuecore import ops


class Command(BaseCommand):
    help = "Pause TOPIC in every process: it still accepts messages, consumers take none until dqresume."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("topic")

    def handle(self, *args: Any, **options: Any) -> None:
        with command_errors():
            line = ops.set_paused(get_queues(), options["topic"], True)
        audit.record("pause", user=audit.os_user(), source="command", topic=options["topic"])
        self.stdout.write(self.style.SUCCESS(line))
