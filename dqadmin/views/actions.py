"""Operator actions on one topic: requeue, delete, purge, pause and resume;
and on a consumer process: quiet and stop. Each
acts only on POST with the change permission; a destructive one confirms on
GET first."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from dqadmin import audit
from dqadmin.audit import by_request
from dqadmin.queues import get_queues
from dqadmin.runner import CONTROL_ACTIONS
from dqadmin.runner import request as request_control
from dqadmin.views.base import (
    BadParameter,
    HtmxHttpRequest,
    NotFound,
    dashboard_view,
    existing_topic,
    flash,
    next_url,
    parse_ids,
)
from queuecore import MessageNotFound


@dashboard_view(act=True)
@require_POST
def requeue(request: HtmxHttpRequest, topic: str) -> HttpResponse:
    """Make the selected messages (``id``, repeated) ready again."""
    queues = get_queues()
    existing_topic(queues, topic)
    ids = parse_ids(request.POST.getlist("id"))
    done, missing = 0, []
    for mid in ids:
        try:
            queues.requeue(topic, mid)
            done += 1
        except MessageNotFound:
            missing.append(mid)
    audit.record("requeue", user=by_request(request), topic=topic, count=done,
                 ids=[m for m in ids if m not in missing])
    flash(request, messages.SUCCESS, f"Requeued {done} message{'s' if done != 1 else ''} of {topic}.")
    if missing:
        flash(request, messages.WARNING, f"Gone already: {', '.join(map(str, missing))}.")
    return HttpResponseRedirect(next_url(request, reverse("dqadmin:topic", args=[topic])))


@dashboard_view(act=True)
@require_http_methods(["GET", "POST"])
def delete(request: HtmxHttpRequest, topic: str) -> HttpResponse:
    """Delete the selected messages: a confirmation page first (GET, or a
    POST without ``confirm``), then the deletion (POST with ``confirm=yes``)."""
    queues = get_queues()
    existing_topic(queues, topic)
    data = request.POST if request.method == "POST" else request.GET
    ids = parse_ids(data.getlist("id"))
    back = next_url(request, reverse("dqadmin:topic", args=[topic]))
    if request.method != "POST" or data.get("confirm") != "yes":
        return render(request, "dqadmin/confirm_delete.html", {"topic": topic, "ids": ids, "next": back})
    done, missing = 0, []
    for mid in ids:
        try:
            queues.delete(topic, mid)
            done += 1
        except MessageNotFound:
            missing.append(mid)
    audit.record("delete", user=by_request(request), topic=topic, count=done,
                 ids=[m for m in ids if m not in missing])
    flash(request, messages.SUCCESS, f"Deleted {done} message{'s' if done != 1 else ''} of {topic}.")
    if missing:
        flash(request, messages.WARNING, f"Gone already: {', '.join(map(str, missing))}.")
    if any(back.startswith(reverse("dqadmin:message", args=[topic, mid])) for mid in ids):
        back = reverse("dqadmin:topic", args=[topic])  # that message page would be a 404 now
    return HttpResponseRedirect(back)


@dashboard_view(act=True)
@require_POST
def requeue_failed(request: HtmxHttpRequest, topic: str) -> HttpResponse:
    """Make every failed message of the topic ready again."""
    queues = get_queues()
    existing_topic(queues, topic)
    count = queues.requeue_failed(topic)
    audit.record("requeue_failed", user=by_request(request), topic=topic, count=count)
    flash(request, messages.SUCCESS, f"Requeued {count} failed message{'s' if count != 1 else ''} of {topic}.")
    return HttpResponseRedirect(next_url(request, reverse("dqadmin:topic", args=[topic])))


PURGE_CHOICES = {
    "": "ready and delayed",
    "ready": "ready",
    "delayed": "delayed",
    "failed": "failed",
}


@dashboard_view(act=True)
@require_http_methods(["GET", "POST"])
def purge(request: HtmxHttpRequest, topic: str) -> HttpResponse:
    """Remove the topic's ready and delayed messages (or one ``state``):
    GET asks to confirm, POST acts."""
    queues = get_queues()
    existing_topic(queues, topic)
    data = request.POST if request.method == "POST" else request.GET
    state = data.get("state", "")
    if state not in PURGE_CHOICES:
        raise BadParameter(f"purge takes state ready, delayed or failed (or none), not {state!r}")
    if request.method != "POST":
        counts = queues.stats().get(topic, {})
        would = sum(int(counts.get(s, 0)) for s in (["ready", "delayed"] if not state else [state]))
        return render(
            request,
            "dqadmin/confirm_purge.html",
            {"topic": topic, "state": state, "what": PURGE_CHOICES[state], "count": would},
        )
    count = queues.purge(topic, state or None)
    audit.record("purge", user=by_request(request), topic=topic, count=count, detail=PURGE_CHOICES[state])
    flash(request, messages.SUCCESS, f"Purged {count} {PURGE_CHOICES[state]} message{'s' if count != 1 else ''} of {topic}.")
    return HttpResponseRedirect(reverse("dqadmin:topic", args=[topic]))


def _set_paused(request: HtmxHttpRequest, topic: str, paused: bool) -> HttpResponse:
    queues = get_queues()
    existing_topic(queues, topic)
    if paused:
        queues.pause(topic)
        text = f"Paused {topic}: consumers take nothing from it until it is resumed."
    else:
        queues.resume(topic)
        text = f"Resumed {topic}."
    audit.record("pause" if paused else "resume", user=by_request(request), topic=topic)
    flash(request, messages.SUCCESS, text)
    return HttpResponseRedirect(next_url(request, reverse("dqadmin:topic", args=[topic])))


@dashboard_view(act=True)
@require_POST
def pause(request: HtmxHttpRequest, topic: str) -> HttpResponse:
    """Pause the topic: it accepts messages, consumers take none."""
    return _set_paused(request, topic, True)


@dashboard_view(act=True)
@require_POST
def resume(request: HtmxHttpRequest, topic: str) -> HttpResponse:
    """Resume a paused topic."""
    return _set_paused(request, topic, False)


@dashboard_view(act=True)
@require_POST
def consumer_control(request: HtmxHttpRequest, key: str, action: str) -> HttpResponse:
    """Ask a consumer process to be quiet or to stop (it acts at its next
    heartbeat, through the queue location)."""
    if action not in CONTROL_ACTIONS:
        raise NotFound(f"no consumer action {action!r}")
    queues = get_queues()
    beats = {b.get("key"): b for b in queues.backend.heartbeats()}
    if key not in beats:
        raise NotFound(f"no consumer process {key!r} (it may have stopped)")
    started = beats[key].get("started")
    request_control(queues, key, action, by=request.user.get_username(),
                    started=float(started) if isinstance(started, (int, float)) else None)
    beat = beats[key]
    audit.record(action, user=by_request(request), detail=f"consumer {beat.get('host')}:{beat.get('pid')} ({key})")
    what = "be quiet (take no new messages)" if action == "quiet" else "stop"
    flash(request, messages.SUCCESS, f"Asked {beat.get('host')}:{beat.get('pid')} to {what}; it acts within a heartbeat.")
    return HttpResponseRedirect(next_url(request, reverse("dqadmin:overview")))
