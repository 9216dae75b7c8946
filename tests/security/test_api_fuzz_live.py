"""Schemathesis over HTTP against a live server with a real Celery worker, as a lead's and an
engineer's API token: the operations that queue work (dataset preprocessing, imports, resumes)
are run by the worker while the fuzzing goes on, and every job it was given ends, a failure
with its reason.

The in-process run (test_api_fuzz.py) covers every browser role in depth; this one is its
end-to-end counterpart with a smaller budget: LIVE_EXAMPLES (5) examples per operation and
mode for each token, valid requests on real rows only (28 s of fuzzing, 42 s in all with the
worker's start on a shared 2-core machine), then at most JOBS_SETTLE_S (120 s) for the worker
to finish what was queued.
"""

from __future__ import annotations

import time

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from accounts.models import ApiTokenUse
from accounts.tokens import token_create
from jobs.models import Job, JobState
from tests.factories import make_user
from tests.security.conftest import Session
from tests.security.test_api_fuzz import (
    ALLOWED,
    CHECKS,
    UNSAFE,
    _real_values,
    _route,
    _strategy,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LIVE_EXAMPLES = 5
JOBS_SETTLE_S = 120
TERMINAL = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


def _fuzz_over_http(schema, base: str, session: Session, real: dict) -> dict[str, set[int]]:
    seen: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [GenerationMode.POSITIVE]
        if operation.path_parameters or operation.body or operation.query:
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            _fuzz_operation(
                operation, mode, base, session, real, seen.setdefault(operation.label, set())
            )
    return seen


def _fuzz_operation(operation, mode, base: str, session: Session, real: dict, seen: set) -> None:
    @settings(
        max_examples=LIVE_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_strategy(operation, mode, real, {}, real_only=True))
    def run(case):
        response = case.call(base_url=base, headers=session.auth_headers, timeout=60)
        seen.add(response.status_code)
        if _route(response.request.url) is None:
            # A path value no API route takes (a float where the URL takes an int): Django's
            # own 404 page, before any view.
            assert response.status_code == 404, response.text[:300]
            return
        case.validate_response(response, checks=CHECKS, headers=session.auth_headers)
        if session.role not in ALLOWED[operation.label]:
            assert response.status_code in (401, 403, 404), (
                operation.label,
                response.status_code,
                response.text[:300],
            )
        if operation.method.upper() in UNSAFE:
            assert "CSRF" not in response.text, response.text

    run()


def test_tokens_over_http_with_a_real_worker(live_server, start_worker, review_data):
    worker = start_worker(queues="gpu,cpu")
    first_job = Job.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    sessions = []
    for role in ("engineer", "lead"):
        user = make_user(role)
        _, text = token_create(user=user, name=f"live fuzzing {role}", expires_in_days=7)
        sessions.append(Session(role=role, user=user, token=text))
    answer = requests.get(
        f"{live_server.url}/api/schema/?format=json", headers=sessions[0].auth_headers, timeout=60
    )
    assert answer.status_code == 200
    schema = schemathesis.openapi.from_dict(answer.json())
    real = _real_values(review_data)
    start = time.monotonic()
    for session in sessions:
        seen = _fuzz_over_http(schema, live_server.url, session, real)
        assert set(seen) == set(ALLOWED)
        print(f"\n{session.role} token: {seen}")
        if session.role == "engineer":
            assert 202 in seen["POST /api/datasets/{name}/preprocess/"]
    print(f"fuzzing took {time.monotonic() - start:.0f} s")
    for session in sessions:
        uses = ApiTokenUse.objects.filter(token__user=session.user)
        assert uses.count() > 50
    queued = Job.objects.filter(pk__gt=first_job)
    assert queued.exists()  # the worker was given work
    deadline = time.monotonic() + JOBS_SETTLE_S
    while queued.exclude(state__in=TERMINAL).exists() and time.monotonic() < deadline:
        time.sleep(1)
    unfinished = list(queued.exclude(state__in=TERMINAL).values_list("pk", "kind", "state"))
    assert not unfinished, (unfinished, worker.output()[-3000:])
    assert queued.filter(state=JobState.SUCCEEDED).exists(), worker.output()[-3000:]
    for kind, error in queued.filter(state=JobState.FAILED).values_list("kind", "error"):
        assert error.strip(), f"a {kind} job failed without saying why"
