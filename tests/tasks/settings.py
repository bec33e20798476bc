"""Settings of the child processes of the tasks tests: the consumer tests'
child settings (location from DQ_LOCATION, options from DQ_OPTIONS), whose
``TASKS`` (from tests/settings.py) names ``DQBackend``."""

from __future__ import annotations

from tests.consumers.settings import *  # noqa: F403
