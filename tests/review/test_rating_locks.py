"""Row locks around rating writes, on PostgreSQL with real concurrent transactions: raters of
one study do not queue behind each other, and closing a study waits for ratings in flight while
ratings that arrive during the close are refused, never stored after the gate was computed."""

import threading

import pytest
from django.db import connection, connections

from review.models import Rating, RatingAudit, StudyState
from review.services import gate as gate_services
from review.services import rating as rating_services
from tests.review.conftest import open_study

# Serialized rollback: a plain flush would re-create content types that the worker tests
# (which restore serialized data) then collide with.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")


class InThread(threading.Thread):
    """Runs one call on its own database connection; keeps its result or its exception."""

    def __init__(self, call):
        super().__init__(daemon=True)
        self.call, self.result, self.error = call, None, None
        self.start()

    def run(self):
        try:
            self.result = self.call()
        except Exception as exc:
            self.error = exc
        finally:
            connections.close_all()


def _current_token(study, rater) -> str:
    return rating_services.rater_queue(study=study, rater=rater)["current"].token


def test_a_rating_in_flight_does_not_hold_up_another_raters_rating(batch, raters, monkeypatch):
    study = open_study(batch, raters)
    slow, other = raters[0], raters[1]
    inside, release = threading.Event(), threading.Event()
    audit = rating_services._audit

    def audit_then_hold(study_id, rater, assignment, action, **kwargs):
        audit(study_id, rater, assignment, action, **kwargs)
        if rater.pk == slow.pk and action == "created":
            inside.set()  # the slow rater's transaction is open, its rating written
            release.wait(30)

    monkeypatch.setattr(rating_services, "_audit", audit_then_hold)
    held = InThread(
        lambda: rating_services.rating_submit(
            token=_current_token(study, slow), rater=slow, score=4, seconds=2
        )
    )
    try:
        assert inside.wait(10)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '3s'")  # a wait on the other's lock fails
        rating, created = rating_services.rating_submit(
            token=_current_token(study, other), rater=other, score=6, seconds=2
        )
        assert created and held.is_alive()
    finally:
        release.set()
        held.join(10)
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
    assert held.error is None and held.result[1] is True
    assert sorted(Rating.objects.values_list("score", flat=True)) == [4, 6]


def test_closing_waits_for_a_rating_in_flight_and_includes_it(batch, raters, lead, monkeypatch):
    study = open_study(batch, raters)
    rater = raters[0]
    inside, release = threading.Event(), threading.Event()
    audit = rating_services._audit

    def audit_then_hold(study_id, who, assignment, action, **kwargs):
        audit(study_id, who, assignment, action, **kwargs)
        if action == "created":
            inside.set()
            release.wait(30)

    counted = {}

    def gate(*, study):
        counted["ratings"] = Rating.objects.filter(study=study).count()
        return {}

    monkeypatch.setattr(rating_services, "_audit", audit_then_hold)
    monkeypatch.setattr(gate_services, "study_gate", gate)
    rating = InThread(
        lambda: rating_services.rating_submit(
            token=_current_token(study, rater), rater=rater, score=5, seconds=2
        )
    )
    assert inside.wait(10)
    closing = InThread(lambda: gate_services.study_close(study=study, user=lead))
    closing.join(1.5)
    assert closing.is_alive(), "the close did not wait for the rating in flight"
    release.set()
    rating.join(10)
    closing.join(10)
    assert rating.error is None and closing.error is None
    assert counted["ratings"] == 1  # the gate saw the rating that was in flight


def test_a_rating_sent_while_the_study_closes_waits_and_is_refused(
    batch, raters, lead, monkeypatch
):
    study = open_study(batch, raters)
    rater = raters[0]
    token = _current_token(study, rater)
    computing, release = threading.Event(), threading.Event()

    def slow_gate(*, study):
        computing.set()  # the close holds its locks while the gate is computed
        release.wait(30)
        return {}

    monkeypatch.setattr(gate_services, "study_gate", slow_gate)
    closing = InThread(lambda: gate_services.study_close(study=study, user=lead))
    assert computing.wait(10)
    rating = InThread(
        lambda: rating_services.rating_submit(token=token, rater=rater, score=5, seconds=2)
    )
    rating.join(1.5)
    assert rating.is_alive(), "a rating was written while the study was closing"
    release.set()
    closing.join(10)
    rating.join(10)
    assert closing.error is None
    assert isinstance(rating.error, rating_services.RatingRefused)
    assert "closed" in str(rating.error)
    study.refresh_from_db()
    assert study.state == StudyState.CLOSED
    assert not Rating.objects.filter(study=study).exists()
    assert (
        RatingAudit.objects.filter(study=study, action="refused", detail="study closed").count()
        == 1
    )
