"""Put N demo messages ({"uuid": ...}) scattered between topics."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dqadmin.demo.produce import DEMO_TOPICS, produce
from dqadmin.queues import get_queues
from queuecore import InvalidTopic, QueueError

BAR_WIDTH = 30


class Command(BaseCommand):
    help = 'Put N random {"uuid": ...} demo messages, scattered between the topics.'

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("n", type=int, help="How many messages.")
        parser.add_argument(
            "--topics",
            nargs="+",
            default=list(DEMO_TOPICS),
            help="Topics to scatter them between (default q1 q2).",
        )
        parser.add_argument(
            "--rate", type=float, default=None, help="At most this many messages per second."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        n, topics, rate = options["n"], options["topics"], options["rate"]
        if n < 0:
            raise CommandError("N must be 0 or more.")
        if rate is not None and not rate > 0:
            raise CommandError("--rate must be a positive number of messages per second.")
        show = options["verbosity"] >= 1
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if done < total and now - last[0] < 0.1:
                return
            last[0] = now
            filled = BAR_WIDTH * done // total if total else BAR_WIDTH
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            self.stdout.write(f"\r[{bar}] {done}/{total}", ending="")
            self.stdout.flush()

        try:
            counts = produce(get_queues(), n, topics, rate, progress=progress if show else None)
        except InvalidTopic as exc:
            raise CommandError(str(exc)) from exc
        except QueueError as exc:
            raise CommandError(f"Could not put the messages: {exc}") from exc
        if show:
            if n:
                self.stdout.write("")
            per_topic = ", ".join(f"{t}: {c}" for t, c in counts.items())
            self.stdout.write(self.style.SUCCESS(f"Put {n} messages ({per_topic})."))
