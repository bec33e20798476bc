from django.apps import AppConfig


class DqAdminConfig(AppConfig):
    name = "dqadmin"
    verbose_name = "dq"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from dqadmin import checks  # noqa: F401  (registers the system checks)

        # The tasks framework registers the check that runs each backend's
        # check() only when it is imported; import it when TASKS names ours,
        # so that manage.py check sees DQBackend's checks in any project.
        configured = getattr(settings, "TASKS", None) or {}
        if any(isinstance(p, dict) and str(p.get("BACKEND", "")).startswith("dqadmin.tasks")
               for p in configured.values()):
            try:
                import dqadmin.tasks.compat  # noqa: F401
            except ImportError:
                pass  # no framework: the TASKS setting fails on first use, with the reason
