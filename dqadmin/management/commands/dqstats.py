"""Print the queue statistics: the dashboard's numbers, as a table or JSON."""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dqadmin.queues import get_queues
from dqadmin.stats import build_stats
from queuecore import QueueError

COLUMNS = (
    "ready",
    "delayed",
    "in_progress",
    "failed",
    "enqueued",
    "completed",
    "retried",
    "consumers",
)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


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
        self.stdout.write(f"{stats['location']} ({stats['backend']})")
        topics: dict[str, dict[str, Any]] = stats["topics"]
        if not topics:
            self.stdout.write("No topics yet.")
        else:
            rows = [["topic", *COLUMNS]]
            for name, row in sorted(topics.items()):
                rows.append([name, *(str(row.get(c, 0)) for c in COLUMNS)])
            totals = stats["totals"]
            rows.append(["total", *(str(totals.get(c, "")) for c in COLUMNS[:-1]), ""])
            for line in _table(rows):
                self.stdout.write(line)
        storage = stats["storage"]
        line = f"Storage: {_size(storage.get('bytes'))} in {storage.get('num_slabs', 0)} slabs"
        if storage.get("free") is not None:
            line += f", {_size(storage['free'])} free"
        if storage.get("dropped"):
            line += f", {storage['dropped']} entries dropped by recovery"
        self.stdout.write(line)
        consumers = stats["consumers"]
        if not consumers:
            self.stdout.write("Consumers: none")
            return
        self.stdout.write("Consumers:")
        now = stats["generated_at"]
        for beat in consumers:
            ago = now - float(beat.get("last_beat", 0))
            state = "alive" if beat.get("alive") else "gone"
            started = beat.get("started")
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
            self.stdout.write(
                f"  {beat.get('host')}:{beat.get('pid')}  {state} (beat {ago:.0f} s ago)  "
                f"topics {', '.join(beat.get('topics') or [])}  "
                f"handled {beat.get('handled', 0)}  failed {beat.get('failed', 0)}  since {since}"
            )
