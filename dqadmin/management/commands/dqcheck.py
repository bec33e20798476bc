"""Check the queue's stored files (and with --fix, repair what can be)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dqadmin.management.commands._topics import command_errors
from dqadmin.queues import get_queues
from queuecore import ops


class Command(BaseCommand):
    help = "Check the consistency of the queue's files; exits non-zero while problems remain."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--fix", action="store_true", help="Repair what can be repaired.")

    def handle(self, *args: Any, **options: Any) -> None:
        with command_errors():
            report = ops.check(get_queues(), fix=options["fix"], verbose=options["verbosity"] >= 2)
        *details, summary = report.lines
        for line in details:
            self.stdout.write(line)
        if not report.ok:
            raise CommandError(summary, returncode=ops.EXIT_FAILED)
        self.stdout.write(self.style.SUCCESS(summary))
