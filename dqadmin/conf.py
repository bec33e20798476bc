"""dq's Django settings, read lazily so ``override_settings`` works.

Everything lives in one ``DQ`` dict in the project's settings::

    DQ = {
        "LOCATION": "var/queues",      # a directory, "memory://" or "redis://host:port/db"
        "OPTIONS": {"fsync_put": True},  # keyword arguments of queuecore.Queues
        "HEARTBEAT_INTERVAL": 2.0,     # seconds between consumer heartbeats
        "CONSUMER_TIMEOUT": 15.0,      # a consumer silent this long is shown as dead
        "API_TOKEN": None,             # bearer token for api/stats and metrics
    }
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Where the queues live; the location picks the backend.
    "LOCATION": "var/queues",
    # Keyword arguments passed to queuecore.Queues (see queuecore.defaults).
    "OPTIONS": {},
    # Seconds between two heartbeats of a runconsumers process.
    "HEARTBEAT_INTERVAL": 2.0,
    # A consumer whose last heartbeat is older than this is shown as gone.
    "CONSUMER_TIMEOUT": 15.0,
    # Bearer token that lets a scraper read api/stats and metrics without a
    # staff session (None: staff session only).
    "API_TOKEN": None,
}


class Settings:
    """One property per setting; each read goes back to django.conf.settings."""

    @property
    def _dq(self) -> dict[str, Any]:
        value = getattr(settings, "DQ", {})
        return value if isinstance(value, dict) else {}

    def _get(self, key: str) -> Any:
        return self._dq.get(key, DEFAULTS[key])

    @property
    def LOCATION(self) -> str:
        value = self._get("LOCATION")
        return os.fspath(value) if isinstance(value, os.PathLike) else str(value)

    @property
    def OPTIONS(self) -> dict[str, Any]:
        value = self._get("OPTIONS")
        return dict(value) if isinstance(value, dict) else {}

    @property
    def HEARTBEAT_INTERVAL(self) -> float:
        return float(self._get("HEARTBEAT_INTERVAL"))

    @property
    def CONSUMER_TIMEOUT(self) -> float:
        return float(self._get("CONSUMER_TIMEOUT"))

    @property
    def API_TOKEN(self) -> str | None:
        value = self._get("API_TOKEN")
        return str(value) if value else None


conf = Settings()
