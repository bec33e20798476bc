"""Argument checks shared by the dq queue commands."""

from __future__ import annotations

from django.core.management.base import CommandError

from queuecore import InvalidTopic, Queues, validate_topic


def existing_topic(queues: Queues, topic: str) -> str:
    """``topic`` if it is a valid name of a topic that exists, else CommandError."""
    try:
        validate_topic(topic)
    except InvalidTopic as exc:
        raise CommandError(str(exc)) from exc
    if topic not in queues.topics():
        known = ", ".join(queues.topics()) or "none yet"
        raise CommandError(f"No topic named {topic!r} (topics: {known}).")
    return topic
