"""The dashboard's URLs. Include them under any prefix in another project::

    path("queues/", include("dqadmin.dashboard_urls"))
"""

from django.urls import path

from dqadmin import views

app_name = "dqadmin"

urlpatterns = [
    path("", views.overview, name="overview"),
]
