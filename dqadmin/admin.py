"""The audit log in Django's admin, read only: entries are written by the
dashboard and the commands, never by hand."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from dqadmin.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("at", "user", "source", "action", "topic", "count", "detail")
    list_filter = ("action", "source", "topic")
    search_fields = ("user", "topic", "detail")
    date_hierarchy = "at"
    readonly_fields = ("at", "user", "source", "action", "topic", "count", "message_ids", "detail")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)
