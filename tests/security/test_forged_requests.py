"""Forged, replayed and tampered requests to the review API and the lead's pages.

Every hostile request gets a specific answer and writes nothing, except what the design asks:
a refusal that reaches the rating service (a real token of another rater) is audited
(review/services/rating.py `_audit`: action "refused", the sender, the score and the reason), and a
replay of the same rating is audited as "repeated". An unknown token is refused before any
study is known, so nothing is audited for it. The table below is the corpus; what each case
must look like is asserted by one test.

Covered elsewhere and not repeated here: another rater's token for the *image*
(tests/review/test_blinding_served.py), status codes of every URL per role
(tests/accounts/test_role_matrix.py), out-of-order, locked and closed-study ratings at the
service (tests/review/test_studies.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from django.urls import reverse

from generation.models import Batch
from jobs.models import Job
from review.models import Assignment, BatchRejection, Rating, RatingAudit, Release, Study
from review.services.gate import study_close
from review.services.rating import NOT_YOURS, rater_queue
from tests.factories import make_user
from tests.security.conftest import rate_all, sign_in

pytestmark = pytest.mark.django_db

CSRF_FAILED = "CSRF Failed"
NO_PERMISSION = "You do not have permission to perform this action."
NOT_SIGNED_IN = "Authentication credentials were not provided."


@dataclass(frozen=True)
class Forged:
    """One hostile rating request: who sends it, how the body is changed from a valid rating
    of the sender's current item, and the answer it must get."""

    sender: str  # dermatologist (the seated rater), lead, engineer, anonymous
    status: int
    message: str  # in the response body
    body: dict = field(default_factory=dict)  # overrides of the valid body
    raw: str | None = None  # a body sent as is (not JSON-encoded)
    token: str = "mine"  # mine | other_rater | unknown | tampered | literal (body's)
    csrf: str = "valid"  # valid | missing | wrong
    audit: str = ""  # the audit action the refusal must leave, if any


CORPUS = {
    # Forged: a request that does not come from the rating screen.
    "no CSRF token": Forged("dermatologist", 403, CSRF_FAILED, csrf="missing"),
    "CSRF token of another session": Forged("dermatologist", 403, CSRF_FAILED, csrf="wrong"),
    # Tokens: another rater's answers exactly like one that does not exist.
    "another rater's token": Forged(
        "dermatologist", 403, NOT_YOURS, token="other_rater", audit="refused"
    ),
    "unknown token": Forged("dermatologist", 403, NOT_YOURS, token="unknown"),
    "tampered token (one character changed)": Forged(
        "dermatologist", 403, NOT_YOURS, token="tampered"
    ),
    "token with SQL in it": Forged(
        "dermatologist", 403, NOT_YOURS, token="literal", body={"token": "' OR '1'='1' --"}
    ),
    "token longer than any token": Forged(
        "dermatologist",
        400,
        "no more than 64 characters",
        token="literal",
        body={"token": "A" * 65},
    ),
    "token with a NUL byte": Forged(
        "dermatologist",
        400,
        "Null characters are not allowed",
        token="literal",
        body={"token": "abc\x00def"},
    ),
    "token that is not a string": Forged(
        "dermatologist", 400, "Not a valid string", token="literal", body={"token": {"$ne": ""}}
    ),
    # Scores: whole numbers 1-7, never coerced.
    "score 0": Forged("dermatologist", 400, "greater than or equal to 1", body={"score": 0}),
    "score 8": Forged("dermatologist", 400, "less than or equal to 7", body={"score": 8}),
    "score as a string": Forged(
        "dermatologist", 400, "A valid integer is required", body={"score": "7"}
    ),
    "score null": Forged("dermatologist", 400, "This field may not be null", body={"score": None}),
    "score 6.5": Forged("dermatologist", 400, "A valid integer is required", body={"score": 6.5}),
    "score true": Forged("dermatologist", 400, "A valid integer is required", body={"score": True}),
    "score missing": Forged("dermatologist", 400, "This field is required", body={"score": ...}),
    "negative seconds": Forged(
        "dermatologist", 400, "greater than or equal to 0", body={"seconds": -1}
    ),
    "seconds NaN": Forged(
        "dermatologist",
        400,
        "not JSON compliant",
        raw='{"token": "%s", "score": 5, "seconds": NaN}',
    ),
    "body is a list": Forged(
        "dermatologist",
        400,
        "Expected a dictionary",
        raw='[{"token": "%s", "score": 5, "seconds": 1}]',
    ),
    "body is not JSON": Forged(
        "dermatologist", 400, "JSON parse error", raw='{"token": "%s", "score": 5,'
    ),
    # Roles: only a seated dermatologist rates.
    "lead trying to rate": Forged("lead", 403, NO_PERMISSION),
    "engineer trying to rate": Forged("engineer", 403, NO_PERMISSION),
    "anonymous visitor": Forged("anonymous", 403, NOT_SIGNED_IN),
}


def _counts() -> tuple[int, int]:
    return Rating.objects.count(), RatingAudit.objects.count()


def _token(kind: str, open_review) -> str:
    seated, other = open_review.raters[0], open_review.raters[1]
    study = open_review.open_study
    if kind == "other_rater":
        return rater_queue(study=study, rater=other)["current"].token
    mine = rater_queue(study=study, rater=seated)["current"].token
    if kind == "unknown":
        return "n0-such-t0ken-" + mine[14:]
    if kind == "tampered":
        return mine[:-1] + ("A" if mine[-1] != "A" else "B")
    return mine


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_forged_rating_requests_are_refused_and_write_nothing(name, open_review, sessions):
    case = CORPUS[name]
    session = sessions[case.sender]
    client = session.client(csrf=case.csrf != "missing")
    if case.csrf == "wrong":
        # A well-formed token, taken from another browser's session.
        client.defaults["HTTP_X_CSRFTOKEN"] = sign_in("anonymous").cookies["csrftoken"]
    token = _token(case.token, open_review)
    if case.raw is not None:
        body = case.raw % token
    else:
        data = {"token": token, "score": 5, "seconds": 2.0, **case.body}
        body = json.dumps({k: v for k, v in data.items() if v is not ...})
    before = _counts()
    last_audit = RatingAudit.objects.order_by("-pk").values_list("pk", flat=True).first()

    response = client.post(reverse("api:ratings"), body, content_type="application/json")

    assert response.status_code == case.status, response.content
    assert case.message in response.content.decode(), response.content
    assert Rating.objects.count() == before[0]
    audits = list(RatingAudit.objects.filter(pk__gt=last_audit))
    if case.audit:
        assert [(a.action, a.rater, a.score) for a in audits] == [(case.audit, session.user, 5)]
        assert "another rater" in audits[0].detail
    else:
        assert audits == []


def test_another_raters_token_and_an_unknown_one_get_identical_answers(open_review, sessions):
    client = sessions["dermatologist"].client()
    answers = []
    for kind in ("other_rater", "unknown", "tampered"):
        response = client.post(
            reverse("api:ratings"),
            {"token": _token(kind, open_review), "score": 4, "seconds": 1},
            content_type="application/json",
        )
        answers.append(
            (
                response.status_code,
                response.content,
                sorted((k, v) for k, v in response.items() if k.lower() != "date"),
            )
        )
    assert answers[0] == answers[1] == answers[2]


def test_a_replayed_rating_is_stored_once_and_audited_as_repeated(open_review, sessions):
    client = sessions["dermatologist"].client()
    token = _token("mine", open_review)
    body = json.dumps({"token": token, "score": 6, "seconds": 3.5})
    ratings_before = Rating.objects.count()
    answers = [
        client.post(reverse("api:ratings"), body, content_type="application/json") for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [201, 200, 200]
    assert [a.json()["created"] for a in answers] == [True, False, False]
    assert len({a.json()["done"] for a in answers}) == 1  # the count does not move
    assert Rating.objects.count() == ratings_before + 1
    rating = Rating.objects.get(assignment__token=token)
    assert (rating.score, rating.seconds) == (6, 3.5)
    actions = list(
        RatingAudit.objects.filter(assignment=rating.assignment)
        .order_by("pk")
        .values_list("action", flat=True)
    )
    assert actions == ["created", "repeated", "repeated"]
    # A replay with another score is not a replay: the submitted rating is locked.
    changed = client.post(
        reverse("api:ratings"),
        {"token": token, "score": 2, "seconds": 1},
        content_type="application/json",
    )
    assert changed.status_code == 403 and "locked" in changed.json()["detail"]
    assert Rating.objects.get(pk=rating.pk).score == 6
    refused = RatingAudit.objects.filter(assignment=rating.assignment).latest("pk")
    assert (refused.action, refused.score, refused.previous) == ("refused", 2, 6)


def test_a_form_body_still_rates_with_digits(open_review, sessions):
    """Form bodies carry text, so there "5" is the score 5; anything but ASCII digits is not."""
    client = sessions["dermatologist"].client()
    token = _token("mine", open_review)
    refused = client.post(reverse("api:ratings"), {"token": token, "score": "５", "seconds": "1"})
    assert refused.status_code == 400 and "valid integer" in refused.content.decode()
    accepted = client.post(reverse("api:ratings"), {"token": token, "score": "5", "seconds": "1"})
    assert accepted.status_code == 201 and accepted.json()["score"] == 5


# --- a dermatologist on the lead's pages -------------------------------------------------


def _study_counts():
    return (
        Study.objects.count(),
        Job.objects.count(),
        Release.objects.count(),
        BatchRejection.objects.count(),
        Assignment.objects.count(),
    )


@pytest.mark.parametrize(
    ("url_name", "data"),
    [
        ("review:study_new", "design"),
        ("review:close", {}),
        ("review:approve", {"note": "looks fine"}),
        ("review:reject", {"reason": "I rated it myself"}),
    ],
)
def test_a_dermatologist_posting_to_lead_pages_is_refused_and_changes_nothing(
    open_review, sessions, url_name, data
):
    study = open_review.open_study
    client = sessions["dermatologist"].client()
    if data == "design":
        url = reverse(url_name)
        data = {
            "batch": study.batch_id,
            "raters": [r.pk for r in open_review.raters],
            "sample_size": 4,
            "control_ratio": 0,
            "seed": 3,
        }
    else:
        url = reverse(url_name, args=[study.pk])
    before, state = _study_counts(), study.state
    response = client.post(url, data)
    assert response.status_code == 403
    assert _study_counts() == before
    study.refresh_from_db()
    assert study.state == state
    assert Batch.objects.get(pk=study.batch_id).state == "finished"


# --- hostile path values ------------------------------------------------------------------

HOSTILE_IDS = [
    "0",
    "-1",
    "2147483648",
    "9223372036854775808",
    "1" + "0" * 40,
    "1e3",
    "0x1",
    "%00",
    "%2e%2e",
    "1;DROP TABLE review_study",
    "%F0%9F%92%A5",
]


@pytest.mark.parametrize("role", ["dermatologist", "lead"])
def test_hostile_ids_in_api_paths_are_not_found(sessions, open_review, role):
    client = sessions[role].client()
    for raw in HOSTILE_IDS:
        for template in (
            "/api/studies/{}/",
            "/api/studies/{}/progress/",
            "/api/studies/{}/gate/",
            "/api/releases/{}/",
            "/api/rater/studies/{}/queue/",
        ):
            response = client.get(template.format(raw))
            # Refused by role (403) or not found (404); never a server error, never data.
            assert response.status_code in (403, 404), (template, raw, response.status_code)


# --- a forged lead action (cross-site request without the CSRF token) ----------------------


def _decision_rows():
    return Release.objects.count(), BatchRejection.objects.count()


@pytest.mark.parametrize(
    ("url_name", "data"),
    [
        ("review:close", {}),
        ("review:approve", {"note": "forged"}),
        ("review:reject", {"reason": "forged"}),
    ],
)
def test_a_lead_action_without_the_csrf_token_is_refused(open_review, url_name, data):
    """A page elsewhere that posts to the lead's close/approve/reject with the lead's cookie
    gets 403 and changes nothing; the same post with the token goes through."""
    study = open_review.open_study
    if url_name == "review:approve":
        for rater in open_review.raters:
            rate_all(study, rater, score=7)
        study_close(study=study, user=make_user("lead"))
    lead = sign_in("lead")
    url = reverse(url_name, args=[study.pk])
    before = (Study.objects.get(pk=study.pk).state, _decision_rows())

    forged = lead.client(csrf=False).post(url, data)
    assert forged.status_code == 403 and b"CSRF verification failed" in forged.content
    assert (Study.objects.get(pk=study.pk).state, _decision_rows()) == before

    # The same request from the lead's own page, with the token, is carried out.
    token = lead.cookies["csrftoken"]
    genuine = lead.client().post(url, {**data, "confirm": "yes", "csrfmiddlewaretoken": token})
    assert genuine.status_code == 302
    assert (Study.objects.get(pk=study.pk).state, _decision_rows()) != before


def test_a_study_seated_to_others_answers_like_one_that_does_not_exist(open_review, client):
    """Study ids cannot be counted by probing: the rating page and the queue API give a
    dermatologist the same answer for another panel's study as for no study at all."""
    outsider = make_user("dermatologist", username="derm-outsider")
    client.force_login(outsider)
    study = open_review.open_study
    missing = Study.objects.order_by("-pk").first().pk + 1000
    api = [client.get(reverse("api:queue", args=[pk])) for pk in (study.pk, missing)]
    assert [r.status_code for r in api] == [404, 404]
    assert api[0].json() == api[1].json() == {"detail": "no such study among your assignments"}
    pages = [client.get(reverse("review:rate", args=[pk])) for pk in (study.pk, missing)]
    assert [r.status_code for r in pages] == [404, 404]
    assert pages[0].content == pages[1].content
    seated = open_review.raters[0]
    client.force_login(seated)
    assert client.get(reverse("api:queue", args=[study.pk])).status_code == 200
