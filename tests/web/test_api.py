"""api/stats (JSON) and metrics (Prometheus), their access, the rates and
the history behind them, and the dashboard under another prefix."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import call_command
from django.test import Client, override_settings
from django.urls import reverse

from dqadmin import history
from dqadmin.queues import get_queues
from dqadmin.stats import build_stats, public_location
from queuecore import Queues

from .conftest import fail_one

pytestmark = pytest.mark.django_db


def test_api_stats_json(op_client: Client, qs: Queues, backend_name: str) -> None:
    qs.put_many("q1", [1, 2])
    fail_one(qs, "q1")
    response = op_client.get(reverse("dqadmin:api_stats"))
    assert response["Content-Type"] == "application/json"
    data = response.json()
    assert data["topics"]["q1"]["ready"] == 2 and data["topics"]["q1"]["failed"] == 1
    assert set(data) >= {"generated_at", "backend", "topics", "totals", "rates", "storage", "consumers"}
    assert {"in_rate", "out_rate", "oldest_ready_age", "backlog_without_consumer"} <= set(data["topics"]["q1"])
    assert data["backend"] == backend_name and data["location"] == qs.location
    storage, row = data["storage"], data["topics"]["q1"]
    assert row["oldest_ready_age"] is not None and row["oldest_ready_age"] >= 0
    if backend_name == "slab":
        assert storage["num_slabs"] == row["num_slabs"] >= 1 and row["num_active_slabs"] >= 1
        assert storage["total"] >= storage["free"] >= 0
    else:  # no slab files and no local disk by design
        assert storage["num_slabs"] == row["num_slabs"] == row["num_active_slabs"] == 0
        assert "free" not in storage and "total" not in storage


def test_api_needs_a_staff_session_or_the_token(client: Client, qs: Queues) -> None:
    for name in ("dqadmin:api_stats", "dqadmin:metrics"):
        url = reverse(name)
        anonymous = client.get(url)
        assert anonymous.status_code == 401 and anonymous["WWW-Authenticate"].startswith("Bearer")
        assert client.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get(url, headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        assert client.post(url, headers={"Authorization": "Bearer s3cret-token"}).status_code == 405


def test_no_token_configured_means_session_only(client: Client, qs: Queues, dq_settings: dict) -> None:
    without_token = {k: v for k, v in dq_settings.items() if k != "API_TOKEN"}
    with override_settings(DQ=without_token):
        assert client.get(reverse("dqadmin:metrics"), headers={"Authorization": "Bearer "}).status_code == 401


METRIC_LINE = re.compile(r'^([a-z_]+)(\{[a-z_]+="(?:[^"\\]|\\.)*"(?:,[a-z_]+="(?:[^"\\]|\\.)*")*\})? (-?[0-9.e+]+)$')


def test_metrics_format(op_client: Client, qs: Queues, backend_name: str) -> None:
    qs.put_many("q1", [1, 2, 3])
    fail_one(qs, "q1")
    qs.put("q.two", 1)
    response = op_client.get(reverse("dqadmin:metrics"))
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = response.content.decode()
    assert text.endswith("\n")
    helped, typed, seen = set(), {}, set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("gauge", "counter", "histogram")
            typed[name] = kind
        else:
            match = METRIC_LINE.match(line)
            assert match, line
            seen.add(match.group(1))
    assert seen <= helped and seen <= set(typed)
    assert all(name.endswith("_total") for name, kind in typed.items() if kind == "counter")
    assert 'dq_messages{topic="q1",state="ready"} 3' in text
    assert 'dq_messages{topic="q1",state="failed"} 1' in text
    assert 'dq_enqueued_total{topic="q1"} 4' in text
    assert 'dq_enqueued_total{topic="q.two"} 1' in text
    if backend_name == "slab":
        assert re.search(r'^dq_slabs\{topic="q1"\} [1-9]', text, re.M)
        assert re.search(r"^dq_disk_free_bytes [0-9]", text, re.M)
    else:  # no slabs, no local disk: zero slabs and no free-space sample
        assert 'dq_slabs{topic="q1"} 0' in text
        assert not re.search(r"^dq_disk_free_bytes", text, re.M)


def test_metrics_escape_label_values(op_client: Client, qs: Queues) -> None:
    qs.backend.write_heartbeat("x", {"host": 'we"ird\\host', "pid": 3, "topics": [], "last_beat": 0})
    text = op_client.get(reverse("dqadmin:metrics")).content.decode()
    assert 'dq_consumer_up{host="we\\"ird\\\\host",pid="3"} 0' in text


def test_rates_from_the_history(qs: Queues) -> None:
    qs.put_many("q1", [1] * 10)
    first = build_stats(qs, now=1000.0)
    assert first["topics"]["q1"]["in_rate"] is None and first["rates"]["in"] is None
    qs.put_many("q1", [1] * 20)
    for _ in range(5):
        task = qs.take("q1", timeout=0)
        assert task is not None and task.complete()
    second = build_stats(qs, now=1002.0)
    assert second["topics"]["q1"]["in_rate"] == pytest.approx(10.0)
    assert second["topics"]["q1"]["out_rate"] == pytest.approx(2.5)
    assert second["rates"] == {"in": pytest.approx(10.0), "out": pytest.approx(2.5)}
    # Samples older than the window no longer count.
    assert build_stats(qs, now=1100.0)["topics"]["q1"]["in_rate"] is None


def test_history_keeps_one_sample_a_second_and_charts_them() -> None:
    h = history.History(maxlen=5)
    for i in range(10):
        h.record(100.0 + i * 0.5, {"t": (i * 10, i)})
    assert [s.at for s in h.samples()] == [100.0, 101.0, 102.0, 103.0, 104.0]
    points = h.series("t", now=104.0)
    assert points[0] == (3.0, pytest.approx(20.0), pytest.approx(2.0))
    assert h.series("other", now=104.0)[0][1:] == (0, 0)
    svg = history.chart(points)
    assert svg["max"] == 20 and not svg["empty"]
    assert len(svg["in_points"].split()) == len(points)
    assert history.chart([])["empty"]


def test_chart_scale() -> None:
    assert [history._nice(v) for v in (0, 0.3, 1, 1.5, 3, 7, 11, 250)] == [1, 1, 1, 2, 5, 10, 20, 500]


@override_settings(ROOT_URLCONF="tests.web.urls_prefixed")
def test_dashboard_under_a_prefix(op_client: Client, qs: Queues) -> None:
    mid = fail_one(qs, "q1")
    assert reverse("dqadmin:overview") == "/ops/queues/"
    for url in (
        "/ops/queues/",
        "/ops/queues/topics/q1/",
        f"/ops/queues/topics/q1/messages/{mid}/",
        "/ops/queues/failed/",
        "/ops/queues/demo/",
    ):
        html = op_client.get(url).content.decode()
        links = re.findall(r'(?:href|action|hx-get|hx-post|formaction)="(/[^"]*)"', html)
        assert links, url
        outside = [link for link in links if not link.startswith(("/ops/queues/", "/static/"))]
        assert outside == [], (url, outside)
    assert op_client.get("/ops/queues/metrics").status_code == 200


@pytest.mark.parametrize("backend_name", ["redis"])
@pytest.mark.parametrize(
    "location",
    ["redis://default:pw-Zq81@127.0.0.1:6379/15", "redis://:pw-Zq81@127.0.0.1:6379/15", "redis://127.0.0.1:6379/15?password=pw-Zq81"],
)
def test_the_redis_password_is_never_shown(
    op_client: Client, client: Client, qs: Queues, dq_settings: dict, location: str
) -> None:
    """A password in the Redis URL must not reach the overview, api/stats
    (readable with the scrapers' token) or the metrics."""
    with override_settings(DQ={**dq_settings, "LOCATION": location}):
        qs.put("q1", 1)  # the same server, database and prefix: the same topics
        page = op_client.get(reverse("dqadmin:overview"))
        assert page.status_code == 200 and 'id="topic-q1"' in page.content.decode()
        api = client.get(reverse("dqadmin:api_stats"), headers={"Authorization": "Bearer s3cret-token"})
        assert api.json()["topics"]["q1"]["ready"] == 1
        metrics = op_client.get(reverse("dqadmin:metrics"))
        for response in (page, api, metrics):
            assert b"pw-Zq81" not in response.content
        assert "127.0.0.1:6379/15" in api.json()["location"] and "***" in api.json()["location"]
        # Nor the commands' output, nor a Queues' repr (logs, tracebacks).
        out = io.StringIO()
        call_command("dqcheck", stdout=out)
        assert "pw-Zq81" not in out.getvalue() and "***" in out.getvalue()
        assert "pw-Zq81" not in repr(get_queues()) and "***" in repr(get_queues())


def test_public_location() -> None:
    assert public_location("var/queues") == "var/queues"
    assert public_location("memory://web") == "memory://web"
    assert public_location("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert public_location("rediss://u:p%40ss@h:6380/0") == "rediss://u:***@h:6380/0"
    assert public_location("redis://:pw@h/0?db=1&password=pw") == "redis://:***@h/0?db=1&password=***"
    assert public_location("unix:///run/redis.sock?password=pw&db=2") == "unix:///run/redis.sock?password=***&db=2"
