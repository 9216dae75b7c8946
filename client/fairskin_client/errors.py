"""The API's refusals as exceptions, each carrying the server's message."""

from __future__ import annotations

from typing import Any


class FairSkinError(Exception):
    """Any refusal; ``status`` is the HTTP status, ``detail`` the server's answer."""

    def __init__(self, status: int, detail: Any) -> None:
        self.status = status
        self.detail = detail
        super().__init__(_message(detail))


class AuthenticationError(FairSkinError):
    """401: the token is invalid, expired or revoked (the message says which)."""


class PermissionDenied(FairSkinError):
    """403: the token's role may not do this."""


class NotFound(FairSkinError):
    """404: no such object."""


class ValidationError(FairSkinError):
    """400: the data is invalid, or the object's state refuses the action; ``detail`` holds
    the messages by field."""


class Conflict(FairSkinError):
    """409: the job's state does not allow it (resume a queued job)."""


class ServiceUnavailable(FairSkinError):
    """503: the job queue is unreachable; nothing was queued."""


class JobFailed(FairSkinError):
    """A job waited for ended failed or cancelled."""


def _message(detail: Any) -> str:
    if isinstance(detail, dict):
        if set(detail) == {"detail"}:
            return str(detail["detail"])
        return "; ".join(f"{k}: {_message(v)}" for k, v in detail.items())
    if isinstance(detail, list):
        return " ".join(_message(v) for v in detail)
    return str(detail)


BY_STATUS: dict[int, type[FairSkinError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    503: ServiceUnavailable,
}
