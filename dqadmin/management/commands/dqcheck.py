"""Check the queue's stored files (and with --fix, repair what can be)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dqadmin.queues import get_queues
from queuecore import QueueError
from queuecore.backend import public_location


def _describe(item: object) -> str:
    if isinstance(item, str):
        return item
    return json.dumps(item, sort_keys=True, default=str)


class Command(BaseCommand):
    help = "Check the consistency of the queue's files; exits non-zero while problems remain."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--fix", action="store_true", help="Repair what can be repaired.")

    def handle(self, *args: Any, **options: Any) -> None:
        queues = get_queues()
        where = public_location(queues.location)
        try:
            result = queues.check(fix=options["fix"])
            if options["fix"] and (result.get("fixed") or not result.get("ok", True)):
                # What is left after the repair, from a fresh look.
                remaining = queues.check(fix=False)
            else:
                remaining = result
        except QueueError as exc:
            raise CommandError(f"Could not check {where}: {exc}") from exc
        for item in result.get("fixed") or []:
            self.stdout.write(f"fixed: {_describe(item)}")
        problems = list(remaining.get("problems") or [])
        for item in problems:
            self.stdout.write(f"problem: {_describe(item)}")
        extra = {k: v for k, v in result.items() if k not in ("ok", "problems", "fixed")}
        if extra and options["verbosity"] >= 2:
            self.stdout.write(_describe(extra))
        if problems or not remaining.get("ok", True):
            hint = "" if options["fix"] else " Run with --fix to repair what can be repaired."
            raise CommandError(f"{len(problems)} problem(s) in {where}.{hint}")
        self.stdout.write(self.style.SUCCESS(f"{where}: OK."))
