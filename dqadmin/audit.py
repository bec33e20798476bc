"""The audit log: who did what to how many messages (the ``AuditEntry``
model, in Django's database: the web side's own store).

:func:`record` is called by the dashboard's actions and by the management
commands that change the queues. A failure to write an entry is logged and
never undoes or blocks the action itself, which has already happened.
"""

from __future__ import annotations

import getpass
import json
import logging
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger("dq.audit")


def os_user() -> str:
    """The user a management command runs as."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def record(
    action: str,
    *,
    user: str,
    topic: str = "",
    count: int = 0,
    ids: Iterable[int] = (),
    detail: str = "",
    source: str = "dashboard",
) -> None:
    """Write one entry (see the module docstring)."""
    from django.db import transaction

    from dqadmin.models import AuditEntry

    kept = list(ids)[: AuditEntry.MAX_IDS_KEPT]
    try:
        # A savepoint: a failed write must not break the request's own
        # transaction (ATOMIC_REQUESTS on PostgreSQL).
        with transaction.atomic():
            AuditEntry.objects.create(
                user=user[:150] or "unknown", source=source, action=action[:40], topic=topic[:100],
                count=max(0, int(count)), message_ids=json.dumps(kept), detail=detail,
            )
    except Exception as exc:  # the action happened: say so in the log, do not fail it
        logger.warning("could not write the audit entry %s %s by %s (run migrate?): %s: %s",
                       action, topic, user, type(exc).__name__, exc)


def by_request(request: Any) -> str:
    user = getattr(request, "user", None)
    return str(user.get_username()) if user is not None and user.is_authenticated else "anonymous"


def for_message(topic: str, message_id: int, limit: int = 2000) -> list[Any]:
    """Entries that changed this message, newest first (read from the topic's
    latest ``limit`` entries: the timeline of a message is bounded)."""
    from django.db import DatabaseError

    from dqadmin.models import AuditEntry

    try:
        recent = list(AuditEntry.objects.filter(topic=topic).order_by("-id")[:limit])
    except DatabaseError as exc:  # not migrated yet: the page shows the rest
        logger.warning("could not read the audit log (run migrate?): %s", exc)
        return []
    return [e for e in recent if message_id in e.ids()]
