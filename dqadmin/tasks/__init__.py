"""dq as a backend of Django's tasks framework (``django.tasks`` on Django
6, the ``django-tasks`` backport on 5.2)::

    TASKS = {"default": {"BACKEND": "dqadmin.tasks.DQBackend", "QUEUES": ["default"]}}

- :mod:`~dqadmin.tasks.backend`: ``DQBackend`` (enqueue, results, checks).
- :mod:`~dqadmin.tasks.worker`: how ``runconsumers`` runs the tasks.
- :mod:`~dqadmin.tasks.results`: where results are kept.
- :mod:`~dqadmin.tasks.compat`: the framework, whichever is installed.

``DQBackend`` is imported on first use, so the dashboard works (and shows
task messages) in a project without the framework installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dqadmin.consumers import Consumer

__all__ = ["DQBackend", "configured_task_consumers"]


def __getattr__(name: str) -> Any:
    if name == "DQBackend":
        from dqadmin.tasks.backend import DQBackend

        return DQBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def configured_task_consumers() -> list[Consumer]:
    """The task consumers of every ``DQBackend`` in ``settings.TASKS``
    (none when the setting names none, or the framework is not installed)."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    configured = getattr(settings, "TASKS", None) or {}
    aliases = []
    for alias, params in configured.items():
        path = params.get("BACKEND", "") if isinstance(params, dict) else ""
        if not path.startswith("dqadmin.tasks"):
            try:
                found = import_string(path)
            except ImportError:
                continue
            from dqadmin.tasks.backend import DQBackend

            if not (isinstance(found, type) and issubclass(found, DQBackend)):
                continue
        aliases.append(alias)
    if not aliases:
        return []
    from dqadmin.tasks.compat import task_backends
    from dqadmin.tasks.worker import task_consumers

    consumers: list[Consumer] = []
    for alias in aliases:
        consumers.extend(task_consumers(task_backends[alias]))
    return consumers
