"""The one :class:`queuecore.Queues` a Django process uses, opened lazily
from the ``DQ`` setting and reopened when the setting changes."""

from __future__ import annotations

import threading

from dqadmin.conf import conf
from queuecore import Queues

_lock = threading.Lock()
_cache: dict[str, Queues] = {}


def get_queues() -> Queues:
    """The process-wide Queues for settings.DQ (thread-safe, fork-safe:
    queuecore reopens its files in a forked child)."""
    location, options = conf.LOCATION, conf.OPTIONS
    key = f"{location}|{sorted(options.items())!r}"
    with _lock:
        qs = _cache.get(key)
        if qs is None or qs.closed:
            qs = _cache[key] = Queues(location, **options)
        return qs


def close_queues() -> None:
    """Close every cached Queues, and the task result stores beside them
    (tests, shutdown)."""
    from dqadmin.tasks.results import close_stores

    with _lock:
        for qs in _cache.values():
            qs.close()
        _cache.clear()
    close_stores()
