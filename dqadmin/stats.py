"""dq's statistics as the web process sees them.

:func:`queuecore.stats.build_stats` is the one builder (``dq stats`` uses it
too); here it gets the ``DQ`` setting's consumer timeout and this process's
rate history (:mod:`dqadmin.history`), so the overview page, its fragment,
``api/stats``, ``metrics`` and ``manage.py dqstats`` show rates.
"""

from __future__ import annotations

from typing import Any

from dqadmin.conf import conf
from dqadmin.history import history_for
from queuecore import Queues
from queuecore import stats as core_stats
from queuecore.backend import public_location

__all__ = ["build_stats", "public_location"]


def build_stats(queues: Queues, now: float | None = None) -> dict[str, Any]:
    """:func:`queuecore.stats.build_stats` with ``settings.DQ``'s
    ``CONSUMER_TIMEOUT`` and the rates of this process's history."""
    return core_stats.build_stats(
        queues, now, consumer_timeout=conf.CONSUMER_TIMEOUT, history=history_for(queues.location)
    )
