"""Make messages ready again: some by id, or every failed one."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dqadmin.management.commands._topics import existing_topic
from dqadmin.queues import get_queues
from queuecore import MessageNotFound, QueueError


def _parse_id(text: str) -> int:
    # 20 digits hold every 64-bit id; the length test comes before int(),
    # which refuses strings of more than 4300 digits with a ValueError.
    if not (text.isascii() and text.isdigit()) or len(text) > 20 or int(text) < 1:
        raise CommandError(f"Invalid message id {text!r}: a message id is a positive integer.")
    return int(text)


class Command(BaseCommand):
    help = "Requeue messages of TOPIC: the ids given, or every failed one with --failed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("topic")
        parser.add_argument("ids", nargs="*", metavar="ID", help="Ids of the messages to requeue.")
        parser.add_argument(
            "--failed", action="store_true", help="Requeue every failed message of TOPIC."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        ids_text: list[str] = options["ids"]
        if options["failed"] == bool(ids_text):
            raise CommandError("Give either message ids or --failed (not both).")
        ids = [_parse_id(t) for t in ids_text]
        queues = get_queues()
        topic = existing_topic(queues, options["topic"])
        try:
            if options["failed"]:
                count = queues.requeue_failed(topic)
                self.stdout.write(
                    self.style.SUCCESS(f"Requeued {count} failed messages of {topic}.")
                )
                return
            missing = []
            for mid in ids:
                try:
                    queues.requeue(topic, mid)
                except MessageNotFound:
                    missing.append(mid)
                else:
                    self.stdout.write(f"Requeued {topic}#{mid}.")
        except QueueError as exc:
            raise CommandError(f"Could not requeue: {exc}") from exc
        if missing:
            raise CommandError(f"No message {', '.join(map(str, missing))} in topic {topic!r}.")
