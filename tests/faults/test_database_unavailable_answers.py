"""The answer to a request that fails because the database is unreachable (fast, in-process;
test_database_restart.py shows it against a real PostgreSQL restart)."""

import json

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


@pytest.mark.parametrize("error", [OperationalError("connection refused"),
                                   InterfaceError("connection already closed")])
def test_api_write_gets_a_json_503_saying_to_try_again(error):
    request = requests.post("/api/ratings/", {"token": "t", "score": 4},
                            content_type="application/json")
    response = middleware.process_exception(request, error)
    assert response.status_code == 503 and response["Content-Type"] == "application/json"
    assert json.loads(response.content) == {"detail": WRITE_DETAIL}
    assert response["Retry-After"] == "5" and response["Cache-Control"] == "no-store"


def test_api_read_and_pages_get_their_own_wording():
    queue = middleware.process_exception(requests.get("/api/rater/studies/1/queue/"),
                                         OperationalError("the database system is starting up"))
    assert json.loads(queue.content) == {"detail": READ_DETAIL}
    page = middleware.process_exception(requests.get("/review/studies/1/rate/"),
                                        OperationalError("server closed the connection"))
    assert page.status_code == 503 and page["Content-Type"].startswith("text/html")
    assert READ_DETAIL in page.content.decode()
    form = middleware.process_exception(requests.post("/review/studies/new/", {}),
                                        OperationalError("terminating connection"))
    assert form.status_code == 503 and WRITE_DETAIL in form.content.decode()


def test_other_errors_are_left_to_django():
    request = requests.get("/api/studies/")
    assert middleware.process_exception(request, ValueError("a bug")) is None
    assert middleware.process_exception(request, DatabaseError("a bad query")) is None
