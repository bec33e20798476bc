"""Who may see and who may act: staff only, read-only without the
permission, CSRF on every action, GET never changes anything."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from queuecore import Queues

from .conftest import HTMX, fail_one

pytestmark = pytest.mark.django_db

PAGES = [
    ("dqadmin:overview", []),
    ("dqadmin:topic", ["q1"]),
    ("dqadmin:message", ["q1", 1]),
    ("dqadmin:failed", []),
    ("dqadmin:demo", []),
]


@pytest.mark.parametrize("name,args", PAGES)
def test_anonymous_goes_to_login(client: Client, qs: Queues, name: str, args: list) -> None:
    qs.put("q1", 1)
    response = client.get(reverse(name, args=args))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_anonymous_htmx_poll_redirects_the_page(client: Client, qs: Queues) -> None:
    response = client.get(reverse("dqadmin:overview"), headers={**HTMX, "HX-Current-URL": "http://testserver/?every=2"})
    assert response.status_code == 200
    assert response["HX-Redirect"].startswith(reverse("admin:login"))
    assert "next=%2F%3Fevery%3D2" in response["HX-Redirect"]


def test_non_staff_refused(client: Client, qs: Queues) -> None:
    client.force_login(get_user_model().objects.create_user("bob", password="pw"))
    assert client.get(reverse("dqadmin:overview")).status_code == 302
    assert client.get(reverse("dqadmin:api_stats")).status_code == 403
    assert client.get(reverse("dqadmin:metrics")).status_code == 403


@pytest.mark.parametrize("name,args", PAGES)
def test_read_only_staff_can_look(ro_client: Client, qs: Queues, name: str, args: list) -> None:
    qs.put("q1", 1)
    response = ro_client.get(reverse(name, args=args))
    assert response.status_code == 200
    assert b"read-only" in response.content


def test_read_only_staff_sees_no_action_buttons(ro_client: Client, op_client: Client, qs: Queues) -> None:
    fail_one(qs, "q1")
    url = reverse("dqadmin:topic", args=["q1"]) + "?state=failed"
    assert b"Requeue selected" not in ro_client.get(url).content
    assert b"Requeue selected" in op_client.get(url).content


def _actions(qs: Queues) -> list[tuple[str, str, dict]]:
    mid = fail_one(qs, "q1")
    qs.put("q1", "ready one")
    return [
        ("post", reverse("dqadmin:requeue", args=["q1"]), {"id": [mid]}),
        ("get", reverse("dqadmin:delete", args=["q1"]) + f"?id={mid}", {}),
        ("post", reverse("dqadmin:delete", args=["q1"]), {"id": [mid], "confirm": "yes"}),
        ("post", reverse("dqadmin:requeue_failed", args=["q1"]), {}),
        ("get", reverse("dqadmin:purge", args=["q1"]), {}),
        ("post", reverse("dqadmin:purge", args=["q1"]), {}),
        ("post", reverse("dqadmin:purge", args=["q1"]), {"state": "failed"}),
        ("post", reverse("dqadmin:failed_requeue"), {"group": "0123456789abcdef"}),
        ("post", reverse("dqadmin:demo_start"), {"count": 5, "topics": "q1", "rate": 0}),
        ("post", reverse("dqadmin:demo_cancel", args=["1"]), {}),
    ]


def test_read_only_staff_cannot_act(ro_client: Client, qs: Queues) -> None:
    actions = _actions(qs)
    before = qs.stats()
    for method, url, data in actions:
        response = getattr(ro_client, method)(url, data)
        assert response.status_code == 403, url
        assert b"read-only" in response.content
    assert qs.stats() == before


def test_anonymous_cannot_act(client: Client, qs: Queues) -> None:
    actions = _actions(qs)
    before = qs.stats()
    for method, url, data in actions:
        assert getattr(client, method)(url, data).status_code == 302, url
    assert qs.stats() == before


def test_superuser_can_act(client: Client, qs: Queues) -> None:
    client.force_login(get_user_model().objects.create_superuser("root", password="pw"))
    mid = fail_one(qs, "q1")
    response = client.post(reverse("dqadmin:requeue", args=["q1"]), {"id": [mid]})
    assert response.status_code == 302
    assert qs.peek("q1", mid).state == "ready"


def test_get_never_changes_anything(op_client: Client, qs: Queues) -> None:
    mid = fail_one(qs, "q1")
    qs.put("q1", "x")
    before = qs.stats()
    for url in (
        reverse("dqadmin:requeue", args=["q1"]) + f"?id={mid}",
        reverse("dqadmin:requeue_failed", args=["q1"]),
        reverse("dqadmin:failed_requeue"),
        reverse("dqadmin:demo_start") + "?count=5&topics=q1&rate=0",
    ):
        assert op_client.get(url).status_code == 405, url
    # The destructive ones answer GET with a confirmation page, and change nothing.
    assert b"Yes, delete" in op_client.get(reverse("dqadmin:delete", args=["q1"]) + f"?id={mid}").content
    assert b"Yes, purge" in op_client.get(reverse("dqadmin:purge", args=["q1"])).content
    assert qs.stats() == before
    assert qs.peek("q1", mid).state == "failed"


def test_csrf_enforced(operator: object, qs: Queues) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)  # type: ignore[arg-type]
    mid = fail_one(qs, "q1")
    url = reverse("dqadmin:requeue", args=["q1"])
    assert client.post(url, {"id": [mid]}).status_code == 403
    assert qs.peek("q1", mid).state == "failed"
    page = client.get(reverse("dqadmin:topic", args=["q1"]) + "?state=failed")
    token = str(page.context["csrf_token"])
    assert token and f'value="{token}"'.encode() in page.content
    assert client.post(url, {"id": [mid], "csrfmiddlewaretoken": token}).status_code == 302
    assert qs.peek("q1", mid).state == "ready"


def test_csrf_header_for_htmx(operator: object, qs: Queues) -> None:
    """htmx sends the token in X-CSRFToken (hx-headers on <body>)."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)  # type: ignore[arg-type]
    page = client.get(reverse("dqadmin:demo"))
    token = str(page.context["csrf_token"])
    assert f'"X-CSRFToken": "{token}"'.encode() in page.content
    url = reverse("dqadmin:demo_start")
    data = {"count": 0, "topics": "q1", "rate": 0}
    assert client.post(url, data, headers=HTMX).status_code == 403
    assert client.post(url, data, headers={**HTMX, "X-CSRFToken": token}).status_code == 200


def test_confirm_pages_do_not_call_an_operator_read_only(op_client: Client, qs: Queues) -> None:
    mid = qs.put("q1", 1)
    for url in (reverse("dqadmin:purge", args=["q1"]), reverse("dqadmin:delete", args=["q1"]) + f"?id={mid}"):
        assert b"read-only" not in op_client.get(url).content
