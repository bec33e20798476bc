"""Print the queue statistics: the dashboard's numbers, as a table or JSON."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dqadmin.queues import get_queues
from dqadmin.stats import build_stats
from queuecore import QueueError
from queuecore.stats import stats_lines


class Command(BaseCommand):
    help = "Show every topic's counters, the storage and the consumers (--json for machines)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the statistics as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            stats = build_stats(get_queues())
        except QueueError as exc:
            raise CommandError(f"Could not read the statistics: {exc}") from exc
        if options["json"]:
            self.stdout.write(json.dumps(stats, indent=2, sort_keys=True, default=str))
            return
        for line in stats_lines(stats):
            self.stdout.write(line)
