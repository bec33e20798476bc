"""ASGI entry point; runs dq's system checks first, like wsgi.py."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dqsite.settings")

application = get_asgi_application()

from dqadmin.checks import raise_on_errors  # noqa: E402  (needs the app registry)

raise_on_errors()
