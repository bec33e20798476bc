"""WSGI entry point. Runs dq's system checks first so a misconfigured
production server refuses to start instead of serving with a known key."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dqsite.settings")

application = get_wsgi_application()

from dqadmin.checks import raise_on_errors  # noqa: E402  (needs the app registry)

raise_on_errors()
