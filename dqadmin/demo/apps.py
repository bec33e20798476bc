from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "dqadmin.demo"
    label = "dqdemo"
    verbose_name = "dq demo"
