"""Move waiting and failed messages from one queue location to another.

    manage.py dqmigrate --from var/queues --to redis://127.0.0.1:6379/0

Each batch is read from the source, put on the destination, and only then
deleted from the source: an interruption can leave a message on both sides
(a duplicate), never on neither. Payloads are copied byte for byte, so both
sides must use the same serializer. In-progress messages stay where they
are (stop the consumers first, or run the command again later).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dqadmin.conf import conf
from queuecore import InvalidTopic, MessageNotFound, QueueError, Queues, validate_topic
from queuecore.backend import Backend, Record, public_location

MOVED_STATES = ("ready", "delayed", "failed")
BAR_WIDTH = 30


class Command(BaseCommand):
    help = "Move ready, delayed and failed messages from one location to another, without loss."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--from", dest="source", required=True, help="Location to move from.")
        parser.add_argument("--to", dest="destination", required=True, help="Location to move to.")
        parser.add_argument(
            "--topic", action="append", default=[], help="Only this topic (repeatable)."
        )
        parser.add_argument("--batch", type=int, default=500, help="Messages per batch.")
        parser.add_argument(
            "--failed-as-ready",
            action="store_true",
            help="Move failed messages as ready (they will run again) instead of failed.",
        )

    def _open(self, location: str) -> Queues:
        # The configured location keeps its configured options (prefix, ...).
        options = conf.OPTIONS if location == conf.LOCATION else {}
        try:
            return Queues(location, **options)
        except QueueError as exc:
            raise CommandError(f"Could not open {public_location(location)}: {exc}") from exc

    def handle(self, *args: Any, **options: Any) -> None:
        if options["source"] == options["destination"]:
            raise CommandError("--from and --to name the same location.")
        if options["batch"] < 1:
            raise CommandError("--batch must be at least 1.")
        source = self._open(options["source"])
        destination = self._open(options["destination"])
        try:
            self._migrate(source, destination, options)
        except QueueError as exc:
            raise CommandError(f"Migration stopped: {exc}") from exc
        finally:
            source.close()
            destination.close()

    def _migrate(self, source: Queues, destination: Queues, options: dict[str, Any]) -> None:
        topics = options["topic"] or source.topics()
        for topic in topics:
            try:
                validate_topic(topic)
            except InvalidTopic as exc:
                raise CommandError(str(exc)) from exc
        if options["topic"]:
            missing = sorted(set(topics) - set(source.topics()))
            if missing:
                raise CommandError(f"No topic named {missing[0]!r} in {public_location(source.location)}.")
        stats = source.stats()
        total = sum(stats[t][s] for t in topics for s in MOVED_STATES)
        self.stdout.write(
            f"Moving {total} message(s) of {len(topics)} topic(s) "
            f"from {public_location(source.location)} to {public_location(destination.location)}."
        )
        moved = 0
        self._bar(moved, total)
        for topic in topics:
            for state in MOVED_STATES:
                moved = self._move(
                    source.backend, destination.backend, topic, state, options, moved, total
                )
        self.stdout.write("")
        in_progress = sum(source.stats().get(t, {}).get("in_progress", 0) for t in topics)
        if in_progress:
            self.stdout.write(
                f"{in_progress} message(s) in progress stayed in {public_location(source.location)}; "
                "run the command again once their consumers are done."
            )
        self.stdout.write(self.style.SUCCESS(f"Moved {moved} message(s)."))

    def _move(
        self, src: Backend, dst: Backend, topic: str, state: str, options: dict[str, Any],
        moved: int, total: int,
    ) -> int:
        after = 0
        while True:
            records: list[Record] = src.messages(topic, state, after, options["batch"])
            if not records:
                return moved
            after = records[-1].id
            if state == "failed" and options["failed_as_ready"]:
                records = [replace(r, state="ready") for r in records]
            # First on the destination (one call: all or none), then off the
            # source: state, attempts, due time and errors travel along.
            dst.restore(topic, records)
            for record in records:
                try:
                    src.delete(topic, record.id)
                except MessageNotFound:
                    pass  # deleted meanwhile at the source: it now lives on the destination only
            moved += len(records)
            self._bar(min(moved, max(total, moved)), max(total, moved))

    def _bar(self, done: int, total: int) -> None:
        filled = BAR_WIDTH if total == 0 else BAR_WIDTH * done // total
        percent = 100 if total == 0 else 100 * done // total
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        self.stdout.write(f"\r[{bar}] {done}/{total} ({percent}%)", ending="")
        self.stdout.flush()
