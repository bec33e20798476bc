"""Settings of the ``runconsumers`` processes of the reliability campaign:
the consumer tests' child settings (queue location and options from
``DQ_LOCATION`` / ``DQ_OPTIONS``) plus this directory's test app."""

from __future__ import annotations

from tests.consumers.settings import *  # noqa: F403
from tests.consumers.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.reliability.testapp.apps.ReliabilityAppConfig"]
