"""Demo messages: random ``{"uuid": ...}`` values scattered between topics.

Used by ``manage.py dqproduce`` and by the dashboard's demo producer.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Sequence

from queuecore import Queues, validate_topic

# The seed's two topics.
DEMO_TOPICS = ("q1", "q2")
# Without a rate, messages are put in batches of this many per topic.
BATCH = 200


def demo_message() -> dict[str, str]:
    """One demo value: ``{"uuid": "<a random uuid4>"}``."""
    return {"uuid": str(uuid.uuid4())}


def produce(
    queues: Queues,
    n: int,
    topics: Sequence[str] = DEMO_TOPICS,
    rate: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    rng: random.Random | None = None,
) -> dict[str, int]:
    """Put ``n`` demo messages, each on a topic picked at random from
    ``topics``; at most ``rate`` per second when given. ``progress(done, n)``
    is called as they go. Returns how many went to each topic.

    >>> qs = Queues("memory://produce-doctest")
    >>> counts = produce(qs, 10, ["a", "b"])
    >>> sum(counts.values()), sorted(qs.topics())
    (10, ['a', 'b'])
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, not {n!r}")
    if not topics:
        raise ValueError("at least one topic is needed")
    if rate is not None and not rate > 0:
        raise ValueError(f"rate must be a positive number of messages per second, not {rate!r}")
    topics = [validate_topic(t) for t in topics]
    rng = rng or random.Random()
    counts = dict.fromkeys(topics, 0)
    done = 0
    if rate is None:
        while done < n:
            chunk = min(BATCH, n - done)
            picked: dict[str, list[dict[str, str]]] = {}
            for _ in range(chunk):
                picked.setdefault(rng.choice(topics), []).append(demo_message())
            for topic, values in picked.items():
                queues.put_many(topic, values)
                counts[topic] += len(values)
            done += chunk
            if progress:
                progress(done, n)
        return counts
    start = time.monotonic()
    for i in range(n):
        # Pace against the start time, so slow puts do not lower the rate.
        wait = start + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        topic = rng.choice(topics)
        queues.put(topic, demo_message())
        counts[topic] += 1
        done += 1
        if progress:
            progress(done, n)
    return counts
