"""System checks for dq's settings, with fixed ids (``dqadmin.E001`` ...).

They also tell a host project what it forgot when it added the app:

- ``dqadmin.E001``: DEBUG off with the bundled site's development key.
- ``dqadmin.E002`` to ``E006``: a malformed ``DQ`` setting.
- ``dqadmin.E007``: ``"django_htmx"`` is not in ``INSTALLED_APPS``.
- ``dqadmin.E008``: ``django_htmx.middleware.HtmxMiddleware`` is not in ``MIDDLEWARE``.
- ``dqadmin.E009``: ``DQ["LOCATION"]`` cannot be used (not a directory, not
  writable, a bad URL, or redis-py missing for ``redis://``).
- ``dqadmin.W001``: ``DQ["LOCATION"]`` is ``memory://``, which no other
  process (``runconsumers``, another web worker) sees.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

# The bundled site's key when none is given. Fine on a laptop; the check
# dqadmin.E001 refuses it when DEBUG is off.
DEVELOPMENT_SECRET_KEY = "dq-development-key-never-use-in-production"

HTMX_MIDDLEWARE = "django_htmx.middleware.HtmxMiddleware"


@checks.register(checks.Tags.security)
def check_secret_key(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if not settings.DEBUG and settings.SECRET_KEY == DEVELOPMENT_SECRET_KEY:
        return [
            checks.Error(
                "DEBUG is off but SECRET_KEY is the development key.",
                hint="Set DQ_SECRET_KEY to a long random value before running in production.",
                id="dqadmin.E001",
            )
        ]
    return []


@checks.register()
def check_dq_setting(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    value = getattr(settings, "DQ", {})
    if not isinstance(value, dict):
        return [checks.Error("settings.DQ must be a dict.", id="dqadmin.E002")]
    location = _location(value)
    if not isinstance(location, str) or not location:
        errors.append(
            checks.Error(
                "settings.DQ['LOCATION'] must be a non-empty string.",
                hint="A directory, 'memory://' or 'redis://host:port/db'.",
                id="dqadmin.E003",
            )
        )
    elif "://" in location and location.split("://", 1)[0] not in {"memory", "redis", "rediss", "file"}:
        errors.append(
            checks.Error(
                f"settings.DQ['LOCATION'] has an unknown scheme: {location!r}.",
                hint="Use a directory, 'memory://' or 'redis://host:port/db'.",
                id="dqadmin.E003",
            )
        )
    options = value.get("OPTIONS", {})
    if not isinstance(options, dict):
        errors.append(checks.Error("settings.DQ['OPTIONS'] must be a dict.", id="dqadmin.E004"))
    else:
        from queuecore.defaults import OPTION_NAMES

        unknown = sorted(set(options) - set(OPTION_NAMES))
        if unknown:
            errors.append(
                checks.Error(
                    f"settings.DQ['OPTIONS'] has unknown options: {', '.join(unknown)}.",
                    hint=f"Known options: {', '.join(sorted(OPTION_NAMES))}.",
                    id="dqadmin.E005",
                )
            )
    for key in ("HEARTBEAT_INTERVAL", "CONSUMER_TIMEOUT"):
        if key in value:
            try:
                ok = float(value[key]) > 0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                errors.append(
                    checks.Error(f"settings.DQ[{key!r}] must be a positive number.", id="dqadmin.E006")
                )
    return errors


def _location(value: dict[str, Any]) -> object:
    """settings.DQ's location, a path object (BASE_DIR / "queues") as a string."""
    location = value.get("LOCATION", "var/queues")
    return os.fspath(location) if isinstance(location, os.PathLike) else location


@checks.register()
def check_htmx(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The dashboard's live parts need django-htmx's app and middleware."""
    errors: list[checks.CheckMessage] = []
    if not apps.is_installed("django_htmx"):
        errors.append(
            checks.Error(
                '"django_htmx" is not in INSTALLED_APPS.',
                hint='Add "django_htmx" to INSTALLED_APPS, beside "dqadmin".',
                id="dqadmin.E007",
            )
        )
    if not any(_is_htmx_middleware(entry) for entry in getattr(settings, "MIDDLEWARE", None) or []):
        errors.append(
            checks.Error(
                f"{HTMX_MIDDLEWARE} is not in MIDDLEWARE: the dashboard cannot tell an htmx "
                "request from a page load.",
                hint=f'Add "{HTMX_MIDDLEWARE}" to MIDDLEWARE (after the session and auth middleware).',
                id="dqadmin.E008",
            )
        )
    return errors


def _is_htmx_middleware(entry: object) -> bool:
    if entry == HTMX_MIDDLEWARE:
        return True
    try:
        from django_htmx.middleware import HtmxMiddleware

        found = import_string(str(entry))
        return isinstance(found, type) and issubclass(found, HtmxMiddleware)
    except ImportError:
        return False


@checks.register()
def check_location(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """A location that cannot work, found before a page or a consumer fails on it."""
    value = getattr(settings, "DQ", {})
    location = _location(value) if isinstance(value, dict) else None
    if not isinstance(location, str) or not location:
        return []  # dqadmin.E002/E003 say so
    scheme = location.split("://", 1)[0] if "://" in location else ""
    if scheme == "memory":
        return [
            checks.Warning(
                f"settings.DQ['LOCATION'] is {location!r}: the queue lives in this process only.",
                hint="runconsumers and other web workers cannot see it; use a directory or redis://.",
                id="dqadmin.W001",
            )
        ]
    if scheme in ("redis", "rediss", "unix"):
        problem = _redis_problem(location)
    elif scheme in ("", "file"):
        problem = _directory_problem(location.removeprefix("file://"))
    else:
        return []  # dqadmin.E003
    if problem is None:
        return []
    from queuecore.backend import public_location

    return [
        checks.Error(
            f"settings.DQ['LOCATION'] {public_location(location)!r} cannot be used: {problem}.",
            hint="A directory this process can create or write, 'memory://' or 'redis://host:port/db'.",
            id="dqadmin.E009",
        )
    ]


def _directory_problem(path: str) -> str | None:
    if os.path.exists(path):
        if not os.path.isdir(path):
            return "it exists and is not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return "the directory is not writable by this process"
        return None
    # It is created on first use: its nearest existing parent must allow it.
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"{parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"it does not exist and {parent} is not writable by this process"
    return None


def _redis_problem(location: str) -> str | None:
    try:
        import redis  # noqa: F401
    except ImportError:
        return "redis-py is not installed (pip install 'dq[redis]')"
    try:
        parts = urlsplit(location)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme != "unix" and not parts.hostname:
        return "the URL names no host"
    return None


def raise_on_errors() -> None:
    """Refuse to start a server (wsgi/asgi) while a dq check reports an error."""
    found = [m for m in check_secret_key() + check_dq_setting() if m.is_serious()]
    if found:
        raise ImproperlyConfigured("; ".join(f"{m.id}: {m.msg} {m.hint or ''}".strip() for m in found))
