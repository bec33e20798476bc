"""The project loads, its checks fire, and the home page is staff-only."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from django.urls import reverse

from dqadmin.checks import DEVELOPMENT_SECRET_KEY, raise_on_errors
from dqadmin.conf import conf
from dqsite.settings import _database


def check_ids() -> set[str]:
    return {m.id for m in checks.run_checks() if m.id}


def test_settings_load() -> None:
    from django.conf import settings

    assert "dqadmin" in settings.INSTALLED_APPS
    assert "django_htmx" in settings.INSTALLED_APPS
    assert conf.LOCATION.endswith("queues")


def test_database_url_parsing() -> None:
    assert _database(None, "/x/db.sqlite3")["NAME"] == "/x/db.sqlite3"
    pg = _database("postgres://u:p%40ss@db.example:6543/dq", None)
    assert pg["ENGINE"] == "django.db.backends.postgresql"
    assert (pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"], pg["NAME"]) == ("u", "p@ss", "db.example", "6543", "dq")
    with pytest.raises(ValueError):
        _database("mysql://x/y", None)


def test_no_errors_in_test_settings() -> None:
    assert not [m for m in checks.run_checks() if m.is_serious()]


@override_settings(DEBUG=False, SECRET_KEY=DEVELOPMENT_SECRET_KEY)
def test_development_key_refused_in_production() -> None:
    assert "dqadmin.E001" in check_ids()
    with pytest.raises(ImproperlyConfigured, match="dqadmin.E001"):
        raise_on_errors()


@override_settings(DEBUG=True, SECRET_KEY=DEVELOPMENT_SECRET_KEY)
def test_development_key_fine_in_debug() -> None:
    assert "dqadmin.E001" not in check_ids()


@override_settings(DQ="nope")
def test_dq_must_be_a_dict() -> None:
    assert "dqadmin.E002" in check_ids()


@override_settings(DQ={"LOCATION": "ftp://x"})
def test_unknown_location_scheme() -> None:
    assert "dqadmin.E003" in check_ids()


@override_settings(DQ={"LOCATION": "var/q", "OPTIONS": {"fsync_everything": True}})
def test_unknown_option() -> None:
    assert "dqadmin.E005" in check_ids()


@override_settings(DQ={"LOCATION": "var/q", "HEARTBEAT_INTERVAL": -1})
def test_bad_interval() -> None:
    assert "dqadmin.E006" in check_ids()


@override_settings(DQ={"LOCATION": "memory://conf-test", "OPTIONS": {"fsync_put": False}})
def test_conf_is_lazy() -> None:
    assert conf.LOCATION == "memory://conf-test"
    assert conf.OPTIONS == {"fsync_put": False}


@pytest.mark.django_db
def test_home_redirects_anonymous(client) -> None:
    response = client.get(reverse("dqadmin:overview"))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


@pytest.mark.django_db
def test_home_refuses_non_staff(client) -> None:
    user = get_user_model().objects.create_user("bob", password="pw")
    client.force_login(user)
    assert client.get(reverse("dqadmin:overview")).status_code == 302


@pytest.mark.django_db
@override_settings(DQ={"LOCATION": "memory://home-test"})
def test_home_answers_staff(client) -> None:
    from dqadmin.queues import get_queues

    get_queues().put("q1", {"uuid": "x"})
    user = get_user_model().objects.create_user("ann", password="pw", is_staff=True)
    client.force_login(user)
    response = client.get(reverse("dqadmin:overview"))
    assert response.status_code == 200
    assert b"q1" in response.content
