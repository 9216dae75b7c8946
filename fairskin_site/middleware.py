"""A database outage answers 503 with a plain reason, not a bare "Server Error (500)".

While PostgreSQL restarts, every request that needs it fails with OperationalError or
InterfaceError. Without this the API answered an HTML 500 page, which the rating screen could
not read. Django reconnects by itself once the database is back (CONN_HEALTH_CHECKS), so the
answer says to try again; nothing here retries or hides the failure.
"""

from __future__ import annotations

import logging

import psycopg
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
READ_DETAIL = "The database is unavailable. Try again in a moment."
# "May": a write can commit just before the connection drops and a later query of the same
# request fails. Sending a rating again is harmless (it is answered as a repeat).
WRITE_DETAIL = (
    "The database is unavailable, so what you sent may not have been saved. Try again in a moment."
)
PAGE = (
    '<!doctype html><html lang="en"><meta charset="utf-8">'
    "<title>Service unavailable</title><h1>Service unavailable</h1><p>{}</p></html>"
)


# SQLSTATEs of a connection that is gone or refused: class 08 (connection exception) and the
# server shutting down or starting up (57P01-57P03).
OUTAGE_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def is_outage(exception: BaseException) -> bool:
    """Whether a database error means the server cannot be reached (try again later), as
    opposed to a failed statement (a deadlock, a timeout, a bug), which stays a logged 500."""
    if isinstance(exception, InterfaceError):
        return True  # the connection is closed or broken
    if not isinstance(exception, OperationalError):
        return False
    cause = exception.__cause__
    if not isinstance(cause, psycopg.Error):
        return False  # not PostgreSQL (SQLite in development): a real error, shown as such
    # A connection that failed before the server said anything has no SQLSTATE.
    return cause.sqlstate is None or cause.sqlstate.startswith(OUTAGE_SQLSTATES)


def _wants_json(request) -> bool:
    return (
        request.path_info.startswith("/api/")
        or request.content_type == "application/json"
        or "application/json" in request.headers.get("Accept", "")
    )


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not is_outage(exception):
            return None
        logger.warning("database unavailable (%s %s): %s", request.method, request.path, exception)
        safe = request.method in ("GET", "HEAD", "OPTIONS")
        detail = READ_DETAIL if safe else WRITE_DETAIL
        response: HttpResponse
        if _wants_json(request):
            response = JsonResponse({"detail": detail}, status=503)
        else:
            # No template: rendering one runs context processors, which need the database.
            response = HttpResponse(PAGE.format(detail), status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        response["Cache-Control"] = "no-store"
        return response
