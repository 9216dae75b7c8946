"""Shared fixtures of the security tests: real review data (an open study with assignments, a
closed study whose gate was judged, releases) and signed-in sessions for every role, carrying
their CSRF token the way the browser does (cookie + X-CSRFToken header)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from django.test import Client
from django.urls import reverse

from fairskin.review.gate import GateCriteria
from review.models import Assignment, Release, Study, StudyState
from review.services.gate import study_close
from review.services.rating import rater_queue, rating_submit
from review.services.release import release_approve
from tests.factories import BatchFactory, make_user
from tests.review.conftest import batch, open_study, raters  # noqa: F401  (fixtures)

ROLES = ("anonymous", "dermatologist", "lead", "engineer")


@dataclass
class Session:
    """What a browser of one role sends: its cookies and the CSRF header for unsafe methods."""

    role: str
    user: object | None
    cookies: dict[str, str] = field(default_factory=dict)
    token: str = ""  # a personal API token instead of a browser session (issue 22)

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def csrf_headers(self) -> dict[str, str]:
        token = self.cookies.get("csrftoken")
        return {"X-CSRFToken": token} if token else {}

    def client(self, *, csrf: bool = True) -> Client:
        """A Django test client holding this session; with csrf=True it enforces CSRF checks
        like a real server (the test client skips them unless asked)."""
        client = Client(enforce_csrf_checks=True)
        for name, value in self.cookies.items():
            client.cookies[name] = value
        if csrf and self.csrf_headers:
            client.defaults["HTTP_X_CSRFTOKEN"] = self.csrf_headers["X-CSRFToken"]
        return client


def sign_in(role: str, user=None) -> Session:
    """A session as the browser has it after signing in and loading a page."""
    client = Client()
    if role != "anonymous":
        user = user or make_user(role)
        client.force_login(user)
    # Every page renders {% csrf_token %} (the sign-out form), which sets the CSRF cookie.
    page = reverse("accounts:home") if user else reverse("accounts:login")
    assert client.get(page).status_code == 200
    cookies = {name: morsel.value for name, morsel in client.cookies.items()}
    assert "csrftoken" in cookies
    return Session(role=role, user=user, cookies=cookies)


@dataclass
class ReviewData:
    open_study: Study
    raters: list
    rated: Assignment  # the seated rater's first item, already rated 5
    closed_study: Study | None = None
    releases: list[Release] = field(default_factory=list)


def rate_all(study, rater, score):
    while (current := rater_queue(study=study, rater=rater)["current"]) is not None:
        rating_submit(token=current.token, rater=rater, score=score, seconds=2.0)


@pytest.fixture
def open_review(batch, raters) -> ReviewData:  # noqa: F811
    """An open study of three dermatologists; the first has rated their first item (5)."""
    study = open_study(batch, raters)
    first = rater_queue(study=study, rater=raters[0])["current"]
    rating_submit(token=first.token, rater=raters[0], score=5, seconds=1.5)
    return ReviewData(open_study=study, raters=raters, rated=first)


@pytest.fixture
def review_data(open_review, batch) -> ReviewData:  # noqa: F811
    """The open study, plus a second study on the same batch rated, closed with a passed gate
    and approved (a release with an export job), and another batch's release whose export job
    is gone."""
    judged = open_study(batch, open_review.raters, seed=11)
    for rater in open_review.raters:
        rate_all(judged, rater, score=7)
    lead = make_user("lead", username="gatekeeper")
    study_close(study=judged, user=lead)
    judged.refresh_from_db()
    assert judged.gate["gate"]["passed"] is True
    release = release_approve(study=judged, user=lead, note="fuzzed", enqueue=False)
    # Another batch's release whose export job was deleted (export_job set to NULL).
    other = Study.objects.create(
        batch=BatchFactory(state="finished"),
        seed=1,
        state=StudyState.CLOSED,
        instructions="Rate each image.",
        criteria=GateCriteria().to_dict(),
    )
    bare = Release.objects.create(
        study=other,
        batch=other.batch,
        approved_by=lead,
        manifest={"images": []},
        manifest_sha256="0" * 64,
        gate={},
        criteria_version=1,
        image_count=0,
    )
    open_review.closed_study, open_review.releases = judged, [release, bare]
    return open_review


@pytest.fixture
def sessions(open_review) -> dict[str, Session]:
    """One signed-in session per role; the dermatologist is the open study's first rater."""
    return {
        "anonymous": sign_in("anonymous"),
        "dermatologist": sign_in("dermatologist", open_review.raters[0]),
        "lead": sign_in("lead"),
        "engineer": sign_in("engineer"),
    }
