"""Actions on many messages: requeue, delete or move everything that matches
a filter (or a selection of ids), and edit-and-resend of one message.

Each action first answers a dry run: the exact count of what it would
change and a sample, on a page that confirms (GET, or a POST without
``confirm=yes``). The confirmed POST scans again and looks at each message
as it acts: one no longer in the filter's state (a consumer has taken it
meanwhile, say) is skipped and counted, and the answer says how many
changed. A move puts the messages on the other topic first and only then
deletes them from this one: a kill in between leaves a message in both,
never in neither.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages as flash_messages
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from dqadmin import audit
from dqadmin.audit import by_request
from dqadmin.queues import get_queues
from dqadmin.search import BULK_BUDGET, Filter, FilterError, matching
from dqadmin.views.base import (
    MAX_IDS,
    BadParameter,
    HtmxHttpRequest,
    dashboard_view,
    existing_topic,
    flash,
    int_param,
    next_url,
    parse_message_id,
    pretty_value,
)
from queuecore import (
    InvalidTopic,
    Message,
    MessageNotFound,
    MessageTooLarge,
    Queues,
    validate_topic,
)
from queuecore.backend import Record

ACTIONS = {"requeue": "Requeue", "delete": "Delete", "move": "Move"}
DONE = {"requeue": "Requeued", "delete": "Deleted", "move": "Moved"}
# Messages acted on per batch (a move restores a batch in one call).
ACT_BATCH = 500
SAMPLE = 10


def _target(topic: str, raw: str | None) -> str:
    if not raw:
        raise BadParameter("choose the topic to move to")
    try:
        validate_topic(raw)
    except InvalidTopic as exc:
        raise BadParameter(str(exc)) from None
    if raw == topic:
        raise BadParameter("a message is moved to another topic, not its own")
    return raw


def _selection(queues: Queues, topic: str, ids: list[int], flt: Filter) -> list[Message]:
    found = []
    for mid in ids:
        try:
            msg = queues.peek(topic, mid)
        except MessageNotFound:
            continue
        if msg.state != "completed" and flt.matches(msg):
            found.append(msg)
    return found


def _still(queues: Queues, topic: str, msg: Message, flt: Filter) -> Message | None:
    """The message as it is now, if it still matches and is not in progress
    (a consumer took it since it was counted): else None (skipped)."""
    try:
        now = queues.peek(topic, msg.id)
    except MessageNotFound:
        return None
    if now.state in ("in_progress", "completed") or not flt.matches(now):
        return None
    return now


def _act(queues: Queues, topic: str, action: str, target: str | None, found: list[Message],
         flt: Filter) -> tuple[list[int], int]:
    """(ids changed, how many skipped). Each message is looked at again just before it
    is changed, so the window in which a consumer can take it meanwhile is
    one message wide."""
    changed: list[int] = []
    skipped = 0
    if action != "move":
        for msg in found:
            if _still(queues, topic, msg, flt) is None:
                skipped += 1
                continue
            try:
                if action == "requeue":
                    queues.requeue(topic, msg.id)
                else:
                    queues.delete(topic, msg.id)
                changed.append(msg.id)
            except MessageNotFound:
                skipped += 1
        return changed, skipped
    assert target is not None
    for start in range(0, len(found), ACT_BATCH):
        batch = []
        for msg in found[start : start + ACT_BATCH]:
            now = _still(queues, topic, msg, flt)
            if now is None:
                skipped += 1
            else:
                batch.append(now)
        if not batch:
            continue
        # On the other topic first (one call: all or none), ready to run
        # there with their attempts and errors; then off this one. A kill
        # in between leaves a message in both topics, never in neither.
        records = [Record(id=m.id, payload=m.raw, state="ready", attempts=m.attempts,
                          enqueued_at=m.enqueued_at, errors=m.errors, origin=m.origin) for m in batch]
        queues.backend.restore(target, records)
        for msg in batch:
            try:
                queues.delete(topic, msg.id)
            except MessageNotFound:
                pass  # deleted meanwhile: it lives on the other topic only
            changed.append(msg.id)
    return changed, skipped


@dashboard_view(act=True)
@require_http_methods(["GET", "POST"])
def bulk(request: HtmxHttpRequest, topic: str) -> HttpResponse:
    """``action`` (requeue, delete, move with ``to``) on the messages of
    ``topic`` that match the filter of the query (``state``, ``q`` ...) or
    on the ``id``s given: a dry run to confirm, then the act."""
    queues = get_queues()
    existing_topic(queues, topic)
    data = request.POST if request.method == "POST" else request.GET
    # The selection form of the topic page names the action in its URL.
    action = data.get("action") or request.GET.get("action", "")
    if action not in ACTIONS:
        raise BadParameter(f"action must be one of {', '.join(ACTIONS)}, not {action[:40]!r}")
    state = data.get("state") or "all"
    try:
        flt = Filter.from_params(data, None if state == "all" else state)
    except FilterError as exc:
        raise BadParameter(str(exc)) from None
    ids_given = data.getlist("id")
    if len(ids_given) > MAX_IDS:
        raise BadParameter(f"at most {MAX_IDS} selected messages at once; use a filter for more")
    ids = sorted({parse_message_id(v) for v in ids_given})
    confirmed = request.method == "POST" and data.get("confirm") == "yes"
    # The dry run asks for the topic to move to; the confirmed move needs it.
    target = _target(topic, data.get("to")) if action == "move" and (confirmed or data.get("to")) else None
    try:
        found = _selection(queues, topic, ids, flt) if ids else list(matching(queues, topic, flt, BULK_BUDGET))
    except FilterError as exc:
        raise BadParameter(str(exc)) from None
    if action == "requeue":
        found = [m for m in found if m.state != "ready"]  # already ready: nothing to do
    # The confirmed act changes only what the dry run could have shown:
    # messages put since (with higher ids) are left alone.
    upto = int_param(data.get("upto"), "upto", 0)
    if confirmed and upto is not None:
        found = [m for m in found if m.id <= upto]
    back = next_url(request, reverse("dqadmin:topic", args=[topic]) + f"?{urlencode({'state': state})}")
    if not confirmed:
        context = {
            "topic": topic,
            "action": action,
            "verb": ACTIONS[action],
            "target": target,
            "count": len(found),
            "sample": found[:SAMPLE],
            "more": max(0, len(found) - SAMPLE),
            "upto": max((m.id for m in found), default=0),
            "filter": flt,
            "state": state,
            "ids": ids,
            "next": back,
            "topics": [t for t in queues.topics() if t != topic],
        }
        return render(request, "dqadmin/confirm_bulk.html", context)
    done, skipped = _act(queues, topic, action, target, found, flt)
    changed = len(done)
    where = f" to {target}" if target else ""
    how = "the selection" if ids else ("filter " + " ".join(f"{k}={v}" for k, v in {"state": state, **flt.params}.items()))
    audit.record(action, user=by_request(request), topic=topic, count=changed, ids=done,
                 detail=f"{how}{where}; {skipped} skipped")
    flash(request, flash_messages.SUCCESS,
          f"{DONE[action]} {changed} message{'s' if changed != 1 else ''} of {topic}{where}.")
    if skipped:
        flash(request, flash_messages.WARNING,
              f"Skipped {skipped} that changed since the count (taken by a consumer, settled or deleted).")
    return HttpResponseRedirect(back)


# -- edit and resend ------------------------------------------------------------


def _json_text(value: Any) -> str | None:
    try:
        return json.dumps(value, indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        return None


@dashboard_view(act=True)
@require_http_methods(["GET", "POST"])
def resend(request: HtmxHttpRequest, topic: str, message_id: str) -> HttpResponse:
    """Edit a message's value as JSON and send it as a new message (to this
    topic or another); the original stays where it is until deleted."""
    queues = get_queues()
    existing_topic(queues, topic)
    mid = parse_message_id(message_id)
    original = queues.peek(topic, mid)
    editable = original.decode_error is None and _json_text(original.value) is not None
    context: dict[str, Any] = {
        "topic": topic,
        "msg": original,
        "editable": editable,
        "text": _json_text(original.value) if editable else "",
        "to": topic,
        "topics": queues.topics(),
        "error": None,
        "pretty": pretty_value(original.value) if original.decode_error is None else "",
    }
    if request.method != "POST":
        return render(request, "dqadmin/resend.html", context)
    text = request.POST.get("value", "")
    context["text"] = text
    context["to"] = request.POST.get("to") or topic
    try:
        target = context["to"]
        validate_topic(target)
    except InvalidTopic as exc:
        context["error"] = str(exc)
        return render(request, "dqadmin/resend.html", context, status=400)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        context["error"] = f"Invalid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
        return render(request, "dqadmin/resend.html", context, status=400)
    except RecursionError:
        context["error"] = "Invalid JSON: nested too deeply."
        return render(request, "dqadmin/resend.html", context, status=400)
    try:
        new_id = queues.put(target, value, timeout=0)
    except MessageTooLarge as exc:
        context["error"] = str(exc)
        return render(request, "dqadmin/resend.html", context, status=400)
    audit.record("resend", user=by_request(request), topic=topic, count=1, ids=[mid],
                 detail=f"sent as {target}#{new_id}")
    flash(request, flash_messages.SUCCESS,
          f"Sent as {target}#{new_id}; {topic}#{mid} stays {original.state} until you delete it.")
    return HttpResponseRedirect(reverse("dqadmin:message", args=[target, new_id]))
