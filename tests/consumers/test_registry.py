"""The @consumer decorator, its options, Backoff and autodiscovery."""

from __future__ import annotations

import random
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from dqadmin.consumers import Backoff, Consumer, ConsumerRegistry, autodiscover
from queuecore import InvalidTopic


def test_decorator_registers_and_returns_the_function(registry: ConsumerRegistry) -> None:
    @registry.consumer("q1", concurrency=3, max_attempts=7, permanent=KeyError)
    def handle(value: Any) -> str:
        return f"got {value}"

    assert handle("x") == "got x"  # still an ordinary function
    entry = registry.get("q1")
    assert (entry.topic, entry.concurrency, entry.max_attempts) == ("q1", 3, 7)
    assert entry.permanent == (KeyError,)
    assert entry.wants_task is False
    assert entry.name.endswith("test_decorator_registers_and_returns_the_function.<locals>.handle")
    assert registry.topics() == ["q1"] and "q1" in registry and len(registry) == 1


def test_handler_asking_for_the_task(registry: ConsumerRegistry) -> None:
    @registry.consumer("q1")
    def with_task(value: Any, task: Any) -> Any:
        return (value, task)

    @registry.consumer("q2")
    def keyword_only(value: Any, *, task: Any = None) -> Any:
        return (value, task)

    assert registry.get("q1").wants_task and registry.get("q2").wants_task

    class FakeTask:
        value = {"uuid": "1"}

    fake = FakeTask()
    assert registry.get("q1")(fake) == ({"uuid": "1"}, fake)


def test_invalid_topic_is_refused(registry: ConsumerRegistry) -> None:
    with pytest.raises(InvalidTopic):
        registry.consumer("../etc")


@pytest.mark.parametrize(
    "options",
    [
        {"concurrency": 0},
        {"concurrency": True},
        {"max_attempts": 0},
        {"max_attempts": 1.5},
        {"permanent": (ValueError, "nope")},
        {"backoff": -1},
        {"backoff": "1s"},
    ],
)
def test_bad_options_are_refused(registry: ConsumerRegistry, options: dict[str, Any]) -> None:
    with pytest.raises(ImproperlyConfigured):
        registry.consumer("q1", **options)


def test_one_consumer_per_topic(registry: ConsumerRegistry) -> None:
    def first(value: Any) -> None: ...

    def second(value: Any) -> None: ...

    registry.consumer("q1")(first)
    registry.consumer("q1", concurrency=2)(first)  # the same function again: replaced
    assert registry.get("q1").concurrency == 2
    with pytest.raises(ImproperlyConfigured, match="already has a consumer"):
        registry.consumer("q1")(second)


def test_backoff_grows_exponentially_with_a_cap() -> None:
    exact = Backoff(base=0.5, factor=2.0, cap=3.0, jitter=False)
    assert [exact(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert exact(10_000) == 3.0  # no OverflowError
    jittered = Backoff(base=1.0, cap=8.0, rng=random.Random(4))
    delays = [jittered(5) for _ in range(200)]
    assert all(0.0 <= d <= 8.0 for d in delays)
    assert len(set(delays)) > 100  # full jitter: spread, not one value
    with pytest.raises(ValueError):
        Backoff(factor=0.5)


def test_backoff_forms(registry: ConsumerRegistry) -> None:
    registry.consumer("fixed", backoff=2)(lambda v: None)
    registry.consumer("custom", backoff=lambda attempt: attempt * 10.0)(lambda v: None)
    registry.consumer("default")(lambda v: None)
    assert registry.get("fixed").delay(5) == 2.0
    assert registry.get("custom").delay(3) == 30.0
    assert 0.0 <= registry.get("default").delay(1) <= 1.0
    assert isinstance(Consumer("t", print).backoff, Backoff)


def test_autodiscover_finds_the_demo_consumers() -> None:
    found = autodiscover()
    assert {"q1", "q2"} <= set(found.topics())
    assert found.get("q1").name == "dqadmin.demo.consumers.got_message"
    assert autodiscover() is found  # idempotent
