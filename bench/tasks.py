"""Django tasks on dq against the other tasks backends (issue 16).

    .venv/bin/python bench/tasks.py              # writes bench/tasks-results.md
    .venv/bin/python bench/tasks.py --quick      # a smoke run (writes nothing unless --out)

Two numbers per backend, side by side in one run, each the median of the
repetitions (the backends take turns inside each repetition):

- enqueue: ``noop.enqueue(i)`` N times in a loop, as views do one by one, in
  a fresh process (Django set up, the first enqueue done before the clock
  starts);
- worker: the backend's own worker command started on N waiting no-op tasks
  until it exits having run them all: tasks per second, process start-up
  included (``runconsumers --burst``, ``db_worker --batch``, ``rqworker
  --burst``).

Backends: dq on slab files (its defaults: every put fsynced, then without),
django-tasks-db's DatabaseBackend on SQLite (Django's defaults) and on the
local PostgreSQL, and django-tasks-rq on the local Redis when they install.
Each backend gets its own site (settings written here) and a fresh store.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# What the peers need, installed into this environment when missing.
PEER_PACKAGES = {
    "django_tasks_db": "django-tasks-db",
    "psycopg": "psycopg[binary]",
    "django_tasks_rq": "django-tasks-rq",
}
# The issue's figures (SQLite, Django 5.2's defaults, 5,000 no-op tasks) and
# the targets set from them.
ISSUE_DB_ENQUEUE, ISSUE_DB_WORKER = 730.0, 230.0
TARGET_ENQUEUE, TARGET_WORKER = 20.0, 10.0

TASKS_MODULE = '''
from dqadmin.tasks.compat import task


@task()
def noop(i):
    return None
'''

SETTINGS = '''
import os
from importlib.util import find_spec

BASE = {base!r}
SECRET_KEY = "bench"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django_htmx", "dqadmin"]
if find_spec("django.tasks") is None:
    INSTALLED_APPS.append("django_tasks")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
MIDDLEWARE = ["django_htmx.middleware.HtmxMiddleware"]
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.join(BASE, "db.sqlite3")}}}}
LOGGING = {{"version": 1, "disable_existing_loggers": False,
           "root": {{"handlers": [], "level": "WARNING"}}}}
DQ = {{"LOCATION": os.path.join(BASE, "queues"), "OPTIONS": {dq_options!r}}}
{extra}
'''

EXTRA = {
    "dq": 'TASKS = {"default": {"BACKEND": "dqadmin.tasks.DQBackend"}}',
    "db-sqlite": textwrap.dedent('''
        INSTALLED_APPS.append("django_tasks_db")
        TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    '''),
    "db-postgres": textwrap.dedent('''
        INSTALLED_APPS.append("django_tasks_db")
        DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": os.environ["BENCH_PG_DB"],
                                 "HOST": "127.0.0.1", "PORT": "5432", "USER": "postgres"}}
        TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    '''),
    "rq": textwrap.dedent('''
        INSTALLED_APPS += ["django_rq", "django_tasks_rq"]
        RQ_QUEUES = {"default": {"URL": "redis://127.0.0.1:6379/14"}}
        TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default"]}}
    '''),
}

WORKER = {
    "dq": ["runconsumers", "--burst", "-v", "0"],
    "db-sqlite": ["db_worker", "--batch", "--no-startup-delay", "-v", "0"],
    "db-postgres": ["db_worker", "--batch", "--no-startup-delay", "-v", "0"],
    "rq": ["rqworker", "--burst", "--job-class", "django_tasks_rq.Job", "-v", "0", "default"],
}

ENQUEUE = '''
import sys, time, django
django.setup()
from benchtasks import noop
n = int(sys.argv[1])
noop.enqueue(-1)
started = time.perf_counter()
for i in range(n):
    noop.enqueue(i)
print(n / (time.perf_counter() - started))
'''

PROFILE = '''
import cProfile, pstats, sys, django
django.setup()
from benchtasks import noop
noop.enqueue(-1)
profile = cProfile.Profile()
profile.enable()
for i in range(int(sys.argv[1])):
    noop.enqueue(i)
profile.disable()
stats = pstats.Stats(profile)
stats.sort_stats("tottime").print_stats(12)
'''


@dataclass
class Config:
    name: str  # the column's name
    kind: str  # a key of EXTRA
    dq_options: dict[str, Any]
    label: str


CONFIGS = [
    Config("dq", "dq", {}, "dq (slab, fsync per put: its default)"),
    Config("dq-nofsync", "dq", {"fsync_put": False}, "dq (slab, fsync_put=False)"),
    Config("db-sqlite", "db-sqlite", {}, "django-tasks-db, SQLite"),
    Config("db-postgres", "db-postgres", {}, "django-tasks-db, PostgreSQL"),
    Config("rq", "rq", {}, "django-tasks-rq (Redis)"),
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ensure_peers() -> list[str]:
    """Install the peers that are missing; the names of those that are there."""
    missing = [pkg for mod, pkg in PEER_PACKAGES.items() if importlib.util.find_spec(mod) is None]
    if missing:
        log(f"installing {', '.join(missing)} ...")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=False)
        importlib.invalidate_caches()
    return [mod for mod in PEER_PACKAGES if importlib.util.find_spec(mod) is not None]


def _pg(sql: str) -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    try:
        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True,
                             connect_timeout=3) as conn:
            conn.execute(sql)
        return True
    except Exception as exc:  # no server, no role: the column says so
        log(f"PostgreSQL: {exc}")
        return False


class Site:
    """A throwaway Django site for one backend, with a fresh store."""

    def __init__(self, config: Config, root: str) -> None:
        self.config = config
        self.base = tempfile.mkdtemp(prefix=f"{config.name}-", dir=root)
        self.pg_db = f"dqbench_{uuid.uuid4().hex[:10]}"
        with open(os.path.join(self.base, "benchsettings.py"), "w") as out:
            out.write(SETTINGS.format(base=self.base, dq_options=config.dq_options, extra=EXTRA[config.kind]))
        with open(os.path.join(self.base, "benchtasks.py"), "w") as out:
            out.write(TASKS_MODULE)
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "benchsettings",
            "PYTHONPATH": os.pathsep.join([self.base, ROOT]),
            "BENCH_PG_DB": self.pg_db,
        }

    def setup(self) -> None:
        if self.config.kind == "db-postgres" and not _pg(f"CREATE DATABASE {self.pg_db}"):
            raise RuntimeError("no PostgreSQL server to use")
        if self.config.kind == "rq":
            import redis

            redis.Redis.from_url("redis://127.0.0.1:6379/14").flushdb()
        if self.config.kind.startswith("db-"):
            self.manage("migrate", "-v", "0")

    def manage(self, *args: str) -> float:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "django", *args], env=self.env, cwd=self.base,
            capture_output=True, text=True, timeout=1800,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()[-800:]}")
        return time.perf_counter() - started

    def python(self, code: str, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code, *args], env=self.env, cwd=self.base,
            capture_output=True, text=True, timeout=1800,
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip()[-800:])
        return done.stdout

    def teardown(self) -> None:
        if self.config.kind == "db-postgres":
            _pg(f"DROP DATABASE IF EXISTS {self.pg_db} WITH (FORCE)")
        shutil.rmtree(self.base, ignore_errors=True)


def measure(config: Config, root: str, n: int) -> tuple[float, float]:
    """(enqueues per second, tasks run per second by the worker)."""
    site = Site(config, root)
    try:
        site.setup()
        enqueue = float(site.python(ENQUEUE, str(n)).strip().splitlines()[-1])
        seconds = site.manage(*WORKER[config.kind])
        left = site.python(REMAINING[config.kind]).strip()
        if left != "0":
            raise RuntimeError(f"the worker left {left} tasks")
        return enqueue, (n + 1) / seconds
    finally:
        site.teardown()


REMAINING = {
    "dq": (
        "import django; django.setup()\n"
        "from dqadmin.queues import get_queues\n"
        "s = get_queues().stats().get('tasks.default', {})\n"
        "print(s.get('ready', 0) + s.get('delayed', 0) + s.get('in_progress', 0))"
    ),
    "db-sqlite": (
        "import django; django.setup()\n"
        "from django_tasks_db.models import DBTaskResult\n"
        "print(DBTaskResult.objects.exclude(status='SUCCESSFUL').count())"
    ),
    "rq": (
        "import django; django.setup()\n"
        "import django_rq\n"
        "print(len(django_rq.get_queue('default')))"
    ),
}
REMAINING["db-postgres"] = REMAINING["db-sqlite"]


def profile_dq(root: str, n: int) -> str:
    site = Site(CONFIGS[0], root)
    try:
        site.setup()
        return site.python(PROFILE, str(n))
    finally:
        site.teardown()


def fmt(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value / 1000:.1f}k" if value >= 10_000 else f"{value:,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="500 tasks, one repetition (a smoke run)")
    parser.add_argument("--n", type=int, default=None, help="tasks per measurement (default 5000)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3)")
    parser.add_argument("--only", default="", help="comma-separated columns, e.g. dq,db-sqlite")
    parser.add_argument("--out", default=None, help="where to write the table (default bench/tasks-results.md)")
    args = parser.parse_args(argv)
    n = args.n or (500 if args.quick else 5000)
    reps = args.reps or (1 if args.quick else 3)
    if n < 1 or reps < 1:
        parser.error("--n and --reps must be at least 1")
    configs = [c for c in CONFIGS if not args.only or c.name in args.only.split(",")]
    if not configs:
        parser.error(f"--only names none of {', '.join(c.name for c in CONFIGS)}")
    have = set(ensure_peers()) if any(c.kind != "dq" for c in configs) else set()
    skipped: dict[str, str] = {}
    for c in configs:
        if c.kind.startswith("db-") and "django_tasks_db" not in have:
            skipped[c.name] = "django-tasks-db did not install"
        if c.kind == "db-postgres" and "psycopg" not in have:
            skipped[c.name] = "psycopg did not install"
        if c.kind == "rq" and "django_tasks_rq" not in have:
            skipped[c.name] = "django-tasks-rq did not install"
    root = tempfile.mkdtemp(prefix="dq-tasks-bench-")
    runs: dict[str, list[tuple[float, float]]] = {c.name: [] for c in configs}
    try:
        for rep in range(reps):
            for c in configs:
                if c.name in skipped:
                    continue
                try:
                    enq, work = measure(c, root, n)
                except Exception as exc:  # a peer that does not run here: its column says why
                    skipped[c.name] = str(exc).splitlines()[-1][:200]
                    log(f"{c.name}: {skipped[c.name]}")
                    continue
                runs[c.name].append((enq, work))
                log(f"rep {rep + 1}/{reps} {c.name}: enqueue {enq:,.0f}/s, worker {work:,.0f}/s")
        profile = profile_dq(root, min(n, 2000)) if not args.quick else ""
    finally:
        shutil.rmtree(root, ignore_errors=True)

    med = {name: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
           for name, rs in runs.items() if rs}
    import django

    lines = [
        "# Django tasks backends, side by side",
        "",
        f"`bench/tasks.py`, {n:,} no-op tasks, median of {reps}; Django {django.get_version()}, "
        f"Python {platform.python_version()}, {os.cpu_count()} cores. Ratios are dq's (slab, its "
        "defaults) to each peer.",
        "",
        "| backend | enqueue/s | worker tasks/s (start-up included) | dq's enqueue ratio | dq's worker ratio |",
        "|---|---|---|---|---|",
    ]
    ours = med.get("dq")
    for c in configs:
        if c.name not in med:
            lines.append(f"| {c.label} | n/a: {skipped.get(c.name, 'not run')} | | | |")
            continue
        enq, work = med[c.name]
        ratio = (f"{ours[0] / enq:.1f}x", f"{ours[1] / work:.1f}x") if ours and c.name != "dq" else ("", "")
        lines.append(f"| {c.label} | {fmt(enq)} | {fmt(work)} | {ratio[0]} | {ratio[1]} |")
    if ours:
        lines += [
            "",
            f"Targets (from the issue's {ISSUE_DB_ENQUEUE:.0f} enqueues/s and {ISSUE_DB_WORKER:.0f} tasks/s of "
            "django-tasks-db on SQLite): "
            f"enqueue {TARGET_ENQUEUE:.0f}x = {TARGET_ENQUEUE * ISSUE_DB_ENQUEUE:,.0f}/s, "
            f"worker {TARGET_WORKER:.0f}x = {TARGET_WORKER * ISSUE_DB_WORKER:,.0f}/s.",
        ]
        for name in ("dq", "dq-nofsync"):
            if name in med:
                e, w = med[name]
                lines.append(
                    f"- {name}: enqueue {e / ISSUE_DB_ENQUEUE:.1f}x the issue's figure "
                    f"({'met' if e >= TARGET_ENQUEUE * ISSUE_DB_ENQUEUE else 'not met'}), worker "
                    f"{w / ISSUE_DB_WORKER:.1f}x ({'met' if w >= TARGET_WORKER * ISSUE_DB_WORKER else 'not met'})."
                )
    if profile:
        lines += ["", "Profile of dq's enqueue loop (fsync per put), by own time:", "", "```",
                  *[line for line in profile.strip().splitlines() if line.strip()][:24], "```"]
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or (None if args.quick else os.path.join(HERE, "tasks-results.md"))
    if out:
        with open(out, "w") as fh:
            fh.write(text)
        log(f"wrote {out}")
    print(json.dumps({k: {"enqueue": v[0], "worker": v[1]} for k, v in med.items()}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
