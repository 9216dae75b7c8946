"""The home-page list (a panel), mark-read actions and the preferences page."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.roles import Role, user_role
from notifications.models import NotificationKind
from notifications.selectors import (
    notification_kinds_enabled,
    notification_list,
    notification_unread_count,
)
from notifications.services import notification_mark_read, notification_preferences_set

# The kinds each role can receive (and so can turn off).
ROLE_KINDS: dict[Role, tuple[NotificationKind, ...]] = {
    Role.DERMATOLOGIST: (NotificationKind.STUDY_ASSIGNED, NotificationKind.RATING_REMINDER),
    Role.LEAD: (
        NotificationKind.STUDY_RATED,
        NotificationKind.JOB_SUCCEEDED,
        NotificationKind.JOB_FAILED,
    ),
    Role.ENGINEER: (NotificationKind.JOB_SUCCEEDED, NotificationKind.JOB_FAILED),
}


def home_panel_context(request: HttpRequest) -> Mapping[str, Any]:
    return {
        "notifications": notification_list(user=request.user),
        "unread": notification_unread_count(user=request.user),
    }


@login_required
@require_POST
def mark_read(request: HttpRequest, notification_id: int) -> HttpResponse:
    notification_mark_read(user=request.user, notification_id=notification_id)
    return redirect("accounts:home")


@login_required
@require_POST
def mark_all_read(request: HttpRequest) -> HttpResponse:
    notification_mark_read(user=request.user)
    return redirect("accounts:home")


@login_required
def preferences(request: HttpRequest) -> HttpResponse:
    role = user_role(request.user)
    offered = [k.value for k in ROLE_KINDS.get(role, ())] if role else []
    if request.method == "POST":
        enabled = [k for k in request.POST.getlist("enabled") if k in offered]
        notification_preferences_set(user=request.user, offered=offered, enabled=enabled)
        messages.success(request, "Your notification settings are saved.")
        return redirect("notifications:preferences")
    enabled_now = notification_kinds_enabled(user=request.user)
    kinds = [
        {"value": k, "label": NotificationKind(k).label, "enabled": enabled_now[k]} for k in offered
    ]
    return render(request, "notifications/preferences.html", {"kinds": kinds})
