"""What the dq queue commands share: :mod:`queuecore.ops` (the functions
behind the ``dq`` command too) with its failures turned into CommandError."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.core.management.base import CommandError

from queuecore import Queues, ops


@contextmanager
def command_errors(write: Callable[[str], object] | None = None) -> Iterator[None]:
    """Turn :class:`queuecore.ops.CommandFailed` into CommandError with the
    same message and exit code; ``write`` shows what was done before it."""
    try:
        yield
    except ops.CommandFailed as exc:
        if write is not None:
            for line in exc.lines:
                write(line)
        raise CommandError(str(exc), returncode=exc.exit_code) from exc


def existing_topic(queues: Queues, topic: str) -> str:
    """``topic`` if it is a valid name of a topic that exists, else CommandError."""
    with command_errors():
        return ops.existing_topic(queues, topic)
