"""The dashboard's views: staff only, never cached; changes only by POST.

Every view goes through :func:`~dqadmin.views.base.dashboard_view`, which
checks access and turns queue errors into answers. One view serves both a
page and, for an htmx request, the fragment of it that is polled
(``_name.html``).

- :mod:`~dqadmin.views.base`: access, errors and parameters, shared by all.
- :mod:`~dqadmin.views.pages`: overview, topic, message (GET only).
- :mod:`~dqadmin.views.actions`: requeue, delete, purge on a topic.
- :mod:`~dqadmin.views.bulk`: requeue, delete or move a filter's matches; edit and resend.
- :mod:`~dqadmin.views.failed`: failed messages grouped by error.
- :mod:`~dqadmin.views.tasks`: Django tasks and their results.
- :mod:`~dqadmin.views.demo`: the demo producers.
- :mod:`~dqadmin.views.api`: ``api/stats`` and ``metrics``.

Access: staff users see everything; acting (requeue, delete, purge, demo
producers) also needs the permission ``dqadmin.change_queues`` (see
``dqadmin/models.py``; superusers have it). ``api/stats`` and ``metrics``
answer a staff session, or a request carrying ``Authorization: Bearer
<DQ["API_TOKEN"]>`` when that setting is set (for Prometheus).
"""

from dqadmin.views.actions import (
    consumer_control,
    delete,
    pause,
    purge,
    requeue,
    requeue_failed,
    resume,
)
from dqadmin.views.activity import activity
from dqadmin.views.api import api_stats, metrics_view
from dqadmin.views.base import (
    MAX_PAGE_SIZE,
    PAGE_SIZE,
    PREVIEW_BYTES,
    PREVIEW_CHARS,
    can_act,
    dashboard_view,
    pretty_value,
)
from dqadmin.views.bulk import bulk, resend
from dqadmin.views.demo import demo, demo_cancel, demo_job, demo_start
from dqadmin.views.failed import _error_key, _group_id, failed, failed_requeue
from dqadmin.views.pages import hexdump, message, message_raw, overview, topic
from dqadmin.views.tasks import task, tasks

__all__ = [
    "MAX_PAGE_SIZE",
    "PAGE_SIZE",
    "PREVIEW_BYTES",
    "PREVIEW_CHARS",
    "_error_key",
    "_group_id",
    "activity",
    "api_stats",
    "bulk",
    "can_act",
    "consumer_control",
    "dashboard_view",
    "delete",
    "demo",
    "demo_cancel",
    "demo_job",
    "demo_start",
    "failed",
    "failed_requeue",
    "hexdump",
    "message",
    "message_raw",
    "metrics_view",
    "overview",
    "pause",
    "pretty_value",
    "purge",
    "requeue",
    "requeue_failed",
    "resend",
    "resume",
    "task",
    "tasks",
    "topic",
]
