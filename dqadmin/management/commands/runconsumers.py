"""Run the registered consumers, and the tasks of every ``DQBackend`` in
``settings.TASKS``, until SIGTERM/SIGINT (or, with --burst, until their
topics are drained)."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections

from dqadmin.conf import conf
from dqadmin.consumers import Consumer, autodiscover
from dqadmin.queues import close_queues, get_queues
from dqadmin.runner import DEFAULT_GRACE, Runner
from dqadmin.tasks import configured_task_consumers
from queuecore import InvalidTopic, Task, validate_topic


def _call_handler(consumer: Consumer, task: Task) -> Any:
    # Like a request: drop database connections that broke or outlived
    # CONN_MAX_AGE, before and after each handler.
    close_old_connections()
    try:
        return consumer(task)
    finally:
        close_old_connections()


class Command(BaseCommand):
    help = (
        "Run the consumers registered in the installed apps' consumers.py. "
        "SIGTERM or SIGINT stops taking messages and waits for the handlers "
        "that run (up to --grace seconds); a second SIGINT stops at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "topics", nargs="*", help="Topics to consume (default: every registered one)."
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            default=None,
            help="Worker threads per topic (default: each consumer's own concurrency).",
        )
        parser.add_argument(
            "--burst",
            action="store_true",
            help="Handle what is there (and the retries it causes), then exit.",
        )
        parser.add_argument(
            "--grace",
            type=float,
            default=DEFAULT_GRACE,
            help=f"Seconds running handlers get to finish after a stop signal (default {DEFAULT_GRACE:g}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        registry = autodiscover()
        known: dict[str, Consumer] = {c.topic: c for c in registry}
        for task_consumer in configured_task_consumers():
            if task_consumer.topic in known:
                raise CommandError(
                    f"Topic {task_consumer.topic!r} has a @consumer and is also a task queue "
                    f"of TASKS: give one of them another topic."
                )
            known[task_consumer.topic] = task_consumer
        if not known:
            raise CommandError(
                "No consumers are registered: add @consumer handlers to an installed app's "
                "consumers.py, or a dqadmin.tasks.DQBackend to settings.TASKS."
            )
        topics: list[str] = options["topics"] or sorted(known)
        for topic in topics:
            try:
                validate_topic(topic)
            except InvalidTopic as exc:
                raise CommandError(str(exc)) from exc
            if topic not in known:
                raise CommandError(
                    f"No consumer is registered for topic {topic!r}; registered: {', '.join(sorted(known))}."
                )
        concurrency = options["concurrency"]
        if concurrency is not None and concurrency < 1:
            raise CommandError("--concurrency must be at least 1.")
        if options["grace"] < 0:
            raise CommandError("--grace must be >= 0.")

        runner = Runner(
            get_queues(),
            [known[t] for t in dict.fromkeys(topics)],
            concurrency=concurrency,
            burst=options["burst"],
            grace=options["grace"],
            heartbeat_interval=conf.HEARTBEAT_INTERVAL,
            call=_call_handler,
        )

        seen: set[int] = set()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            # The same signal twice (Ctrl-C pressed again) means "now"; a
            # SIGTERM after a SIGINT (as dqrun sends) still waits for handlers.
            runner.stop(hurry=signum in seen)
            seen.add(signum)

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            report = runner.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            close_queues()
        if options["verbosity"] >= 1:
            self.stdout.write(
                f"Handled {report.handled} messages: {report.completed} completed, "
                f"{report.retried} retried, {report.failed} failed"
                + (f", {report.given_back} given back unfinished." if report.given_back else ".")
            )
