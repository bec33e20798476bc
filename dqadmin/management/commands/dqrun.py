"""`make run`: the dashboard and the demo consumers in one command.

Starts ``runserver`` and ``runconsumers`` as child processes sharing this
terminal; Ctrl-C (or SIGTERM) stops both, consumers first finishing what
they hold.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from typing import Any

from django.core.management import get_commands
from django.core.management.base import BaseCommand

from dqadmin.demo.produce import produce
from dqadmin.queues import get_queues
from dqadmin.tasks import configured_task_consumers


class Command(BaseCommand):
    help = "Run the dashboard and the consumers together (development)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--addrport", default="127.0.0.1:8000")
        parser.add_argument("--no-consumers", action="store_true", help="Start only the dashboard.")
        parser.add_argument(
            "--demo",
            type=int,
            default=10,
            metavar="N",
            help="Scatter N demo messages between q1 and q2 at start, like the seed's demo (0: none).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        manage = [sys.executable, "manage.py"]
        commands = [manage + ["runserver", "--noreload", options["addrport"]]]
        if not options["no_consumers"] and "runconsumers" in get_commands():
            commands.append(manage + ["runconsumers"])
        children = [subprocess.Popen(cmd) for cmd in commands]
        self.stdout.write(f"Dashboard on http://{options['addrport']}/ — Ctrl-C stops everything.")
        if options["demo"] > 0:
            # A gentle stream (2 a second) so the consumers' log lines show
            # the messages flowing; the dashboard's demo form sends more.
            threading.Thread(
                target=produce, args=(get_queues(), options["demo"]), kwargs={"rate": 2.0}, daemon=True
            ).start()
            if configured_task_consumers():
                from dqadmin.demo.tasks import enqueue_demo_tasks

                # A few Django tasks too, for the dashboard's Tasks page.
                enqueue_demo_tasks(5)

        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping and all(c.poll() is None for c in children):
                time.sleep(0.2)
        finally:
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            for child in children:
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        self.stdout.write("Stopped.")
