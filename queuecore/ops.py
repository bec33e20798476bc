"""Operations shared by the ``dq`` command and dqadmin's management commands.

Each function checks what a person typed, calls :class:`~queuecore.Queues`
and returns the lines to show; bad input or a failure raises
:class:`CommandFailed` with one line to print and the exit code to end
with. The Django commands turn it into ``CommandError``; ``dq`` prints it on
stderr. Nothing here prints, exits or imports Django.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from queuecore.backend import public_location
from queuecore.errors import InvalidOption, InvalidTopic, MessageNotFound, QueueError
from queuecore.queues import Message, Queues, validate_topic

# Exit codes that scripts can rely on (``dq --help`` lists them).
EXIT_OK = 0
EXIT_FAILED = 1  # the operation failed, or found what it reports (check: problems)
EXIT_USAGE = 2  # bad input: arguments, topic name, message id, JSON
EXIT_NOT_FOUND = 3  # no such location, topic or message


class CommandFailed(Exception):
    """One line for a person, and the exit code a script sees."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED, lines: list[str] | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        # What was done before the failure, to show before the failure itself.
        self.lines = lines or []


def parse_id(text: str) -> int:
    """A message id typed by a person: a positive integer.

    >>> parse_id("42")
    42
    >>> parse_id("4x")
    Traceback (most recent call last):
    ...
    queuecore.ops.CommandFailed: Invalid message id '4x': a message id is a positive integer.
    """
    # 20 digits hold every 64-bit id; the length test comes before int(),
    # which refuses strings of more than 4300 digits with a ValueError.
    if not (text.isascii() and text.isdigit()) or len(text) > 20 or int(text) < 1:
        raise CommandFailed(f"Invalid message id {text!r}: a message id is a positive integer.", EXIT_USAGE)
    return int(text)


def valid_topic(topic: str) -> str:
    """``topic`` if it is a valid topic name, else CommandFailed (usage)."""
    try:
        return validate_topic(topic)
    except InvalidTopic as exc:
        raise CommandFailed(str(exc), EXIT_USAGE) from exc


def existing_topic(queues: Queues, topic: str) -> str:
    """``topic`` if it is a valid name of a topic that exists."""
    valid_topic(topic)
    topics = queues.topics()
    if topic not in topics:
        known = ", ".join(topics) or "none yet"
        raise CommandFailed(f"No topic named {topic!r} (topics: {known}).", EXIT_NOT_FOUND)
    return topic


def open_location(location: str, *, create: bool = False, **options: Any) -> Queues:
    """Open ``location``; a directory that does not exist is refused unless
    ``create`` (a typo must not make a new, empty queue)."""
    is_path = "://" not in location or location.startswith("file://")
    path = location.removeprefix("file://")
    if is_path and not create:
        if not os.path.exists(path):
            raise CommandFailed(f"No queue at {location}: the directory does not exist.", EXIT_NOT_FOUND)
        if not os.path.isdir(path):
            raise CommandFailed(f"No queue at {location}: it is not a directory.", EXIT_NOT_FOUND)
    try:
        return Queues(location, **options)
    except InvalidOption as exc:
        raise CommandFailed(str(exc), EXIT_USAGE) from exc
    except QueueError as exc:
        raise CommandFailed(f"Could not open {public_location(location)}: {exc}") from exc


def parse_json_values(lines: Iterable[str], source: str = "argument") -> list[Any]:
    """One JSON value per item (blank lines skipped), all or none: the first
    that does not parse stops everything, so nothing is half put.

    >>> parse_json_values(['{"a": 1}', "", "2"])
    [{'a': 1}, 2]
    >>> parse_json_values(["{", "1"], "line")
    Traceback (most recent call last):
    ...
    queuecore.ops.CommandFailed: Line 1: invalid JSON: Expecting property name enclosed in double quotes (column 2).
    """
    values = []
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            values.append(json.loads(text))
        except json.JSONDecodeError as exc:
            raise CommandFailed(f"{source.capitalize()} {number}: invalid JSON: {exc.msg} (column {exc.colno}).", EXIT_USAGE) from exc
        except RecursionError:
            raise CommandFailed(f"{source.capitalize()} {number}: invalid JSON: nested too deeply.", EXIT_USAGE) from None
    return values


def put_values(queues: Queues, topic: str, values: list[Any], batch: int = 1000) -> list[int]:
    """Put ``values`` on ``topic`` in batches (each batch all or none)."""
    valid_topic(topic)
    ids: list[int] = []
    try:
        for start in range(0, len(values), batch):
            ids.extend(queues.put_many(topic, values[start : start + batch], timeout=0))
    except QueueError as exc:
        done = f" ({len(ids)} put before it)" if ids else ""
        raise CommandFailed(f"Could not put on {topic!r}: {exc}{done}") from exc
    return ids


def message_dict(message: Message) -> dict[str, Any]:
    """A message as JSON-able data (``dq peek``, ``dq tail``)."""
    data: dict[str, Any] = {
        "topic": message.topic,
        "id": message.id,
        "state": message.state,
        "attempts": message.attempts,
        "enqueued_at": message.enqueued_at,
        "size": message.size,
        "value": message.value,
    }
    if message.origin is not None:
        data["origin"] = message.origin
    if message.not_before is not None:
        data["not_before"] = message.not_before
    if message.lease is not None:
        data["lease"] = {"owner": message.lease.owner, "deadline": message.lease.deadline}
    if message.errors:
        data["errors"] = list(message.errors)
    if message.decode_error is not None:
        data["decode_error"] = message.decode_error
        data["raw"] = message.raw.hex()
    return data


def to_json(data: Any, indent: int | None = None) -> str:
    """JSON of a value read from a queue; bytes and other non-JSON values as text."""

    def fallback(value: Any) -> Any:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value).decode("utf-8", "backslashreplace")
        return repr(value)

    return json.dumps(data, indent=indent, sort_keys=indent is not None, default=fallback)


def peek(queues: Queues, topic: str, text_id: str) -> Message:
    """The message ``text_id`` of ``topic``, whatever its state."""
    mid = parse_id(text_id)
    existing_topic(queues, topic)
    try:
        return queues.peek(topic, mid)
    except MessageNotFound as exc:
        raise CommandFailed(f"No message {mid} in topic {topic!r}.", EXIT_NOT_FOUND) from exc
    except QueueError as exc:
        raise CommandFailed(f"Could not read {topic}#{mid}: {exc}") from exc


def requeue(queues: Queues, topic: str, ids_text: list[str], failed: bool) -> list[str]:
    """Make the messages ``ids_text`` (or, with ``failed``, every failed
    message) of ``topic`` ready again; the lines to show. Ids that are not
    there are reported together at the end, after the others are requeued."""
    if failed == bool(ids_text):
        raise CommandFailed("Give either message ids or --failed (not both).", EXIT_USAGE)
    ids = [parse_id(t) for t in ids_text]
    existing_topic(queues, topic)
    lines: list[str] = []
    missing: list[int] = []
    try:
        if failed:
            count = queues.requeue_failed(topic)
            return [f"Requeued {count} failed messages of {topic}."]
        for mid in ids:
            try:
                queues.requeue(topic, mid)
            except MessageNotFound:
                missing.append(mid)
            else:
                lines.append(f"Requeued {topic}#{mid}.")
    except QueueError as exc:
        raise CommandFailed(f"Could not requeue: {exc}") from exc
    if missing:
        raise CommandFailed(
            f"No message {', '.join(map(str, missing))} in topic {topic!r}.", EXIT_NOT_FOUND, lines
        )
    return lines


@dataclass
class CheckReport:
    """What :func:`check` found: the lines to show and whether all is well."""

    lines: list[str]
    problems: int
    ok: bool


def _describe(item: object) -> str:
    if isinstance(item, str):
        return item
    return json.dumps(item, sort_keys=True, default=str)


def check(queues: Queues, fix: bool = False, verbose: bool = False) -> CheckReport:
    """Check the stored files (``fix``: repair what can be), then describe
    what is left from a fresh look."""
    where = public_location(queues.location)
    try:
        result = queues.check(fix=fix)
        if fix and (result.get("fixed") or not result.get("ok", True)):
            remaining = queues.check(fix=False)
        else:
            remaining = result
    except QueueError as exc:
        raise CommandFailed(f"Could not check {where}: {exc}") from exc
    lines = [f"fixed: {_describe(item)}" for item in result.get("fixed") or []]
    problems = list(remaining.get("problems") or [])
    lines.extend(f"problem: {_describe(item)}" for item in problems)
    extra = {k: v for k, v in result.items() if k not in ("ok", "problems", "fixed")}
    if extra and verbose:
        lines.append(_describe(extra))
    ok = not problems and bool(remaining.get("ok", True))
    if ok:
        lines.append(f"{where}: OK.")
    else:
        hint = "" if fix else " Run with --fix to repair what can be repaired."
        lines.append(f"{len(problems)} problem(s) in {where}.{hint}")
    return CheckReport(lines=lines, problems=len(problems), ok=ok)


def newest_id(queues: Queues, topic: str) -> int:
    """An id at or past the newest message of ``topic`` at this moment: ids
    increase by one per put, so the count of messages ever put is one."""
    return int(queues.stats().get(topic, {}).get("enqueued", 0))


def new_messages(queues: Queues, topic: str, after: int, limit: int = 500) -> list[Message]:
    """Messages of ``topic`` with an id above ``after`` that are still stored,
    in any state (completed ones included, where the backend keeps them)."""
    pages = [
        queues.messages(topic, None, after=after, limit=limit),
        queues.messages(topic, "completed", after=after, limit=limit),
    ]
    # A full page may stop short of ids the other page holds: only ids up to
    # the end of every full page are known to be all there, and the next
    # look goes on from the last one returned.
    ends = [page[-1].id for page in pages if len(page) == limit]
    cut = min(ends) if ends else None
    found = {m.id: m for page in pages for m in page if cut is None or m.id <= cut}
    return [found[i] for i in sorted(found)]


def follow(queues: Queues, topic: str, after: int) -> Iterator[Message]:
    """Every message put on ``topic`` after ``after`` that is stored when
    looked for, once, in id order; waits for more (a caller stops it)."""
    while True:
        batch = new_messages(queues, topic, after)
        for message in batch:
            after = message.id
            yield message
        if not batch:
            time.sleep(0.2)


def set_paused(queues: Queues, topic: str, paused: bool) -> str:
    """Pause or resume a topic that exists; the line to show."""
    existing_topic(queues, topic)
    try:
        if paused:
            queues.pause(topic)
        else:
            queues.resume(topic)
    except QueueError as exc:
        raise CommandFailed(f"Could not {'pause' if paused else 'resume'} {topic!r}: {exc}") from exc
    if paused:
        return f"Paused {topic}: it accepts messages, and consumers take none until it is resumed."
    return f"Resumed {topic}."
