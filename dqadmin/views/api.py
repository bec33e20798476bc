"""Machine-readable views: ``api/stats`` (JSON) and ``metrics``
(Prometheus), both rendering :func:`dqadmin.stats.build_stats`."""

from __future__ import annotations

from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from dqadmin import metrics
from dqadmin.queues import get_queues
from dqadmin.stats import build_stats
from dqadmin.views.base import HtmxHttpRequest, dashboard_view


@dashboard_view(api=True)
@require_GET
def api_stats(request: HtmxHttpRequest) -> HttpResponse:
    """``build_stats`` as JSON."""
    return JsonResponse(build_stats(get_queues()))


@dashboard_view(api=True)
@require_GET
def metrics_view(request: HtmxHttpRequest) -> HttpResponse:
    """``build_stats`` in Prometheus' text format."""
    return HttpResponse(metrics.render(build_stats(get_queues())), content_type=metrics.CONTENT_TYPE)
