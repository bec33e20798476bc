"""A project that mounts the dashboard under a prefix (test_prefix.py)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("ops/queues/", include("dqadmin.urls")),
]
