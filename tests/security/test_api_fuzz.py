"""Schemathesis against the served OpenAPI schema, as every role, on real review data.

Every operation of `/api/schema/` is called with generated requests, valid (positive) and
invalid (negative), as an anonymous visitor, a dermatologist seated in the open study, a lead
and an engineer with their browser sessions, and a lead and an engineer with personal API
tokens (issue 22). Path ids and rating tokens are drawn partly from the real rows (studies,
releases, batches, runs, jobs, datasets, assignments of this rater and of the others), so the
requests reach real objects and not only 404s; valid launches are queued on the real broker.
Each response must be no server error, have a status code, content type and body that the
schema documents, reject invalid data with a 4xx, and follow the role rules.

CI runs FUZZ_EXAMPLES (12) examples per operation, role and mode for the four sessions, and
TOKEN_EXAMPLES (5) for the two API-token holders (answered as their role's session is), with a
fixed seed: about 100 s on a shared 2-core machine (the time budget). A longer,
randomised run: `FAIRSKIN_FUZZ_EXAMPLES=1000 pytest tests/security/test_api_fuzz.py` (see
docs/security.md).
"""

from __future__ import annotations

import os
import traceback
from urllib.parse import unquote, urlsplit

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import got_request_exception, request_finished, request_started
from django.db import close_old_connections
from django.urls import Resolver404, resolve
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.models import ApiTokenUse
from accounts.tokens import token_create
from catalog.models import Dataset
from generation.models import Batch
from jobs.models import Job
from review.models import Assignment, Rating, RatingAudit
from tests.factories import make_user
from tests.security.conftest import ROLES, Session
from training.models import Run

pytestmark = pytest.mark.django_db

LONG_RUN = os.environ.get("FAIRSKIN_FUZZ_EXAMPLES")
FUZZ_EXAMPLES = int(LONG_RUN or 12)
# A token holder is answered as the same role's session is (fuzzed with FUZZ_EXAMPLES): fewer
# examples show the token path gives the same answers and logs every use.
TOKEN_EXAMPLES = int(LONG_RUN or 5)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
# Which real rows a path's first parameter is drawn from, by its first segment after /api/.
REAL_KIND = {
    "releases": "release",
    "studies": "study",
    "batches": "batch",
    "runs": "run",
    "jobs": "job",
    "datasets": "dataset",
}

# Which roles an operation answers with a 2xx at all (the role matrix in tests/accounts has
# the same table for the URL names; this one is keyed by the schema's operations, so an
# operation added to the API without being classified here fails the test below).
ALLOWED = {
    "GET /api/studies/": {"lead", "engineer"},
    "GET /api/studies/{id}/": {"lead", "engineer"},
    "GET /api/studies/{id}/progress/": {"lead", "engineer"},
    "GET /api/studies/{id}/gate/": {"lead", "engineer"},
    "GET /api/releases/": {"lead", "engineer"},
    "GET /api/releases/{id}/": {"lead", "engineer"},
    "GET /api/rater/studies/{study_id}/queue/": {"dermatologist"},
    "POST /api/ratings/": {"dermatologist"},
    # Issue 22: the engineers' and leads' operations (the pages' rights).
    "POST /api/studies/": {"lead"},
    "POST /api/studies/{id}/close/": {"lead"},
    "POST /api/studies/{id}/approve/": {"lead"},
    "POST /api/studies/{id}/reject/": {"lead"},
    "GET /api/releases/{id}/download/": {"lead", "engineer"},
    "GET /api/datasets/": {"lead", "engineer"},
    "GET /api/datasets/{name}/": {"lead", "engineer"},
    "POST /api/datasets/": {"engineer"},
    "POST /api/datasets/{name}/preprocess/": {"engineer"},
    "POST /api/datasets/{name}/split/": {"engineer"},
    "GET /api/runs/": {"lead", "engineer"},
    "GET /api/runs/{id}/": {"lead", "engineer"},
    "POST /api/runs/": {"engineer"},
    "POST /api/runs/{id}/cancel/": {"engineer"},
    "POST /api/runs/{id}/resume/": {"engineer"},
    "GET /api/runs/{id}/artifact/": {"lead", "engineer"},
    "GET /api/batches/": {"lead", "engineer"},
    "GET /api/batches/{id}/": {"lead", "engineer"},
    "POST /api/batches/": {"engineer"},
    "POST /api/batches/{id}/cancel/": {"engineer"},
    "POST /api/batches/{id}/resume/": {"engineer"},
    "GET /api/batches/{id}/samples/": {"lead", "engineer"},
    "GET /api/batches/{id}/export/": {"lead", "engineer"},
    "GET /api/jobs/": {"lead", "engineer"},
    "GET /api/jobs/{id}/": {"lead", "engineer"},
    "POST /api/jobs/{id}/cancel/": {"engineer"},
    "POST /api/jobs/{id}/resume/": {"engineer"},
    "GET /api/fairness/": {"lead", "engineer"},
}


class TestWSGIApp:
    """Django's WSGI application, as a server runs it, inside the test's transaction.

    Like Django's own test client, it keeps `close_old_connections` from closing the test's
    connection at the start and end of each request; unlike it, an exception in a view is not
    raised into the test but answered with the 500 page a real server sends. The exception is
    kept so a failure can show its traceback."""

    __test__ = False  # not a test class

    def __init__(self) -> None:
        self.handler = WSGIHandler()
        self.errors: list[str] = []
        got_request_exception.connect(self._record, weak=False)

    def _record(self, sender, request=None, **kwargs) -> None:
        self.errors.append(
            f"{request.method if request else ''} "
            f"{request.get_full_path() if request else ''}\n" + traceback.format_exc()
        )

    def close(self) -> None:
        got_request_exception.disconnect(self._record)

    def __call__(self, environ, start_response):
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            response = self.handler(environ, start_response)
            body = b"".join(response)
            response.close()
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)
        return [body]


@pytest.fixture
def app():
    wsgi = TestWSGIApp()
    yield wsgi
    wsgi.close()


@pytest.fixture
def api_schema(app, sessions):
    """The schema as the API serves it (to a signed-in user; it is not public)."""
    response = sessions["lead"].client().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = schemathesis.openapi.from_dict(response.json())
    schema.app = app
    return schema


def operations(schema) -> dict:
    return {result.ok().label: result.ok() for result in schema.get_all_operations()}


def test_every_api_operation_is_classified(api_schema):
    assert set(operations(api_schema)) == set(ALLOWED)


def _route(url: str):
    try:
        return resolve(unquote(urlsplit(url).path))
    except Resolver404:
        return None


def _real_values(review_data) -> dict[str, list]:
    studies = [review_data.open_study.pk, review_data.closed_study.pk]
    tokens = list(Assignment.objects.filter(study__in=studies).values_list("token", flat=True))
    unseated = review_data.releases[1].study_id  # a study nobody is seated in
    seated, still_open = review_data.raters[0], review_data.open_study

    def current_token() -> str:
        current = (
            Assignment.objects.filter(study=still_open, rater=seated, rating__isnull=True)
            .order_by("position")
            .first()
        )
        return current.token if current else review_data.rated.token

    return {
        "current_token": current_token,
        "study": [*studies, unseated],
        "batch": list(Batch.objects.values_list("pk", flat=True)),
        "run": list(Run.objects.values_list("pk", flat=True)),
        "job": list(Job.objects.values_list("pk", flat=True)),
        "dataset": list(Dataset.objects.values_list("name", flat=True)),
        "release": [r.pk for r in review_data.releases],
        # Tokens of the seated rater and of the two others, in the open and the closed study.
        "token": tokens,
    }


def _strategy(
    operation, mode: GenerationMode, real: dict[str, list], cookies: dict, *, real_only=False
):
    """Cases generated from the schema alone, and the same with real ids and tokens. The
    session's cookies are fixed: the schema names `sessionid` as the API key, and a request
    is not invalid because of the (authentic) cookie it carries."""
    generated = operation.as_strategy(generation_mode=mode, cookies=cookies)
    params = [p.name for p in operation.path_parameters]
    real_path = bool(params) and mode == GenerationMode.POSITIVE
    # real_only: valid requests on real rows only (a short run would rarely draw them).
    variants = [] if real_only and real_path else [generated]
    if real_path:
        kind = REAL_KIND.get(operation.path.split("/")[2], "study")
        variants.append(
            st.sampled_from(real[kind]).flatmap(
                lambda pk: operation.as_strategy(
                    generation_mode=mode, cookies=cookies, path_parameters={params[0]: pk}
                )
            )
        )
    if operation.body and mode == GenerationMode.POSITIVE:
        # (Negative cases keep their generated token: replacing it could make the negated
        # part valid again behind schemathesis' back.)
        def with_real_token(pair):
            case, token = pair
            if isinstance(case.body, dict) and "token" in case.body:
                case.body["token"] = token
            return case

        # Any real token (this rater's, the others', of the closed study), and the token of
        # the seated rater's current item, looked up when drawn, so valid ratings get written.
        for tokens in (st.sampled_from(real["token"]), st.builds(real["current_token"])):
            variants.append(st.tuples(generated, tokens).map(with_real_token))
    return st.one_of(variants)


def _fuzz(operation, session, app, real, mode, *, csrf: bool, seen: list, examples: int):
    headers = {**session.auth_headers, **(session.csrf_headers if csrf else {})}

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=not LONG_RUN,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_strategy(operation, mode, real, session.cookies))
    def run(case):
        response = case.call(app=app, cookies=session.cookies, headers=headers)
        seen.append(response.status_code)
        route = _route(response.request.url)
        if route is None:
            # A negative path value no API route accepts (a float where the URL takes an int):
            # Django's own 404 page, before any view or role check.
            assert response.status_code == 404, response.text[:300]
            return
        case.validate_response(response, checks=CHECKS, headers=headers)
        allowed = session.role in ALLOWED[operation.label]
        if not allowed:
            # Refused whatever the data: authentication or permission comes before parsing.
            # Only an unknown format suffix (/api/releases/1.x/) is a 404 first, for anyone.
            # A body that cannot be read at all is a 400 (or 415) for anyone signed in: DRF
            # parses it while checking the CSRF token, before the permission check; the
            # answer says nothing about the data.
            refusals = [403]
            if "Authorization" in response.request.headers:
                # The schema names the API token too: a made-up one is a 401 with the reason
                # (a signed-in browser's session is tried first and answers as above).
                refusals.append(401)
            if "format" in route.kwargs:
                refusals.append(404)
            if session.user is not None and (
                "parse error" in response.text or "Unsupported media type" in response.text
            ):
                refusals += [400, 415]
            assert response.status_code in refusals, (
                operation.label,
                session.role,
                response.status_code,
                response.text[:300],
            )
        if operation.method.upper() in UNSAFE and not csrf and session.user is not None:
            if session.token:  # a token is not a cookie a forged page could send along
                assert "CSRF" not in response.text, response.text
            else:
                assert response.status_code == 403 and "CSRF" in response.text, response.text

    run()


@pytest.mark.parametrize("role", ROLES)
def test_api_answers_every_role_within_the_schema(api_schema, app, sessions, review_data, role):
    _fuzz_every_operation(api_schema, app, sessions[role], review_data, FUZZ_EXAMPLES)


@pytest.mark.parametrize("role", ["lead", "engineer"])
def test_api_answers_token_holders_within_the_schema(api_schema, app, review_data, role):
    """The same with a personal API token instead of the session: the same answers, no CSRF
    token needed, every request logged with the token's name."""
    user = make_user(role)
    _, text = token_create(user=user, name=f"fuzzing {role}", expires_in_days=7)
    session = Session(role=role, user=user, token=text)
    _fuzz_every_operation(api_schema, app, session, review_data, TOKEN_EXAMPLES)
    uses = ApiTokenUse.objects.filter(token__user=user)
    assert uses.count() > 100
    assert set(uses.values_list("token_name", flat=True)) == {f"fuzzing {role}"}


def _fuzz_every_operation(api_schema, app, session, review_data, examples: int) -> None:
    role = session.role
    real = _real_values(review_data)
    report, requests = {}, {}
    for label, operation in sorted(operations(api_schema).items()):
        seen: list[int] = []
        modes = [GenerationMode.POSITIVE]
        if operation.path_parameters or operation.body or operation.query:
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            _fuzz(operation, session, app, real, mode, csrf=True, seen=seen, examples=examples)
        if operation.method.upper() in UNSAFE:
            # The same requests without the CSRF header: refused before anything is read.
            _fuzz(
                operation,
                session,
                app,
                real,
                GenerationMode.POSITIVE,
                csrf=False,
                seen=seen,
                examples=examples,
            )
        report[label] = sorted(set(seen))
        requests[label] = len(seen)
        assert not app.errors, "\n".join(app.errors)
    print(f"\n{role}: {sum(requests.values())} requests; status codes per operation: {report}")
    if role in ("lead", "engineer"):
        assert 200 in report["GET /api/studies/{id}/"]
        assert 200 in report["GET /api/releases/{id}/"]
        assert 200 in report["GET /api/studies/{id}/gate/"]
    if role == "dermatologist":
        # Another panel's study answers like a missing one (404), never 403.
        assert {200, 404} <= set(report["GET /api/rater/studies/{study_id}/queue/"])
        assert {201, 400, 403} <= set(report["POST /api/ratings/"])


def test_fuzzing_writes_ratings_only_for_the_seated_rater(api_schema, app, sessions, review_data):
    """After the dermatologist's fuzzing every rating is theirs, in their open study, and
    every other attempt that reached the service is audited as a refusal or a repeat."""
    last_rating = Rating.objects.order_by("-pk").values_list("pk", flat=True).first()
    last_audit = RatingAudit.objects.order_by("-pk").values_list("pk", flat=True).first()
    operation = operations(api_schema)["POST /api/ratings/"]
    real = _real_values(review_data)
    for role in ROLES:
        _fuzz(
            operation,
            sessions[role],
            app,
            real,
            GenerationMode.POSITIVE,
            csrf=True,
            seen=[],
            examples=FUZZ_EXAMPLES,
        )
    seated = review_data.raters[0]
    new = Rating.objects.filter(pk__gt=last_rating)
    assert new.exists()  # the fuzzing did reach the service with valid ratings
    assert set(new.values_list("rater", flat=True)) == {seated.pk}
    assert set(new.values_list("study", flat=True)) == {review_data.open_study.pk}
    audits = RatingAudit.objects.filter(pk__gt=last_audit)
    # Only the seated rater reached the service; what others sent was turned away before it.
    assert set(audits.values_list("rater", flat=True)) == {seated.pk}
    assert audits.filter(action="created").count() == new.count()
