"""Make messages ready again: some by id, or every failed one."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from dqadmin.management.commands._topics import command_errors
from dqadmin.queues import get_queues
from queuecore import ops


class Command(BaseCommand):
    help = "Requeue messages of TOPIC: the ids given, or every failed one with --failed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("topic")
        parser.add_argument("ids", nargs="*", metavar="ID", help="Ids of the messages to requeue.")
        parser.add_argument(
            "--failed", action="store_true", help="Requeue every failed message of TOPIC."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        with command_errors(self.stdout.write):
            lines = ops.requeue(get_queues(), options["topic"], options["ids"], options["failed"])
        for line in lines:
            self.stdout.write(self.style.SUCCESS(line) if options["failed"] else line)
