"""Bad input: each case gets its own typed error, carrying its details."""

from __future__ import annotations

from typing import Any

import pytest

import queuecore
from queuecore import (
    Closed,
    CorruptSlab,
    DiskFull,
    InvalidOption,
    InvalidTopic,
    MessageNotFound,
    MessageTooLarge,
    QueueError,
    QueueFull,
    Queues,
    SerializationError,
    StorageError,
    validate_topic,
)

from .conftest import QueuesFactory


def test_every_error_is_a_queue_error() -> None:
    for error in (
        Closed,
        CorruptSlab,
        DiskFull,
        InvalidOption,
        InvalidTopic,
        MessageNotFound,
        MessageTooLarge,
        QueueFull,
        SerializationError,
        StorageError,
    ):
        assert issubclass(error, QueueError), error
        assert getattr(queuecore, error.__name__) is error
    # Bad input is also a ValueError; a missing message is also a KeyError.
    assert issubclass(InvalidTopic, ValueError)
    assert issubclass(MessageTooLarge, ValueError)
    assert issubclass(MessageNotFound, KeyError)
    assert issubclass(DiskFull, OSError)


@pytest.mark.parametrize(
    ("topic", "words"),
    [
        ("../x", "dot"),
        ("..", "dot"),
        (".hidden", "dot"),
        ("", "empty"),
        ("a" * 101, "100"),
        ("a/b", "allowed"),
        ("a b", "allowed"),
        (None, "str"),
        (7, "str"),
    ],
    ids=repr,
)
def test_invalid_topic_carries_the_topic_and_why(qs: Queues, topic: Any, words: str) -> None:
    with pytest.raises(InvalidTopic) as info:
        qs.put(topic, "x")
    error = info.value
    assert error.topic == topic
    assert words in error.reason
    assert repr(topic) in str(error)
    with pytest.raises(InvalidTopic):
        validate_topic(topic)


def test_a_topic_of_100_characters_is_fine(qs: Queues) -> None:
    assert validate_topic("a" * 100) == "a" * 100
    qs.put("a" * 100, 1)
    assert qs.topics() == ["a" * 100]


def test_invalid_topic_never_touches_storage(make_queues: QueuesFactory, tmp_path: Any) -> None:
    qs = make_queues()
    for topic in ("../escaped", "../../escaped", ".hidden"):
        with pytest.raises(InvalidTopic):
            qs.put(topic, 1)
    assert qs.topics() == []
    assert not (tmp_path / "escaped").exists()
    assert not (tmp_path.parent / "escaped").exists()


def test_message_too_large_carries_size_and_limit(make_queues: QueuesFactory) -> None:
    qs = make_queues(max_message_size=64, serializer="raw")
    with pytest.raises(MessageTooLarge) as info:
        qs.put("q1", b"z" * 65)
    assert (info.value.size, info.value.limit) == (65, 64)
    assert "65" in str(info.value) and "64" in str(info.value)
    # The size is the encoded size: msgpack adds its header bytes.
    qs = make_queues(max_message_size=64)
    with pytest.raises(MessageTooLarge) as info:
        qs.put("q1", b"z" * 64)
    assert info.value.size > 64 and info.value.limit == 64


def test_queue_full_carries_topic_and_limit(make_queues: QueuesFactory) -> None:
    qs = make_queues(max_queue_size=1)
    qs.put("q1", 1)
    with pytest.raises(QueueFull) as info:
        qs.put("q1", 2, timeout=0)
    assert (info.value.topic, info.value.limit) == ("q1", 1)
    # More than the limit at once can never fit: refused without waiting.
    with pytest.raises(QueueFull):
        qs.put_many("q2", [1, 2], timeout=None)


def test_message_not_found_carries_topic_and_id(qs: Queues) -> None:
    with pytest.raises(MessageNotFound) as info:
        qs.peek("q1", 99)
    assert (info.value.topic, info.value.id) == ("q1", 99)
    assert "99" in str(info.value) and "q1" in str(info.value)
    with pytest.raises(KeyError):
        qs.delete("q1", 99)


def test_closed_names_itself(qs: Queues) -> None:
    qs.close()
    with pytest.raises(Closed, match="closed"):
        qs.put("q1", 1)


BAD_IDS: list[Any] = [0, -1, True, False, "1", 1.0, None]


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_bad_ids_are_value_errors(qs: Queues, bad: Any) -> None:
    qs.put("q1", 1)
    for call in (qs.peek, qs.requeue, qs.delete):
        with pytest.raises(ValueError):
            call("q1", bad)
    assert [m.value for m in qs.messages("q1")] == [1]


@pytest.mark.parametrize("bad", [0, -1, True, "5", 2.0, None], ids=repr)
def test_bad_limits_are_value_errors(qs: Queues, bad: Any) -> None:
    with pytest.raises(ValueError):
        qs.take_many("q1", bad, timeout=0)
    with pytest.raises(ValueError):
        qs.messages("q1", limit=bad)


@pytest.mark.parametrize("bad", [-1, True, "3", 1.5], ids=repr)
def test_bad_after_is_a_value_error(qs: Queues, bad: Any) -> None:
    with pytest.raises(ValueError):
        qs.messages("q1", after=bad)


@pytest.mark.parametrize("bad", ["bogus", "READY", "", "all"])
def test_bad_states_are_value_errors(qs: Queues, bad: str) -> None:
    with pytest.raises(ValueError):
        qs.messages("q1", state=bad)
    with pytest.raises(ValueError):
        qs.purge("q1", state=bad)


@pytest.mark.parametrize("state", ["in_progress", "completed"])
def test_purge_refuses_states_it_cannot_purge(qs: Queues, state: str) -> None:
    qs.put("q1", 1)
    task = qs.take("q1", timeout=0)
    with pytest.raises(ValueError):
        qs.purge("q1", state=state)
    assert task is not None and task.complete() is True


def test_negative_timeouts_and_delays_are_value_errors(qs: Queues) -> None:
    with pytest.raises(ValueError):
        qs.take("q1", timeout=-1)
    with pytest.raises(ValueError):
        qs.take_many("q1", 1, timeout=-0.5)
    qs.put("q1", 1)
    task = qs.take("q1", timeout=0)
    assert task is not None
    with pytest.raises(ValueError):
        task.retry(delay=-1)
    assert task.complete() is True


def test_unknown_option_and_serializer() -> None:
    with pytest.raises(InvalidOption) as info:
        Queues("memory://errors", visibilty_timeout=3)  # misspelt on purpose
    assert info.value.name == "visibilty_timeout"
    with pytest.raises(InvalidOption) as info:
        Queues("memory://errors", serializer="pickle")
    assert info.value.name == "serializer"
    with pytest.raises(InvalidOption):
        Queues("memory://errors", max_message_size=0)
    with pytest.raises(InvalidOption):
        Queues("ftp://example.com/queues")


def test_values_the_serializer_refuses(make_queues: QueuesFactory) -> None:
    with pytest.raises(SerializationError):
        make_queues().put("q1", object())
    with pytest.raises(SerializationError):
        make_queues(serializer="raw").put("q1", "not bytes")
    with pytest.raises(SerializationError):
        make_queues(serializer="json").put("q1", b"bytes")
