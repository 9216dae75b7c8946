"""How a refusal (an ApplicationError) reaches the user: as a message on the next page, or as
``{"detail": message}`` with the refusal's status in the API."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from rest_framework.response import Response
from rest_framework.views import exception_handler, set_rollback

from fairskin.errors import ApplicationError


@dataclass
class Attempt:
    """What ``refused_to_messages`` yields: after the block, whether the call was refused."""

    refusal: ApplicationError | None = None

    @property
    def refused(self) -> bool:
        return self.refusal is not None


@contextmanager
def refused_to_messages(
    request: Any, *, prefix: str = "", level: int = messages.ERROR
) -> Iterator[Attempt]:
    """Run the block; a refusal becomes a message (``prefix`` + its text) and the view goes on
    after the block. Anything else propagates."""
    attempt = Attempt()
    try:
        yield attempt
    except ApplicationError as exc:
        attempt.refusal = exc
        messages.add_message(request, level, f"{prefix}{exc}")


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """REST_FRAMEWORK["EXCEPTION_HANDLER"]: refusals answer with their status and message;
    everything else as DRF answers it."""
    if isinstance(exc, ApplicationError):
        set_rollback()  # as DRF does for its own exceptions, should a request be atomic
        return Response({"detail": str(exc)}, status=exc.status)
    return exception_handler(exc, context)
