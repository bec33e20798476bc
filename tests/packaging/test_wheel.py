"""What a Django user does: build the wheel (from the sdist), install it into
a fresh virtual environment, make a site with ``django-admin startproject``,
add dq as the README says, and use it.

Slow (a build and a pip install from the package index), so behind the
``packaging`` marker: ``make test-wheel`` runs it, and so does ``.ci/run``.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "wheel-test-pw-9f3k"

# What the README's "Add dq to your Django project" tells a user to add
# (test_the_readme_says_what_this_test_does keeps the two the same).
README_SETTINGS = [
    'INSTALLED_APPS += ["django_htmx", "dqadmin"]',
    'MIDDLEWARE += ["django_htmx.middleware.HtmxMiddleware"]',
    'DQ = {"LOCATION": BASE_DIR / "var" / "queues"}',
]
URLS_ADDITION = '    path("ops/queues/", include("dqadmin.urls")),\n'
# The site's own: its app of consumers, and where collectstatic writes.
SITE_SETTINGS = ['INSTALLED_APPS += ["shop"]', 'STATIC_ROOT = BASE_DIR / "staticfiles"']
CONSUMER = '''
from pathlib import Path

from dqadmin.consumers import consumer


@consumer("emails")
def send_email(value, task):
    with open(Path(__file__).with_name("sent.txt"), "a") as out:
        out.write(f"{task.id} {value['to']}\\n")
'''


@dataclass
class Site:
    venv: Path
    path: Path
    queue_dir: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @property
    def env(self) -> dict[str, str]:
        """The user's environment: nothing of the test run's settings or paths."""
        env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")}
        env["DJANGO_SUPERUSER_PASSWORD"] = PASSWORD
        return env

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A command of the virtual environment, in the site's folder."""
        done = subprocess.run(
            [str(self.bin / args[0]), *args[1:]], cwd=self.path, env=self.env, text=True,
            capture_output=True, timeout=300,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("python", "manage.py", *args, check=check)


def _build(out: Path) -> tuple[Path, Path]:
    # The wheel is built from the sdist, as pip does from an index.
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=600,
    )
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return wheel, sdist


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _build(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def site(dist: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("user")
    venv = base / "venv"
    # A venv of the interpreter that runs the tests, with nothing of ours in it.
    python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(dist[0])],
        check=True, timeout=600,
    )
    site = Site(venv=venv, path=base / "mysite", queue_dir=base / "mysite" / "var" / "queues")
    site.path.mkdir()
    subprocess.run([str(venv / "bin" / "django-admin"), "startproject", "mysite", str(site.path)],
                   check=True, timeout=60)
    site.manage("startapp", "shop")
    settings = site.path / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\n" + "\n".join(README_SETTINGS + SITE_SETTINGS) + "\n")
    urls = site.path / "mysite" / "urls.py"
    text = urls.read_text().replace("from django.urls import path", "from django.urls import include, path")
    urls.write_text(text.replace("    path('admin/', admin.site.urls),\n",
                                 "    path('admin/', admin.site.urls),\n" + URLS_ADDITION)
                    .replace('    path("admin/", admin.site.urls),\n',
                             '    path("admin/", admin.site.urls),\n' + URLS_ADDITION))
    assert "dqadmin.urls" in urls.read_text()
    (site.path / "shop" / "consumers.py").write_text(CONSUMER)
    yield site


def test_the_readme_says_what_this_test_does() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Add dq to your Django project", 1)[1].split("\n## ", 1)[0]
    for line in [*README_SETTINGS, URLS_ADDITION.rstrip("\n")]:
        assert line in section, line


def test_wheel_and_sdist_carry_the_app(dist: tuple[Path, Path]) -> None:
    wheel, sdist = dist
    names = zipfile.ZipFile(wheel).namelist()
    for needed in (
        "dqadmin/templates/dqadmin/overview.html",
        "dqadmin/templates/dqadmin/_overview.html",
        "dqadmin/static/dqadmin/dq.css",
        "dqadmin/static/dqadmin/dq.js",
        "dqadmin/migrations/0001_queue_access_permission.py",
        "queuecore/py.typed",
        "queuecore/cli.py",
        "queuecore/slab/backend.py",
        "queuecore/lua/take.lua",
        "dqadmin/tasks/backend.py",
        "dqadmin/templates/dqadmin/tasks.html",
    ):
        assert needed in names, needed
    # The bundled site, the tests and the benchmarks stay in the repository.
    assert not [n for n in names if n.startswith(("dqsite/", "tests/", "bench/"))]
    assert not [n for n in names if "__pycache__" in n]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "dq = queuecore.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    assert {"templates/dqadmin/overview.html", "static/dqadmin/dq.css", "dqsite/settings.py"} <= members


def test_check_migrate_collectstatic(site: Site) -> None:
    checked = site.manage("check")
    assert "no issues" in checked.stdout
    site.manage("migrate", "--noinput")
    site.manage("collectstatic", "--noinput")
    assert (site.path / "staticfiles" / "dqadmin" / "dq.css").is_file()
    assert (site.path / "staticfiles" / "dqadmin" / "dq.js").is_file()


def test_checks_tell_what_was_forgotten(site: Site) -> None:
    settings = site.path / "mysite" / "settings.py"
    good = settings.read_text()
    try:
        settings.write_text(good + '\nMIDDLEWARE.remove("django_htmx.middleware.HtmxMiddleware")\n'
                            'INSTALLED_APPS.remove("django_htmx")\n')
        checked = site.manage("check", check=False)
        assert checked.returncode != 0
        assert "dqadmin.E007" in checked.stderr and "dqadmin.E008" in checked.stderr
    finally:
        settings.write_text(good)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dashboard_under_a_prefix_with_its_css(site: Site) -> None:
    site.manage("migrate", "--noinput")
    site.manage("createsuperuser", "--noinput", "--username", "ops", "--email", "ops@example.com")
    port = _free_port()
    log = site.path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [str(site.bin / "python"), "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=site.path, env=site.env, stdout=out, stderr=out,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        deadline = time.monotonic() + 60
        while True:
            try:
                login_page = browser.open(f"{url}/admin/login/?next=/ops/queues/", timeout=2).read().decode()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"runserver did not start:\n{log.read_text()}") from None
                time.sleep(0.2)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page)
        assert token, login_page
        form = urllib.parse.urlencode({
            "csrfmiddlewaretoken": token.group(1), "username": "ops", "password": PASSWORD,
            "next": "/ops/queues/",
        }).encode()
        request = urllib.request.Request(f"{url}/admin/login/?next=/ops/queues/", data=form,
                                         headers={"Referer": f"{url}/admin/login/"})
        with browser.open(request, timeout=10) as answer:
            assert answer.geturl() == f"{url}/ops/queues/"
            page = answer.read().decode()
        assert "<h1>Topics</h1>" in page
        css = re.search(r'<link[^>]+href="([^"]*dq\.css)"', page)
        assert css, page[:2000]
        assert css.group(1).startswith("/static/dqadmin/")
        with browser.open(f"{url}{css.group(1)}", timeout=10) as answer:
            assert answer.status == 200
            assert answer.headers["Content-Type"].startswith("text/css")
            assert len(answer.read()) > 1000
        # Every link of the page stays under the prefix.
        for href in re.findall(r'href="(/[^"]*)"', page):
            assert href.startswith(("/ops/queues/", "/static/", "/admin/")), href
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_dq_command_and_runconsumers(site: Site) -> None:
    queue = str(site.queue_dir)
    put = site.run("dq", "put", "--create", queue, "emails", '{"to": "a@example.com"}', '{"to": "b@example.com"}')
    assert put.stdout.split() == ["1", "2"]
    site.manage("runconsumers", "--burst")
    sent = (site.path / "shop" / "sent.txt").read_text().split("\n")
    assert sorted(line for line in sent if line) == ["1 a@example.com", "2 b@example.com"]
    stats = json.loads(site.run("dq", "stats", queue, "--json").stdout)
    assert stats["topics"]["emails"]["completed"] == 2
    assert "emails" in site.manage("dqstats").stdout
    missing = site.run("dq", "stats", str(site.path / "nowhere"), check=False)
    assert missing.returncode == 3 and missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
