"""Settings of the bundled site (``dqsite``): the dq dashboard as a project.

Every setting an operator changes in production can be given by an
environment variable, so the same code runs in development and production:

- ``DQ_SECRET_KEY``: Django's secret key (required when ``DQ_DEBUG`` is off;
  the development key is refused by the system check ``dqadmin.E001``).
- ``DQ_DEBUG``: ``1``/``true`` (default) or ``0``/``false``.
- ``DQ_ALLOWED_HOSTS``: comma-separated host names.
- ``DQ_DATABASE_URL``: ``sqlite:///path/to.db`` or
  ``postgres://user:password@host:port/name``; ``DQ_DATABASE_PATH`` is a
  shortcut for an SQLite file. The database holds users and sessions only;
  the queue itself never touches it.
- ``DQ_LOCATION``: where the queues live: a directory (slab files, the
  default ``var/queues``), ``memory://`` or ``redis://host:port/db``.
- ``DQ_OPTIONS``: a JSON object of queuecore options, e.g.
  ``{"fsync_put": false}`` or ``{"prefix": "myapp"}`` for Redis.
"""

from __future__ import annotations

import json
import os
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import unquote, urlparse

from dqadmin.checks import DEVELOPMENT_SECRET_KEY

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("DQ_VAR_DIR", BASE_DIR / "var"))


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _sqlite_in_var() -> str:
    # SQLite creates its file but not the folder it lives in: made here so
    # that `manage.py migrate` works on a fresh clone.
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    return str(VAR_DIR / "db.sqlite3")


def _database(url: str | None, path: str | None) -> dict[str, object]:
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path or _sqlite_in_var(),
        }
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": unquote(parsed.path) or ":memory:"}
    if parsed.scheme in {"postgres", "postgresql", "pgsql"}:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parsed.path.lstrip("/")),
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
        }
    raise ValueError(f"DQ_DATABASE_URL: unsupported scheme {parsed.scheme!r} (sqlite or postgres)")


SECRET_KEY = os.environ.get("DQ_SECRET_KEY", DEVELOPMENT_SECRET_KEY)
DEBUG = _env_bool("DQ_DEBUG", True)
ALLOWED_HOSTS = [
    h.strip() for h in os.environ.get("DQ_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "dqadmin",
    "dqadmin.demo",
]

# Django's tasks framework runs on dq's queues (dqadmin.tasks.DQBackend):
# Django 6's own, or on Django 5.2 the django-tasks backport if installed.
HAS_TASKS = find_spec("django.tasks") is not None
if not HAS_TASKS and find_spec("django_tasks") is not None:
    INSTALLED_APPS.append("django_tasks")
    HAS_TASKS = True
if HAS_TASKS:
    TASKS = {"default": {"BACKEND": "dqadmin.tasks.DQBackend", "QUEUES": ["default"]}}

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "dqsite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The checkout's templates/ and static/ are the app's own: the wheel
        # carries them inside the dqadmin package, where APP_DIRS and the
        # staticfiles finders look; from a checkout they are found here.
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "dqsite.wsgi.application"

DATABASES = {"default": _database(os.environ.get("DQ_DATABASE_URL"), os.environ.get("DQ_DATABASE_PATH"))}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGIN_URL = "admin:login"
LOGIN_REDIRECT_URL = "dqadmin:overview"

# The queue: see dqadmin/conf.py for every key and its default.
DQ = {
    "LOCATION": os.environ.get("DQ_LOCATION", str(VAR_DIR / "queues")),
    "OPTIONS": json.loads(os.environ.get("DQ_OPTIONS") or "{}"),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s [%(name)s] %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "dq": {"handlers": ["console"], "level": os.environ.get("DQ_LOG_LEVEL", "INFO")},
        "queuecore": {"handlers": ["console"], "level": os.environ.get("DQ_LOG_LEVEL", "INFO")},
    },
}

if not DEBUG:
    SESSION_COOKIE_SECURE = _env_bool("DQ_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = _env_bool("DQ_SECURE_COOKIES", True)
