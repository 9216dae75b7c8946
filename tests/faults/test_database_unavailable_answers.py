"""The answer to a request that fails because the database is unreachable (fast, in-process;
test_database_restart.py shows it against a real PostgreSQL restart)."""

import json

import psycopg
import pytest
from django.db import DatabaseError, InterfaceError, OperationalError
from django.test import RequestFactory

from fairskin_site.middleware import (
    READ_DETAIL,
    WRITE_DETAIL,
    DatabaseUnavailableMiddleware,
)

middleware = DatabaseUnavailableMiddleware(lambda request: None)
requests = RequestFactory()


def pg_error(django_class, psycopg_error):
    """A Django database error as Django raises it: wrapping psycopg's (its __cause__)."""
    error = django_class(str(psycopg_error))
    error.__cause__ = psycopg_error
    return error


def refused(message="connection refused"):
    return pg_error(OperationalError, psycopg.OperationalError(message))  # no SQLSTATE


@pytest.mark.parametrize("error", [refused(), InterfaceError("connection already closed")])
def test_api_write_gets_a_json_503_saying_to_try_again(error):
    request = requests.post(
        "/api/ratings/", {"token": "t", "score": 4}, content_type="application/json"
    )
    response = middleware.process_exception(request, error)
    assert response.status_code == 503 and response["Content-Type"] == "application/json"
    assert json.loads(response.content) == {"detail": WRITE_DETAIL}
    assert response["Retry-After"] == "5" and response["Cache-Control"] == "no-store"


def test_api_read_and_pages_get_their_own_wording():
    starting = pg_error(OperationalError, psycopg.errors.CannotConnectNow("starting up"))
    queue = middleware.process_exception(requests.get("/api/rater/studies/1/queue/"), starting)
    assert json.loads(queue.content) == {"detail": READ_DETAIL}
    page = middleware.process_exception(
        requests.get("/review/studies/1/rate/"), refused("server closed the connection")
    )
    assert page.status_code == 503 and page["Content-Type"].startswith("text/html")
    assert READ_DETAIL in page.content.decode()
    shutdown = pg_error(OperationalError, psycopg.errors.AdminShutdown("terminating"))
    form = middleware.process_exception(requests.post("/review/studies/new/", {}), shutdown)
    assert form.status_code == 503 and WRITE_DETAIL in form.content.decode()


def test_other_errors_are_left_to_django():
    request = requests.get("/api/studies/")
    assert middleware.process_exception(request, ValueError("a bug")) is None
    assert middleware.process_exception(request, DatabaseError("a bad query")) is None


@pytest.mark.parametrize(
    "cause",
    [
        psycopg.errors.DeadlockDetected("deadlock detected"),
        psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
        psycopg.errors.LockNotAvailable("could not obtain lock"),
        psycopg.errors.SerializationFailure("could not serialize access"),
    ],
)
def test_a_failed_statement_is_not_called_an_outage(cause):
    """A deadlock or a timeout is a bug or a load problem to see in the logs, not "the database
    is unavailable": it stays Django's 500."""
    request = requests.post("/api/ratings/", {}, content_type="application/json")
    assert middleware.process_exception(request, pg_error(OperationalError, cause)) is None


def test_sqlite_errors_are_not_called_an_outage():
    import sqlite3

    error = OperationalError("no such table: review_study")
    error.__cause__ = sqlite3.OperationalError("no such table: review_study")
    assert middleware.process_exception(requests.get("/review/"), error) is None
