from django.apps import AppConfig


class DqAdminConfig(AppConfig):
    name = "dqadmin"
    verbose_name = "dq"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from dqadmin import checks  # noqa: F401  (registers the system checks)
