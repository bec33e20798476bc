"""Register consumers: functions that handle the messages of a topic.

In any installed app, write a ``consumers.py``::

    import logging

    from dqadmin.consumers import Backoff, consumer

    log = logging.getLogger(__name__)

    @consumer("emails", concurrency=4, max_attempts=5,
              backoff=Backoff(base=2.0, cap=600.0), permanent=(ValueError,))
    def send_email(value, task):
        log.info("sending %s (message %d, attempt %d)", value, task.id, task.attempts)
        ...

``manage.py runconsumers`` imports every installed app's ``consumers.py``
(like the admin's ``admin.py``) and runs the handlers it registered. A
handler receives the decoded message value; when it declares a parameter
named ``task`` it also gets the :class:`queuecore.Task` (``id``,
``attempts``, ``enqueued_at``, ``topic``, ``errors``). It must not settle the
task itself: returning completes the message, raising retries it (see
:mod:`dqadmin.runner`).
"""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import autodiscover_modules

from queuecore import validate_topic

Handler = TypeVar("Handler", bound=Callable[..., Any])

# Defaults of the @consumer options.
DEFAULT_CONCURRENCY = 1
DEFAULT_MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class Backoff:
    """Seconds to wait before the next attempt: exponential with full jitter,
    capped. After attempt ``n`` (1 for the first delivery) the delay is drawn
    uniformly from ``[0, min(cap, base * factor ** (n - 1))]``; with
    ``jitter=False`` it is that upper bound.

    >>> Backoff(base=1.0, factor=2.0, cap=5.0, jitter=False)(1), Backoff(jitter=False, cap=5.0)(10)
    (1.0, 5.0)
    >>> 0.0 <= Backoff(base=1.0, cap=60.0)(3) <= 4.0
    True
    """

    base: float = 1.0
    cap: float = 300.0
    factor: float = 2.0
    jitter: bool = True
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0 or self.factor < 1:
            raise ValueError("Backoff needs base >= 0, cap >= 0 and factor >= 1")

    def ceiling(self, attempt: int) -> float:
        """The largest delay after ``attempt`` (1-based)."""
        try:
            grown = self.base * self.factor ** max(0, attempt - 1)
        except OverflowError:
            return self.cap
        return min(self.cap, grown) if math.isfinite(grown) else self.cap

    def __call__(self, attempt: int) -> float:
        top = self.ceiling(attempt)
        # Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"):
        # retries of many failed messages spread out instead of arriving together.
        return self.rng.uniform(0.0, top) if self.jitter else top


BackoffSpec = Backoff | Callable[[int], float] | float | int | None


def resolve_backoff(spec: BackoffSpec) -> Callable[[int], float]:
    if spec is None:
        return Backoff()
    if isinstance(spec, bool):
        raise ImproperlyConfigured("backoff must be a Backoff, a callable or a number of seconds")
    if isinstance(spec, int | float):
        if spec < 0:
            raise ImproperlyConfigured("backoff in seconds must be >= 0")
        delay = float(spec)
        return lambda attempt: delay
    if callable(spec):
        return spec
    raise ImproperlyConfigured("backoff must be a Backoff, a callable or a number of seconds")


@dataclass(frozen=True)
class Consumer:
    """A registered handler of one topic, with its options."""

    topic: str
    func: Callable[..., Any]
    concurrency: int = DEFAULT_CONCURRENCY
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff: Callable[[int], float] = field(default_factory=Backoff)
    permanent: tuple[type[BaseException], ...] = ()
    wants_task: bool = False

    @property
    def name(self) -> str:
        """The handler's dotted name, for logs."""
        module = getattr(self.func, "__module__", None) or "?"
        qualname = getattr(self.func, "__qualname__", None) or repr(self.func)
        return f"{module}.{qualname}"

    def __call__(self, task: Any) -> Any:
        """Run the handler on a task's value (and the task, if it asks)."""
        if self.wants_task:
            return self.func(task.value, task=task)
        return self.func(task.value)

    def delay(self, attempt: int) -> float:
        """Seconds before the next delivery after ``attempt`` failed."""
        return max(0.0, float(self.backoff(attempt)))


def _wants_task(func: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    param = params.get("task")
    return param is not None and param.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ImproperlyConfigured(f"{name} must be a positive integer, not {value!r}")
    return value


class ConsumerRegistry:
    """Topic -> :class:`Consumer`. One handler per topic: the message of a
    topic is handled once, by one function."""

    def __init__(self) -> None:
        # Named like the admin site's, so autodiscover_modules(register_to=)
        # can roll back what a consumers.py that failed to import registered.
        self._registry: dict[str, Consumer] = {}

    def consumer(
        self,
        topic: str,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff: BackoffSpec = None,
        permanent: tuple[type[BaseException], ...] | type[BaseException] = (),
    ) -> Callable[[Handler], Handler]:
        """Decorator: register the function as the handler of ``topic``.

        - ``concurrency``: worker threads for this topic in each
          runconsumers process (``--concurrency`` overrides it);
        - ``max_attempts``: deliveries before the message goes to the
          failed store (1: never retried);
        - ``backoff``: a :class:`Backoff`, a callable ``attempt -> seconds``
          or a fixed number of seconds (default ``Backoff()``: 1 s doubling,
          full jitter, capped at 5 minutes);
        - ``permanent``: exception classes that fail the message at once.

        The function is returned unchanged, so it can still be called directly.
        """
        validate_topic(topic)
        concurrency = _positive_int("concurrency", concurrency)
        max_attempts = _positive_int("max_attempts", max_attempts)
        delay = resolve_backoff(backoff)
        kinds = permanent if isinstance(permanent, tuple) else (permanent,)
        for kind in kinds:
            if not (isinstance(kind, type) and issubclass(kind, BaseException)):
                raise ImproperlyConfigured(f"permanent must hold exception classes, not {kind!r}")

        def register(func: Handler) -> Handler:
            if not callable(func):
                raise ImproperlyConfigured(
                    f"@consumer({topic!r}) decorates a function, not {func!r}"
                )
            entry = Consumer(
                topic=topic,
                func=func,
                concurrency=concurrency,
                max_attempts=max_attempts,
                backoff=delay,
                permanent=kinds,
                wants_task=_wants_task(func),
            )
            existing = self._registry.get(topic)
            # The same function registered again (a module imported twice,
            # a test reloading it) replaces itself; another one is a mistake.
            if existing is not None and existing.name != entry.name:
                raise ImproperlyConfigured(
                    f"topic {topic!r} already has a consumer: {existing.name} (not adding {entry.name})"
                )
            self._registry[topic] = entry
            return func

        return register

    def get(self, topic: str) -> Consumer:
        """The consumer of ``topic``; KeyError if none is registered."""
        return self._registry[topic]

    def topics(self) -> list[str]:
        """Registered topics, sorted."""
        return sorted(self._registry)

    def unregister(self, topic: str) -> None:
        self._registry.pop(topic, None)

    def clear(self) -> None:
        self._registry.clear()

    def __contains__(self, topic: object) -> bool:
        return topic in self._registry

    def __iter__(self) -> Iterator[Consumer]:
        return iter([self._registry[t] for t in self.topics()])

    def __len__(self) -> int:
        return len(self._registry)


# The project-wide registry, filled by the apps' consumers.py modules.
registry = ConsumerRegistry()
consumer = registry.consumer


def autodiscover() -> ConsumerRegistry:
    """Import every installed app's ``consumers.py`` (like the admin's
    ``autodiscover``) and return the registry they filled."""
    autodiscover_modules("consumers", register_to=registry)
    return registry
