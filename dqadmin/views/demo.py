"""The demo producers: a form that starts a background job in this web
process (:mod:`dqadmin.jobs`), its progress bar and its cancel."""

from __future__ import annotations

from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling, reswap, retarget

from dqadmin.jobs import jobs
from dqadmin.queues import get_queues
from dqadmin.views.base import (
    BadParameter,
    HtmxHttpRequest,
    NotFound,
    can_act,
    dashboard_view,
    int_param,
)
from queuecore import InvalidTopic, validate_topic


class DemoForm(forms.Form):
    count = forms.IntegerField(label="Messages", min_value=1, max_value=1_000_000, initial=1000)
    topics = forms.CharField(
        label="Topics", max_length=1000, initial="q1, q2", help_text="Comma-separated; new topics are created."
    )
    rate = forms.FloatField(
        label="Rate (messages/s)", min_value=0, max_value=100_000, initial=200, help_text="0: as fast as possible."
    )

    def clean_topics(self) -> list[str]:
        names = [t.strip() for t in self.cleaned_data["topics"].replace(" ", ",").split(",") if t.strip()]
        if not names:
            raise forms.ValidationError("Name at least one topic.")
        for name in names:
            try:
                validate_topic(name)
            except InvalidTopic as exc:
                raise forms.ValidationError(str(exc)) from None
        return list(dict.fromkeys(names))


def _demo_context(request: HttpRequest, form: DemoForm) -> dict[str, Any]:
    return {"form": form, "jobs": jobs.all(), "can_act": can_act(request)}


@dashboard_view()
@require_GET
def demo(request: HtmxHttpRequest) -> HttpResponse:
    """The demo producer form and the jobs of this process."""
    return render(request, "dqadmin/demo.html", _demo_context(request, DemoForm()))


@dashboard_view(act=True)
@require_POST
def demo_start(request: HtmxHttpRequest) -> HttpResponse:
    """Start a demo producer in the background."""
    form = DemoForm(request.POST)
    if not form.is_valid():
        if request.htmx:  # htmx swaps only 2xx answers: show the errors in place
            response = render(request, "dqadmin/_demo_form.html", _demo_context(request, form))
            return reswap(retarget(response, "#demo-form"), "outerHTML")
        return render(request, "dqadmin/demo.html", _demo_context(request, form), status=400)
    try:
        job = jobs.start(get_queues(), form.cleaned_data["count"], form.cleaned_data["topics"], form.cleaned_data["rate"])
    except RuntimeError as exc:
        raise BadParameter(str(exc)) from None
    if request.htmx:
        return render(request, "dqadmin/_job.html", {"job": job, "can_act": True})
    return HttpResponseRedirect(reverse("dqadmin:demo"))


def _job(job_id: str) -> Any:
    found = jobs.get(int_param(job_id, "job id", 1) or 0)
    if found is None:
        raise NotFound(f"no demo producer {job_id}")
    return found


@dashboard_view()
@require_GET
def demo_job(request: HtmxHttpRequest, job_id: str) -> HttpResponse:
    """One job's progress bar (polled while it runs)."""
    try:
        job = _job(job_id)
    except NotFound:
        if request.htmx:  # a restarted server (or another worker): stop this bar's polling
            return HttpResponseStopPolling()
        raise
    return render(request, "dqadmin/_job.html", {"job": job, "can_act": can_act(request)})


@dashboard_view(act=True)
@require_POST
def demo_cancel(request: HtmxHttpRequest, job_id: str) -> HttpResponse:
    """Stop a running job after its current batch."""
    job = _job(job_id)
    job.cancel.set()
    if request.htmx:
        return render(request, "dqadmin/_job.html", {"job": job, "can_act": True})
    return HttpResponseRedirect(reverse("dqadmin:demo"))
