"""The system checks that tell a host project what it forgot, by id; the
former URL module name; and the bundled site's first ``migrate``."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from django.core import checks
from django.test import override_settings
from django_htmx.middleware import HtmxMiddleware

from tests.settings import INSTALLED_APPS, MIDDLEWARE

ROOT = Path(__file__).resolve().parents[2]


def check_ids() -> set[str]:
    return {m.id for m in checks.run_checks() if m.id}


def test_a_complete_setup_has_no_dq_messages() -> None:
    assert not {i for i in check_ids() if i.startswith("dqadmin.")}


@override_settings(INSTALLED_APPS=[a for a in INSTALLED_APPS if a != "django_htmx"])
def test_django_htmx_missing_from_installed_apps() -> None:
    assert "dqadmin.E007" in check_ids()


@override_settings(MIDDLEWARE=[m for m in MIDDLEWARE if "htmx" not in m])
def test_htmx_middleware_missing() -> None:
    assert "dqadmin.E008" in check_ids()


class ProjectHtmxMiddleware(HtmxMiddleware):
    """A project's own subclass of the middleware."""


def test_a_subclass_of_the_htmx_middleware_counts() -> None:
    others = [m for m in MIDDLEWARE if "htmx" not in m]
    with override_settings(MIDDLEWARE=[*others, f"{__name__}.ProjectHtmxMiddleware"]):
        assert "dqadmin.E008" not in check_ids()


def test_location_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "queues").write_text("not a directory")
    with override_settings(DQ={"LOCATION": str(tmp_path / "queues")}):
        assert "dqadmin.E009" in check_ids()


def test_location_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with override_settings(DQ={"LOCATION": str(tmp_path / "file" / "queues")}):
        assert "dqadmin.E009" in check_ids()


def test_location_not_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The tests run as root, who may write anywhere: the refusal that any
    # other user meets is injected.
    real_access = os.access
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda p, m: False if str(p) == str(locked) else real_access(p, m))
    with override_settings(DQ={"LOCATION": str(locked / "queues")}):
        found = [m for m in checks.run_checks() if m.id == "dqadmin.E009"]
    assert found and "not writable" in found[0].msg


def test_location_not_yet_created_is_fine(tmp_path: Path) -> None:
    with override_settings(DQ={"LOCATION": str(tmp_path / "a" / "b" / "queues")}):
        assert "dqadmin.E009" not in check_ids()


def test_location_as_a_path_object(tmp_path: Path) -> None:
    from dqadmin.conf import conf

    with override_settings(DQ={"LOCATION": tmp_path / "queues"}):
        assert not {i for i in check_ids() if i.startswith("dqadmin.E")}
        assert conf.LOCATION == str(tmp_path / "queues")
    (tmp_path / "file").write_text("x")
    with override_settings(DQ={"LOCATION": tmp_path / "file"}):
        assert "dqadmin.E009" in check_ids()


@pytest.mark.parametrize(
    "location", ["redis://127.0.0.1:notaport/0", "redis:///0"]
)
def test_bad_redis_url(location: str) -> None:
    with override_settings(DQ={"LOCATION": location}):
        assert "dqadmin.E009" in check_ids()


def test_good_redis_url_is_not_connected_to() -> None:
    # A check runs before every command: it never waits on a server.
    with override_settings(DQ={"LOCATION": "redis://127.0.0.1:1/0"}):
        assert "dqadmin.E009" not in check_ids()


def test_redis_url_without_redis_py(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # as if redis-py were not installed
    with override_settings(DQ={"LOCATION": "redis://127.0.0.1:6379/0"}):
        found = [m for m in checks.run_checks() if m.id == "dqadmin.E009"]
    assert found and "redis-py" in found[0].msg


def test_memory_location_warns() -> None:
    with override_settings(DQ={"LOCATION": "memory://x"}):
        found = [m for m in checks.run_checks() if m.id == "dqadmin.W001"]
    assert found and not found[0].is_serious()


def test_former_url_module_still_works_with_a_warning() -> None:
    sys.modules.pop("dqadmin.dashboard_urls", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("dqadmin.dashboard_urls")
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    import dqadmin.urls

    assert old.urlpatterns is dqadmin.urls.urlpatterns and old.app_name == "dqadmin"


def test_migrate_on_a_fresh_clone_creates_the_var_folder(tmp_path: Path) -> None:
    var = tmp_path / "fresh" / "var"
    env = {**os.environ, "DQ_VAR_DIR": str(var), "DJANGO_SETTINGS_MODULE": "dqsite.settings"}
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (var / "db.sqlite3").is_file()
