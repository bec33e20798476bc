"""URLs of the bundled site: the dashboard at /, Django's admin (for users
and the login page) under /admin/."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("dqadmin.urls")),
]
