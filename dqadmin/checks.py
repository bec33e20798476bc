"""System checks for dq's settings, with fixed ids (``dqadmin.E001`` ...)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured


@checks.register(checks.Tags.security)
def check_secret_key(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from dqadmin.settings import DEVELOPMENT_SECRET_KEY

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
    location = value.get("LOCATION", "var/queues")
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


def raise_on_errors() -> None:
    """Refuse to start a server (wsgi/asgi) while a dq check reports an error."""
    found = [m for m in check_secret_key() + check_dq_setting() if m.is_serious()]
    if found:
        raise ImproperlyConfigured("; ".join(f"{m.id}: {m.msg} {m.hint or ''}".strip() for m in found))
