"""The dashboard's views: staff only, never cached; changes only by POST.

Every view goes through :func:`dashboard_view`, which checks access and
turns queue errors into answers (404 for an unknown topic or message, 400
for a bad parameter, 503 when the disk is full) so that nothing the
operator types can end in a 500. One view serves both a page and, for an
htmx request, the fragment of it that is polled (``_name.html``).

Access: staff users see everything; acting (requeue, delete, purge, demo
producers) also needs the permission ``dqadmin.change_queues`` (see
``dqadmin/models.py``; superusers have it). ``api/stats`` and ``metrics``
answer a staff session, or a request carrying ``Authorization: Bearer
<DQ["API_TOKEN"]>`` when that setting is set (for Prometheus).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pprint
import time
from collections.abc import Callable, Iterator
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.views import redirect_to_login
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
    JsonResponse,
)
from django.shortcuts import render, resolve_url
from django.urls import NoReverseMatch, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, HttpResponseStopPolling, reswap, retarget
from django_htmx.middleware import HtmxDetails

from dqadmin import metrics
from dqadmin.conf import conf
from dqadmin.history import chart, history_for
from dqadmin.jobs import jobs
from dqadmin.models import CHANGE_PERMISSION
from dqadmin.queues import get_queues
from dqadmin.stats import build_stats
from queuecore import (
    DiskFull,
    InvalidTopic,
    Message,
    MessageNotFound,
    QueueError,
    Queues,
    validate_topic,
)
from queuecore.defaults import STATES

# Polling intervals (seconds) offered on the live pages; 0 is off.
INTERVALS = (0, 1, 2, 5, 10)
DEFAULT_INTERVAL = 1
# Rows per page of the message browser: the default and the most allowed.
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# The message page shows this much of a payload unless asked for all of it.
PREVIEW_CHARS = 20_000
PREVIEW_BYTES = 4_096
# Even "show all" stops the hex dump here; the raw download has everything.
MAX_HEX_BYTES = 1024 * 1024
# The failed page reads at most this many failed messages per topic.
FAILED_SCAN_LIMIT = 5_000
# Most ids one requeue or delete accepts.
MAX_IDS = 1_000


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


class BadParameter(Exception):
    """A query or form parameter the view cannot use: answered with 400."""


class NotFound(Exception):
    """An unknown topic, message or job: answered with 404."""


# -- access and errors --------------------------------------------------------


def _login_url(request: HttpRequest) -> str:
    try:
        login = resolve_url("admin:login")
    except NoReverseMatch:
        login = resolve_url(settings.LOGIN_URL)
    htmx = getattr(request, "htmx", None)
    back = (htmx.current_url_abs_path if htmx else None) or request.get_full_path()
    return f"{login}?{urlencode({'next': back})}"


def can_act(request: HttpRequest) -> bool:
    return bool(request.user.is_active and request.user.is_staff and request.user.has_perm(CHANGE_PERMISSION))


def _error(request: HttpRequest, status: int, message: str, api: bool = False) -> HttpResponse:
    if api:
        return JsonResponse({"error": message}, status=status)
    context = {"status": status, "message": message, "can_act": can_act(request)}
    return render(request, "dqadmin/error.html", context, status=status)


def dashboard_view(
    *, act: bool = False, api: bool = False
) -> Callable[[Callable[..., HttpResponseBase]], Callable[..., HttpResponseBase]]:
    """Staff only and never cached; ``act`` also needs the change permission
    (403 otherwise); ``api`` accepts the API token and answers JSON errors."""

    def decorate(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
        staff_view = staff_member_required(view)

        @never_cache
        @wraps(view)
        def wrapped(request: HtmxHttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            user = request.user
            is_staff = user.is_active and user.is_staff
            try:
                if api:
                    if not (is_staff or _token_ok(request)):
                        status = 403 if user.is_authenticated else 401
                        response = _error(request, status, "staff session or API token required", api=True)
                        if status == 401:
                            response["WWW-Authenticate"] = 'Bearer realm="dq"'
                        return response
                    return view(request, *args, **kwargs)
                if not is_staff and request.htmx:
                    # A fragment poll after the session ended: send the whole page to the login.
                    return HttpResponseClientRedirect(_login_url(request))
                if not is_staff:
                    return redirect_to_login(request.get_full_path(), resolve_url("admin:login"))
                if act and not can_act(request):
                    return _error(request, 403, "You can look at the queues but not change them (read-only access).")
                return staff_view(request, *args, **kwargs)
            except BadParameter as exc:
                return _error(request, 400, str(exc), api)
            except (NotFound, InvalidTopic, MessageNotFound) as exc:
                return _error(request, 404, str(exc), api)
            except DiskFull as exc:
                return _error(
                    request,
                    503,
                    f"The disk holding the queues is full: nothing was changed. Free some space and retry. ({exc})",
                    api,
                )
            except QueueError as exc:
                return _error(request, 503, f"The queue could not do this now: {exc}", api)

        return wrapped

    return decorate


def _token_ok(request: HttpRequest) -> bool:
    token = conf.API_TOKEN
    if not token:
        return False
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), str(token).encode())


# -- parameters ---------------------------------------------------------------


def _interval(request: HttpRequest) -> int:
    raw = request.GET.get("every")
    if raw is None or raw == "":
        return DEFAULT_INTERVAL
    try:
        value = int(raw)
    except ValueError:
        raise BadParameter(f"every must be one of {', '.join(map(str, INTERVALS))} (seconds; 0 is off)") from None
    if value not in INTERVALS:
        raise BadParameter(f"every must be one of {', '.join(map(str, INTERVALS))} (seconds; 0 is off)")
    return value


def _int_param(raw: str | None, name: str, low: int, high: int | None = None) -> int | None:
    if raw is None or raw == "":
        return None
    # ASCII digits only: no sign, spaces, "1e3" or "²"; and short enough for int().
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise BadParameter(f"{name} must be a whole number below 10^19, not {raw[:40]!r}")
    value = int(raw)
    if value < low or (high is not None and value > high):
        raise BadParameter(f"{name} must be between {low} and {high}" if high else f"{name} must be at least {low}")
    return value


def _message_id(raw: str) -> int:
    value = _int_param(raw, "a message id", 1)
    if value is None:
        raise BadParameter("a message id is required")
    return value


def _ids(values: list[str]) -> list[int]:
    if not values:
        raise BadParameter("select at least one message")
    if len(values) > MAX_IDS:
        raise BadParameter(f"at most {MAX_IDS} messages at once")
    return sorted({_message_id(v) for v in values})


def _topic(queues: Queues, topic: str) -> str:
    validate_topic(topic)  # InvalidTopic: 404
    if topic not in queues.topics():
        raise NotFound(f"no topic {topic!r}")
    return topic


def _next_url(request: HttpRequest, default: str) -> str:
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return default


def _flash(request: HttpRequest, level: int, text: str) -> None:
    messages.add_message(request, level, text, fail_silently=True)


def _poll_trigger(every: int, extra: str = "") -> str:
    """An ``hx-trigger`` that polls every ``every`` seconds while the tab is
    visible (and ``extra`` holds), and refreshes at once when it shows again."""
    cond = "document.visibilityState === 'visible'" + (f" && {extra}" if extra else "")
    return f"every {every}s [{cond}], visibilitychange[{cond}] from:document"


# -- overview -----------------------------------------------------------------


@dashboard_view()
@require_GET
def overview(request: HtmxHttpRequest) -> HttpResponse:
    """Every topic with its counters and rates, consumers, storage; live."""
    every = _interval(request)
    queues = get_queues()
    stats = build_stats(queues)
    context = {
        "stats": stats,
        "topics": stats["topics"],
        "chart": chart(history_for(queues.location).series(None, stats["generated_at"])),
        "every": every,
        "intervals": INTERVALS,
        "trigger": _poll_trigger(every),
        "warnings": [name for name, row in stats["topics"].items() if row["backlog_without_consumer"]],
        "running_jobs": [j for j in jobs.all() if j.running],
        "can_act": can_act(request),
    }
    if request.htmx:
        return render(request, "dqadmin/_overview.html", context)
    return render(request, "dqadmin/overview.html", context)


# -- topic --------------------------------------------------------------------


def _browse_params(request: HttpRequest) -> tuple[str | None, int | None, int]:
    state = request.GET.get("state") or "all"
    if state != "all" and state not in STATES:
        raise BadParameter(f"state must be all or one of {', '.join(STATES)}, not {state!r}")
    after = _int_param(request.GET.get("after"), "after", 0)
    limit = _int_param(request.GET.get("limit"), "limit", 1, MAX_PAGE_SIZE) or PAGE_SIZE
    return (None if state == "all" else state), after, limit


@dashboard_view()
@require_GET
def topic(request: HtmxHttpRequest, topic: str) -> HttpResponse:
    """One topic: counters, chart and the message browser (state, after and
    limit in the URL, keyset paging by id)."""
    queues = get_queues()
    _topic(queues, topic)
    every = _interval(request)
    state, after, limit = _browse_params(request)
    stats = build_stats(queues)
    row = stats["topics"].get(topic)
    if row is None:  # purged and gone between the two reads
        raise NotFound(f"no topic {topic!r}")
    found = queues.messages(topic, state=state, after=after, limit=limit + 1)
    page, more = found[:limit], len(found) > limit
    base = reverse("dqadmin:topic", args=[topic])
    query = {"state": state or "all", "limit": limit, "every": every}

    def link(**changes: Any) -> str:
        params = {**query, **changes}
        return f"{base}?{urlencode({k: v for k, v in params.items() if v is not None})}"

    context = {
        "topic": topic,
        "row": row,
        "stats": stats,
        "chart": chart(history_for(queues.location).series(topic, stats["generated_at"])),
        "rows": page,
        "state": state or "all",
        "states": ["all", *STATES],
        "after": after,
        "limit": limit,
        "next_url": link(after=page[-1].id) if more and page else None,
        "first_url": link(after=None) if after else None,
        "self_url": link(after=after),
        "state_urls": {s: link(state=s, after=None) for s in ["all", *STATES]},
        "every": every,
        "intervals": INTERVALS,
        "trigger": _poll_trigger(every),
        "table_trigger": _poll_trigger(every, "!document.querySelector('#messages input.pick:checked')"),
        "can_act": can_act(request),
        "now": stats["generated_at"],
    }
    if request.htmx:
        if request.htmx.target == "messages":
            return render(request, "dqadmin/_messages.html", context)
        return render(request, "dqadmin/_topic_live.html", context)
    return render(request, "dqadmin/topic.html", context)


# -- message ------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes: {bytes(value[:64]).hex()}{'…' if len(value) > 64 else ''}>"
    return repr(value)


def pretty_value(value: Any) -> str:
    """The decoded payload as indented JSON (or Python's repr when a key is
    not a string or number)."""
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, default=_json_default)
    except (TypeError, ValueError):
        return pprint.pformat(value, width=100)


def hexdump(data: bytes) -> Iterator[tuple[str, str, str]]:
    """``(offset, hex, text)`` lines of 16 bytes, like ``hexdump -C``."""
    for start in range(0, len(data), 16):
        chunk = data[start : start + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        if len(chunk) > 8:
            hexes = hexes[:23] + " " + hexes[23:]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        yield f"{start:08x}", hexes, text


@dashboard_view()
@require_GET
def message(request: HtmxHttpRequest, topic: str, message_id: str) -> HttpResponse:
    """One message: pretty value, hex, state, lease and errors; ``?full=1``
    shows a large payload whole."""
    queues = get_queues()
    _topic(queues, topic)
    mid = _message_id(message_id)
    full = request.GET.get("full") == "1"
    msg: Message = queues.peek(topic, mid)
    pretty = pretty_value(msg.value) if msg.decode_error is None else ""
    value_cut = not full and len(pretty) > PREVIEW_CHARS
    hex_limit = MAX_HEX_BYTES if full else PREVIEW_BYTES
    context = {
        "topic": topic,
        "msg": msg,
        "pretty": pretty[:PREVIEW_CHARS] if value_cut else pretty,
        "value_cut": value_cut,
        "pretty_chars": len(pretty),
        "hex": list(hexdump(msg.raw[:hex_limit])),
        "hex_cut": len(msg.raw) > hex_limit,
        "hex_shown": min(len(msg.raw), hex_limit),
        "full": full,
        "errors": list(reversed(msg.errors)),
        "can_act": can_act(request),
        "now": time.time(),
        "full_url": f"{reverse('dqadmin:message', args=[topic, mid])}?full=1",
    }
    return render(request, "dqadmin/message.html", context)


@dashboard_view()
@require_GET
def message_raw(request: HtmxHttpRequest, topic: str, message_id: str) -> HttpResponse:
    """The stored bytes of one message, as a download."""
    queues = get_queues()
    _topic(queues, topic)
    msg = queues.peek(topic, _message_id(message_id))
    response = HttpResponse(msg.raw, content_type="application/octet-stream")
    response["Content-Disposition"] = f'attachment; filename="{topic}-{msg.id}.bin"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


# -- actions on a topic ---------------------------------------------------------


@dashboard_view(act=True)
@require_POST
def requeue(request: HtmxHttpRequest, topic: str) -> HttpResponse:
    """Make the selected messages (``id``, repeated) ready again."""
    queues = get_queues()
    _topic(queues, topic)
    ids = _ids(request.POST.getlist("id"))
    done, missing = 0, []
    for mid in ids:
        try:
            queues.requeue(topic, mid)
            done += 1
        except MessageNotFound:
            missing.append(mid)
    _flash(request, messages.SUCCESS, f"Requeued {done} message{'s' if done != 1 else ''} of {topic}.")
    if missing:
        _flash(request, messages.WARNING, f"Gone already: {', '.join(map(str, missing))}.")
    return HttpResponseRedirect(_next_url(request, reverse("dqadmin:topic", args=[topic])))


@dashboard_view(act=True)
@require_http_methods(["GET", "POST"])
def delete(request: HtmxHttpRequest, topic: str) -> HttpResponse:
    """Delete the selected messages: a confirmation page first (GET, or a
    POST without ``confirm``), then the deletion (POST with ``confirm=yes``)."""
    queues = get_queues()
    _topic(queues, topic)
    data = request.POST if request.method == "POST" else request.GET
    ids = _ids(data.getlist("id"))
    back = _next_url(request, reverse("dqadmin:topic", args=[topic]))
    if request.method != "POST" or data.get("confirm") != "yes":
        return render(request, "dqadmin/confirm_delete.html", {"topic": topic, "ids": ids, "next": back})
    done, missing = 0, []
    for mid in ids:
        try:
            queues.delete(topic, mid)
            done += 1
        except MessageNotFound:
            missing.append(mid)
    _flash(request, messages.SUCCESS, f"Deleted {done} message{'s' if done != 1 else ''} of {topic}.")
    if missing:
        _flash(request, messages.WARNING, f"Gone already: {', '.join(map(str, missing))}.")
    if any(back.startswith(reverse("dqadmin:message", args=[topic, mid])) for mid in ids):
        back = reverse("dqadmin:topic", args=[topic])  # that message page would be a 404 now
    return HttpResponseRedirect(back)


@dashboard_view(act=True)
@require_POST
def requeue_failed(request: HtmxHttpRequest, topic: str) -> HttpResponse:
    """Make every failed message of the topic ready again."""
    queues = get_queues()
    _topic(queues, topic)
    count = queues.requeue_failed(topic)
    _flash(request, messages.SUCCESS, f"Requeued {count} failed message{'s' if count != 1 else ''} of {topic}.")
    return HttpResponseRedirect(_next_url(request, reverse("dqadmin:topic", args=[topic])))


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
    _topic(queues, topic)
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
    _flash(request, messages.SUCCESS, f"Purged {count} {PURGE_CHOICES[state]} message{'s' if count != 1 else ''} of {topic}.")
    return HttpResponseRedirect(reverse("dqadmin:topic", args=[topic]))


# -- failed messages across topics ----------------------------------------------


def _error_key(msg: Message) -> str:
    """What failed messages are grouped by: the first line of the last error."""
    if not msg.errors:
        return "(no error recorded)"
    reason = str(msg.errors[-1].get("reason") or "").strip()
    first = reason.splitlines()[0] if reason else "(no reason given)"
    return first[:300]


def _group_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _failed_messages(queues: Queues, topic: str, limit: int | None) -> Iterator[Message]:
    after, seen = None, 0
    while limit is None or seen < limit:
        batch = queues.messages(topic, state="failed", after=after, limit=500)
        for msg in batch:
            yield msg
            seen += 1
            if limit is not None and seen >= limit:
                return
        if len(batch) < 500:
            return
        after = batch[-1].id


@dashboard_view()
@require_GET
def failed(request: HtmxHttpRequest) -> HttpResponse:
    """Failed messages of every topic, grouped by their last error."""
    queues = get_queues()
    groups: dict[str, dict[str, Any]] = {}
    capped: list[str] = []
    for name in queues.topics():
        seen = 0
        for msg in _failed_messages(queues, name, FAILED_SCAN_LIMIT):
            seen += 1
            key = _error_key(msg)
            group = groups.get(key)
            if group is None:
                last = msg.errors[-1] if msg.errors else {}
                group = groups[key] = {
                    "key": key,
                    "id": _group_id(key),
                    "count": 0,
                    "topics": {},
                    "samples": [],
                    "traceback": last.get("traceback") or "",
                    "last_at": 0.0,
                }
            group["count"] += 1
            group["topics"][name] = group["topics"].get(name, 0) + 1
            if len(group["samples"]) < 5:
                group["samples"].append(msg)
            if msg.errors:
                group["last_at"] = max(group["last_at"], float(msg.errors[-1].get("at") or 0))
        if seen >= FAILED_SCAN_LIMIT:
            capped.append(name)
    ordered = sorted(groups.values(), key=lambda g: (-g["count"], g["key"]))
    for group in ordered:
        group["topic_list"] = sorted(group["topics"].items())
    return render(
        request,
        "dqadmin/failed.html",
        {
            "groups": ordered,
            "total": sum(g["count"] for g in ordered),
            "capped": capped,
            "scan_limit": FAILED_SCAN_LIMIT,
            "can_act": can_act(request),
        },
    )


@dashboard_view(act=True)
@require_POST
def failed_requeue(request: HtmxHttpRequest) -> HttpResponse:
    """Requeue every failed message (of every topic, or of ``topic``) whose
    last error falls in the group ``group`` of the failed page."""
    queues = get_queues()
    group = request.POST.get("group", "")
    if len(group) != 16 or any(c not in "0123456789abcdef" for c in group):
        raise BadParameter("group must be a group id from the failed page")
    only = request.POST.get("topic") or None
    names = [_topic(queues, only)] if only else queues.topics()
    count = 0
    for name in names:
        matching = [m.id for m in _failed_messages(queues, name, None) if _group_id(_error_key(m)) == group]
        for mid in matching:
            try:
                queues.requeue(name, mid)
                count += 1
            except MessageNotFound:
                pass
    _flash(request, messages.SUCCESS, f"Requeued {count} failed message{'s' if count != 1 else ''}.")
    return HttpResponseRedirect(reverse("dqadmin:failed"))


# -- demo producers -------------------------------------------------------------


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
    found = jobs.get(_int_param(job_id, "job id", 1) or 0)
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


# -- machine-readable -----------------------------------------------------------


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
