"""Every error queuecore raises: one root, specific subclasses with details.

Catch :class:`QueueError` to handle anything the queue reports; catch a
subclass to handle one case. Each carries what it is about as attributes.
"""

from __future__ import annotations


class QueueError(Exception):
    """The root of every error raised by queuecore."""


class InvalidTopic(QueueError, ValueError):
    """A topic name that is not 1 to 100 of ``[A-Za-z0-9_.-]`` or starts with a dot."""

    def __init__(self, topic: object, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"invalid topic name {topic!r}: {reason}")


class InvalidOption(QueueError, ValueError):
    """An unknown option, or an option with a value out of its range."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"option {name!r}: {reason}")


class MessageTooLarge(QueueError, ValueError):
    """A message whose encoded size is over ``max_message_size``."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"message of {size} bytes is over the limit of {limit} bytes")


class SerializationError(QueueError, ValueError):
    """A value the serializer cannot encode, or stored bytes it cannot decode."""

    def __init__(self, message: str, *, topic: str | None = None, id: int | None = None) -> None:
        self.topic = topic
        self.id = id
        super().__init__(message)


class QueueFull(QueueError):
    """The topic holds ``max_queue_size`` messages and no room came in time."""

    def __init__(self, topic: str, limit: int) -> None:
        self.topic = topic
        self.limit = limit
        super().__init__(f"topic {topic!r} is full ({limit} messages)")


class MessageNotFound(QueueError, KeyError):
    """No message with this id in this topic (or not in the state asked for)."""

    def __init__(self, topic: str, id: object, state: str | None = None) -> None:
        self.topic = topic
        self.id = id
        self.state = state
        where = f" in state {state!r}" if state else ""
        super().__init__(f"no message {id!r}{where} in topic {topic!r}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DiskFull(QueueError, OSError):
    """The disk holding the queue has no room; nothing was acknowledged."""

    def __init__(self, path: str, detail: str = "") -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"no space left on the device holding {path}" + (f": {detail}" if detail else ""))


class StorageError(QueueError, OSError):
    """An I/O error from the disk (a failed fsync, a read error). Never retried
    into a false success: the operation that met it did not happen durably."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"I/O error on {path}: {detail}")


class CorruptSlab(QueueError):
    """A slab or meta file whose bytes do not pass their checks."""

    def __init__(self, path: str, offset: int | None, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        at = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"corrupt slab {path}{at}: {reason}")


class Closed(QueueError):
    """The :class:`~queuecore.Queues` object was closed."""

    def __init__(self, what: str = "queues") -> None:
        super().__init__(f"{what} is closed")
