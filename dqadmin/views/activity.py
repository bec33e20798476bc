"""The Activity page: the audit log of what operators did, newest first,
filterable by user, topic and action."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from dqadmin.models import AuditEntry
from dqadmin.views.base import BadParameter, HtmxHttpRequest, dashboard_view, int_param

PAGE_SIZE = 50
FILTERS = ("user", "topic", "action")


@dashboard_view()
@require_GET
def activity(request: HtmxHttpRequest) -> HttpResponse:
    """Audit entries, ``?user=``, ``?topic=``, ``?action=`` (exact), paged
    by ``?before=<entry id>``."""
    chosen = {k: request.GET.get(k, "").strip() for k in FILTERS}
    chosen = {k: v for k, v in chosen.items() if v}
    for key, value in chosen.items():
        if len(value) > 150:
            raise BadParameter(f"{key} is longer than 150 characters")
    before = int_param(request.GET.get("before"), "before", 1)
    entries = AuditEntry.objects.filter(**chosen)
    if before is not None:
        entries = entries.filter(id__lt=before)
    page = list(entries.order_by("-id")[: PAGE_SIZE + 1])
    base = reverse("dqadmin:activity")

    def link(**changes: Any) -> str:
        params = {**chosen, **changes}
        query = urlencode({k: v for k, v in params.items() if v})
        return f"{base}?{query}" if query else base

    context = {
        "entries": page[:PAGE_SIZE],
        "chosen": chosen,
        "next_url": link(before=page[PAGE_SIZE - 1].id) if len(page) > PAGE_SIZE else None,
        "first_url": link() if before else None,
        "actions": sorted(AuditEntry.objects.values_list("action", flat=True).distinct()),
        "users": sorted(AuditEntry.objects.values_list("user", flat=True).distinct())[:200],
        "link": link,
    }
    return render(request, "dqadmin/activity.html", context)
