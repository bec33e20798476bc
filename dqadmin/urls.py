"""The dashboard's URLs (namespace ``dqadmin``). Include them under any
prefix in your project's root URLs::

    path("ops/queues/", include("dqadmin.urls"))

Every link in the templates is built with ``{% url %}``, so the prefix is
never written anywhere else.
"""

from django.urls import path

from dqadmin import views

app_name = "dqadmin"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("topics/<str:topic>/", views.topic, name="topic"),
    path("topics/<str:topic>/requeue/", views.requeue, name="requeue"),
    path("topics/<str:topic>/delete/", views.delete, name="delete"),
    path("topics/<str:topic>/requeue-failed/", views.requeue_failed, name="requeue_failed"),
    path("topics/<str:topic>/purge/", views.purge, name="purge"),
    path("topics/<str:topic>/bulk/", views.bulk, name="bulk"),
    path("topics/<str:topic>/pause/", views.pause, name="pause"),
    path("topics/<str:topic>/resume/", views.resume, name="resume"),
    path("consumers/<str:key>/<str:action>/", views.consumer_control, name="consumer_control"),
    path("topics/<str:topic>/messages/<str:message_id>/resend/", views.resend, name="resend"),
    path("topics/<str:topic>/messages/<str:message_id>/", views.message, name="message"),
    path("topics/<str:topic>/messages/<str:message_id>/raw/", views.message_raw, name="message_raw"),
    path("failed/", views.failed, name="failed"),
    path("tasks/", views.tasks, name="tasks"),
    path("activity/", views.activity, name="activity"),
    path("tasks/<str:result_id>/", views.task, name="task"),
    path("failed/requeue/", views.failed_requeue, name="failed_requeue"),
    path("demo/", views.demo, name="demo"),
    path("demo/start/", views.demo_start, name="demo_start"),
    path("demo/jobs/<str:job_id>/", views.demo_job, name="demo_job"),
    path("demo/jobs/<str:job_id>/cancel/", views.demo_cancel, name="demo_cancel"),
    path("api/stats", views.api_stats, name="api_stats"),
    path("metrics", views.metrics_view, name="metrics"),
]
