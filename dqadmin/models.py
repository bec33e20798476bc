"""dq keeps no messages in the database: it holds the dashboard's
permission and the audit log of what operators did.

``QueueAccess`` is an unmanaged model without a table: it exists so that
Django creates the permission ``dqadmin.change_queues`` (with its content
type) on ``migrate``, and so that the permission can be given to users and
groups in the admin like any other. Staff users without it (superusers have
every permission) can see the dashboard but every action answers 403.
"""

from __future__ import annotations

import json

from django.db import models

# The permission a staff user needs to act (requeue, delete, purge, demo).
CHANGE_PERMISSION = "dqadmin.change_queues"


class QueueAccess(models.Model):
    class Meta:
        managed = False  # no table: only the permission below is stored
        default_permissions = ()
        permissions = [("change_queues", "Can requeue, delete and purge messages and run demo producers")]
        verbose_name = "queue access"

    def __str__(self) -> str:
        return "queue access"


class AuditEntry(models.Model):
    """One thing an operator did to the queues: from the dashboard (by a
    Django user) or a management command (by the OS user who ran it)."""

    SOURCES = [("dashboard", "dashboard"), ("command", "command")]

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.CharField(max_length=150, db_index=True, help_text="Django user, or the OS user of a command.")
    source = models.CharField(max_length=20, choices=SOURCES, default="dashboard")
    action = models.CharField(max_length=40, db_index=True)
    topic = models.CharField(max_length=100, blank=True, db_index=True)
    count = models.PositiveIntegerField(default=0, help_text="How many messages it changed.")
    # The ids it changed (the first MAX_IDS_KEPT) as a JSON list, for the
    # message timelines. Text, not a JSONField: its system check opens a
    # database connection, which a project's checks must not need.
    message_ids = models.TextField(default="[]", blank=True)
    detail = models.TextField(blank=True)

    MAX_IDS_KEPT = 1000

    class Meta:
        ordering = ["-id"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit log"

    def __str__(self) -> str:
        where = f" {self.topic}" if self.topic else ""
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.user} {self.action}{where} ({self.count})"

    def ids(self) -> list[int]:
        """The message ids it changed (those kept)."""
        try:
            found = json.loads(self.message_ids or "[]")
        except ValueError:
            return []
        return [i for i in found if isinstance(i, int)] if isinstance(found, list) else []
