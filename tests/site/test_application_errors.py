"""Refusals share one base, ApplicationError: pages show its message, the API answers
{"detail": message} with its status."""

import pytest
from django.contrib import messages
from django.contrib.messages import get_messages
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.backends.base import SessionBase
from django.test import RequestFactory
from django.urls import reverse
from rest_framework.exceptions import NotFound
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from catalog.importing import CatalogImportError
from common.refusals import api_exception_handler, refused_to_messages
from fairskin.errors import ApplicationError
from generation.services import BatchConfigError
from jobs.broker import BrokerUnavailable
from jobs.lease import InvalidTransition
from jobs.models import JobState
from review.services.errors import InvalidRating, RatingRefused, ReleaseRefused, StudyError
from tests.factories import JobFactory
from training.services import RunConfigError

# Each refusal, the status the API gives it, and the base older callers may still catch.
REFUSALS = [
    (BrokerUnavailable, 503, Exception),
    (InvalidTransition, 409, Exception),
    (BatchConfigError, 400, ValueError),
    (RunConfigError, 400, ValueError),
    (StudyError, 400, ValueError),
    (ReleaseRefused, 400, ValueError),
    (InvalidRating, 400, ValueError),
    (RatingRefused, 403, PermissionError),
    (CatalogImportError, 400, ValueError),
]


@pytest.mark.parametrize(("refusal", "status", "older_base"), REFUSALS)
def test_every_refusal_is_an_application_error_with_its_status(refusal, status, older_base):
    assert issubclass(refusal, ApplicationError)
    assert issubclass(refusal, older_base)
    assert refusal.status == status


@pytest.mark.parametrize(("refusal", "status", "older_base"), REFUSALS)
def test_the_api_answers_a_refusal_with_its_status_and_message(refusal, status, older_base):
    response = api_exception_handler(refusal("batch 7 is already released"), {})
    assert response.status_code == status
    assert response.data == {"detail": "batch 7 is already released"}


def test_other_exceptions_are_answered_as_drf_answers_them():
    response = api_exception_handler(NotFound("no such study"), {})
    assert response.status_code == 404
    assert response.data == {"detail": "no such study"}
    assert api_exception_handler(KeyError("a bug"), {}) is None  # a 500, not a refusal


class _Refusing(APIView):
    authentication_classes = []
    permission_classes = []

    def get(self, request):
        raise InvalidTransition("a succeeded job cannot be cancelled")


def test_the_setting_routes_api_refusals_through_the_handler():
    response = _Refusing.as_view()(APIRequestFactory().get("/"))
    assert response.status_code == 409
    assert response.data == {"detail": "a succeeded job cannot be cancelled"}


@pytest.mark.django_db
def test_a_refused_rating_answers_403_with_its_reason(client, dermatologist):
    client.force_login(dermatologist)
    response = client.post(
        reverse("api:ratings"),
        {"token": "no-such-token", "score": 5, "seconds": 1.0},
        content_type="application/json",
    )
    assert response.status_code == 403
    assert response.json() == {"detail": "this item is not in your assignments"}


def _request():
    request = RequestFactory().post("/")
    request.session = SessionBase()
    request._messages = FallbackStorage(request)
    return request


def _shown(request) -> list[tuple[int, str]]:
    return [(m.level, m.message) for m in get_messages(request)]


def test_the_view_helper_shows_a_refusal_as_an_error_message():
    request = _request()
    with refused_to_messages(request, prefix="Job 3 was not resumed: ") as attempt:
        raise BrokerUnavailable("The task broker is unreachable.")
    assert attempt.refused
    assert isinstance(attempt.refusal, BrokerUnavailable)
    assert _shown(request) == [
        (messages.ERROR, "Job 3 was not resumed: The task broker is unreachable.")
    ]


def test_the_view_helper_leaves_success_alone_and_takes_a_level():
    request = _request()
    with refused_to_messages(request, level=messages.WARNING) as attempt:
        done = True
    assert done and not attempt.refused
    assert _shown(request) == []
    with refused_to_messages(request, level=messages.WARNING):
        raise ReleaseRefused("give a reason for rejecting the batch")
    assert _shown(request) == [(messages.WARNING, "give a reason for rejecting the batch")]


def test_the_view_helper_lets_other_exceptions_through():
    request = _request()
    with pytest.raises(KeyError), refused_to_messages(request):
        raise KeyError("a bug, not a refusal")
    assert _shown(request) == []


@pytest.mark.django_db
def test_a_page_shows_a_refusal_after_the_redirect(client, engineer):
    job = JobFactory(state=JobState.SUCCEEDED)
    client.force_login(engineer)
    response = client.post(reverse("jobs:cancel", args=[job.pk]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("jobs:detail", args=[job.pk])
    assert [m.message for m in response.context["messages"]] == [
        f"Job {job.pk} was not cancelled: a succeeded job cannot be cancelled"
    ]
