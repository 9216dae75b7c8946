"""What every app's API shares: the documented error answers, a permission by name, and
validating a request with the page's own form (so both refuse the same input the same way)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse
from rest_framework import permissions, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import DefaultContentNegotiation


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


# Documented so that clients (and the schema fuzzing in tests/security) know every answer.
REFUSED = OpenApiResponse(
    ErrorSerializer,
    description="Not signed in, not allowed for this "
    "role or seat, or the CSRF token is missing or wrong.",
)
UNAUTHENTICATED = OpenApiResponse(
    ErrorSerializer, description="The API token is invalid, expired or revoked (the reason)."
)
NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No such object.")
UNSUPPORTED = OpenApiResponse(
    ErrorSerializer, description="The body is not JSON, a form or multipart form data."
)
INVALID = OpenApiResponse(
    {
        "type": "object",
        "additionalProperties": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}},
                # a list's or a mapping's items by index or key: {"0": ["…"]}
                {"type": "object"},
            ]
        },
    },
    description="The request data is invalid, or the action is refused in the object's "
    "current state: messages by field name (or 'detail'); a list's or mapping's by item.",
)
CONFLICT = OpenApiResponse(
    ErrorSerializer, description="The job's state does not allow it (resume a queued job)."
)
UNAVAILABLE = OpenApiResponse(
    ErrorSerializer, description="The job queue (broker) is unreachable: nothing was queued."
)


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """The documented error answers of an operation, by status code."""
    table = {
        400: INVALID,
        401: UNAUTHENTICATED,
        403: REFUSED,
        404: NOT_FOUND,
        409: CONFLICT,
        415: UNSUPPORTED,
        503: UNAVAILABLE,
    }
    # An operation that validates what it is sent (400) also refuses a body it cannot parse
    # (a malformed multipart body reaches DRF's parser as an unsupported media type: 415).
    wanted = set(codes) | ({415} if 400 in codes else set())
    return {401: UNAUTHENTICATED, **{code: table[code] for code in sorted(wanted)}}


def has_perm(name: str) -> type[permissions.BasePermission]:
    """A permission class requiring the Django permission ``name`` (a role's right)."""

    class HasPerm(permissions.BasePermission):
        perm = name

        def has_permission(self, request: Any, view: Any) -> bool:
            return bool(request.user and request.user.has_perm(self.perm))

    HasPerm.__name__ = f"Has_{name.replace('.', '_')}"
    return HasPerm


class ActionPermissions:
    """Mixed into a viewset before DRF's class: ``action_perms`` names the permission an
    action needs on top of the viewset's ``permission_classes`` (reading, say, needs the view
    permission; launching also the launch permission)."""

    action_perms: dict[str, str] = {}

    def get_permissions(self) -> list[Any]:
        perm = self.action_perms.get(getattr(self, "action", None) or "")
        extra = [has_perm(perm)()] if perm else []
        return [*super().get_permissions(), *extra]  # type: ignore[misc]


def form_validated(form: Any) -> dict[str, Any]:
    """The form's cleaned data, or a 400 with its messages by field (``detail`` for the
    messages about the whole form)."""
    if form.is_valid():
        return dict(form.cleaned_data)
    messages: dict[str, list[str]] = {}
    for field, errs in form.errors.items():
        messages["detail" if field == "__all__" else field] = [str(e) for e in errs]
    raise ValidationError(messages)


class FormatIsAFileFormat(DefaultContentNegotiation):
    """For an operation whose ``?format=`` names the file it answers (csv, json) rather than
    a DRF renderer: the view writes its own response, so the first renderer stands."""

    def select_renderer(self, request: Any, renderers: Any, format_suffix: Any = None) -> Any:
        return renderers[0], renderers[0].media_type
