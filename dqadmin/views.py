"""The dashboard's views: staff only, never cached; changes only by POST."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from dqadmin.queues import get_queues


@never_cache
@staff_member_required
def overview(request: HttpRequest) -> HttpResponse:
    """Every topic with its counters."""
    stats = get_queues().stats()
    return render(request, "dqadmin/overview.html", {"stats": stats})
