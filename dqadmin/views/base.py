"""What every dashboard view shares: access, errors, parameters.

:func:`dashboard_view` checks access and turns queue errors into answers
(404 for an unknown topic or message, 400 for a bad parameter, 503 when the
disk is full), so that nothing the operator types can end in a 500. The
parameter helpers raise :class:`BadParameter` or :class:`NotFound` for it.
No view lives here.
"""

from __future__ import annotations

import hmac
import json
import pprint
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import render, resolve_url
from django.urls import NoReverseMatch
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from dqadmin.conf import conf
from dqadmin.models import CHANGE_PERMISSION
from queuecore import DiskFull, InvalidTopic, MessageNotFound, QueueError, Queues, validate_topic

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


def error_page(request: HttpRequest, status: int, message: str, api: bool = False) -> HttpResponse:
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
                        response = error_page(request, status, "staff session or API token required", api=True)
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
                    return error_page(request, 403, "You can look at the queues but not change them (read-only access).")
                return staff_view(request, *args, **kwargs)
            except BadParameter as exc:
                return error_page(request, 400, str(exc), api)
            except (NotFound, InvalidTopic, MessageNotFound) as exc:
                return error_page(request, 404, str(exc), api)
            except DiskFull as exc:
                return error_page(
                    request,
                    503,
                    f"The disk holding the queues is full: nothing was changed. Free some space and retry. ({exc})",
                    api,
                )
            except QueueError as exc:
                return error_page(request, 503, f"The queue could not do this now: {exc}", api)

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


def poll_interval(request: HttpRequest) -> int:
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


def int_param(raw: str | None, name: str, low: int, high: int | None = None) -> int | None:
    if raw is None or raw == "":
        return None
    # ASCII digits only: no sign, spaces, "1e3" or "²"; and short enough for int().
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise BadParameter(f"{name} must be a whole number below 10^19, not {raw[:40]!r}")
    value = int(raw)
    if value < low or (high is not None and value > high):
        raise BadParameter(f"{name} must be between {low} and {high}" if high else f"{name} must be at least {low}")
    return value


def parse_message_id(raw: str) -> int:
    value = int_param(raw, "a message id", 1)
    if value is None:
        raise BadParameter("a message id is required")
    return value


def parse_ids(values: list[str]) -> list[int]:
    if not values:
        raise BadParameter("select at least one message")
    if len(values) > MAX_IDS:
        raise BadParameter(f"at most {MAX_IDS} messages at once")
    return sorted({parse_message_id(v) for v in values})


def existing_topic(queues: Queues, topic: str) -> str:
    validate_topic(topic)  # InvalidTopic: 404
    if topic not in queues.topics():
        raise NotFound(f"no topic {topic!r}")
    return topic


def next_url(request: HttpRequest, default: str) -> str:
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return default


def flash(request: HttpRequest, level: int, text: str) -> None:
    messages.add_message(request, level, text, fail_silently=True)


def poll_trigger(every: int, extra: str = "") -> str:
    """An ``hx-trigger`` that polls every ``every`` seconds while the tab is
    visible (and ``extra`` holds), and refreshes at once when it shows again."""
    cond = "document.visibilityState === 'visible'" + (f" && {extra}" if extra else "")
    return f"every {every}s [{cond}], visibilitychange[{cond}] from:document"


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
