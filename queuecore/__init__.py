"""queuecore: durable, disk-backed message queues for Python.

>>> from queuecore import Queues
>>> qs = Queues("memory://doctest")
>>> qs.put("q1", {"uuid": "1"})
1
>>> qs.take("q1", timeout=0).value
{'uuid': '1'}
"""

from queuecore.backend import Backend, Lease
from queuecore.errors import (
    Closed,
    CorruptSlab,
    DiskFull,
    InvalidOption,
    InvalidTopic,
    MessageNotFound,
    MessageTooLarge,
    QueueError,
    QueueFull,
    SerializationError,
    StorageError,
)
from queuecore.queues import Message, Queues, Task, validate_id, validate_topic
from queuecore.serializers import JsonSerializer, MsgpackSerializer, RawSerializer, Serializer

__all__ = [
    "Backend",
    "Closed",
    "CorruptSlab",
    "DiskFull",
    "InvalidOption",
    "InvalidTopic",
    "JsonSerializer",
    "Lease",
    "Message",
    "MessageNotFound",
    "MessageTooLarge",
    "MsgpackSerializer",
    "QueueError",
    "QueueFull",
    "Queues",
    "RawSerializer",
    "SerializationError",
    "Serializer",
    "StorageError",
    "Task",
    "validate_id",
    "validate_topic",
]

__version__ = "0.1.0"
