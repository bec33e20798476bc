"""Tiny settings for the test run: the bundled project with a throwaway
database and queue directory."""

import tempfile

from dqsite.settings import *  # noqa: F403

_TMP = tempfile.mkdtemp(prefix="dq-tests-")
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": f"{_TMP}/db.sqlite3"}}
DQ = {"LOCATION": f"{_TMP}/queues", "OPTIONS": {"fsync_put": False}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SECRET_KEY = "tests-only-key"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
if HAS_TASKS:  # noqa: F405
    # The tasks tests' queues (tests/tasks/tasks.py declares tasks on both).
    TASKS = {
        "default": {
            "BACKEND": "dqadmin.tasks.DQBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {},
        }
    }
