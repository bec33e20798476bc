"""Remove the waiting (ready and delayed) or the failed messages of a topic."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dqadmin import audit
from dqadmin.management.commands._topics import existing_topic
from dqadmin.queues import get_queues
from queuecore import QueueError

STATES = ("ready", "delayed", "failed")


class Command(BaseCommand):
    help = (
        "Remove the ready and delayed messages of TOPIC (or only those in --state). "
        "Messages in progress stay with their consumers. Asks first unless --yes."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("topic")
        parser.add_argument(
            "--state", choices=STATES, default=None, help="Only messages in this state."
        )
        parser.add_argument(
            "--yes",
            "--no-input",
            "--noinput",
            action="store_true",
            dest="yes",
            help="Do not ask for confirmation.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        queues = get_queues()
        topic = existing_topic(queues, options["topic"])
        state: str | None = options["state"]
        what = f"the {state} messages" if state else "the ready and delayed messages"
        if not options["yes"]:
            count = self._count(queues.stats().get(topic, {}), state)
            if not sys.stdin or not sys.stdin.isatty():
                raise CommandError(
                    f"Refusing to purge {what} of {topic!r} without confirmation: pass --yes."
                )
            self.stdout.write(
                f"Remove {what} of {topic!r} ({count} now)? Type 'yes' to go on: ", ending=""
            )
            self.stdout.flush()
            if sys.stdin.readline().strip().lower() not in ("yes", "y"):
                raise CommandError("Purge cancelled.")
        try:
            removed = queues.purge(topic, state)
        except QueueError as exc:
            raise CommandError(f"Could not purge {topic!r}: {exc}") from exc
        audit.record("purge", user=audit.os_user(), source="command", topic=topic, count=removed,
                     detail=state or "ready and delayed")
        self.stdout.write(self.style.SUCCESS(f"Removed {removed} messages from {topic}."))

    @staticmethod
    def _count(counts: dict[str, int], state: str | None) -> int:
        if state:
            return int(counts.get(state, 0))
        return int(counts.get("ready", 0)) + int(counts.get("delayed", 0))
