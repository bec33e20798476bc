"""Create the local admin account once, with a generated password printed
once and kept in var/admin-password.txt (readable by the owner only)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create a local staff account 'admin' with a generated password (once)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default="admin")

    def handle(self, *args: Any, **options: Any) -> None:
        username = options["username"]
        var = Path(getattr(settings, "VAR_DIR", "var"))
        var.mkdir(parents=True, exist_ok=True)
        secret_file = var / "admin-password.txt"
        User = get_user_model()
        if User.objects.filter(username=username).exists():
            where = f" (its password is in {secret_file})" if secret_file.exists() else ""
            self.stdout.write(f"Admin account '{username}' exists{where}.")
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        # Written before it is shown, owner-readable only: the password is
        # printed this once and kept nowhere else.
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{username}\n{password}\n")
        self.stdout.write(self.style.SUCCESS(f"Created admin account '{username}' with password: {password}"))
        self.stdout.write(f"(kept in {secret_file})")
