"""dq keeps no data in the database; this module only holds the dashboard's
permission.

``QueueAccess`` is an unmanaged model without a table: it exists so that
Django creates the permission ``dqadmin.change_queues`` (with its content
type) on ``migrate``, and so that the permission can be given to users and
groups in the admin like any other. Staff users without it (superusers have
every permission) can see the dashboard but every action answers 403.
"""

from __future__ import annotations

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
