"""Settings of the child processes started by the consumer tests: the test
settings plus the test app, with the queue location from ``DQ_LOCATION`` and
its options from ``DQ_OPTIONS`` (a JSON object, over the test settings' own,
e.g. ``{"prefix": "dqcons-..."}`` for Redis)."""

from __future__ import annotations

import json
import os

from tests.settings import *  # noqa: F403
from tests.settings import DQ, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.consumers.testapp.apps.TestAppConfig"]
DQ = {
    **DQ,
    "LOCATION": os.environ.get("DQ_LOCATION", DQ["LOCATION"]),
    "OPTIONS": {**DQ["OPTIONS"], **json.loads(os.environ.get("DQ_OPTIONS") or "{}")},
    "HEARTBEAT_INTERVAL": float(os.environ.get("DQ_HEARTBEAT_INTERVAL", "0.2")),
}
