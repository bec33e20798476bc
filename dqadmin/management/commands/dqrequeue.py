"""Make messages ready again: some by id, or every failed one."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from dqadmin import audit
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
        audit.record("requeue_failed" if options["failed"] else "requeue", user=audit.os_user(), source="command",
                     topic=options["topic"], count=len(options["ids"]) if options["ids"] else _count(lines),
                     ids=[int(i) for i in options["ids"]])
        for line in lines:
            self.stdout.write(self.style.SUCCESS(line) if options["failed"] else line)


def _count(lines: list[str]) -> int:
    # "Requeued N failed messages of T."
    words = lines[0].split() if lines else []
    return int(words[1]) if len(words) > 1 and words[1].isdigit() else 0
