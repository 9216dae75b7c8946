"""The rater's hot requests run a fixed number of queries from the first item to the last, so
an N+1 in the queue, the rating POST or the image cannot come back unnoticed. The figures
behind them are from the rating load test (scripts/load.sh, docs/benchmarks.md)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from review.models import Assignment
from tests.review.conftest import open_study

pytestmark = pytest.mark.django_db

# Every signed-in request: the session, the user, and has_perm's two (user and group perms).
REQUEST = 4
# The study with whether the user rates it; the next two items; marking the first one served;
# total and done in one aggregate.
QUEUE = REQUEST + 4
# Savepoint and release (the test's transaction); lock the assignment; read the study; an
# existing rating; the current item; insert the rating; insert the audit row; whether the
# study has an unrated item left (issue 23: its lead is told when none is); total and done.
RATING = REQUEST + 2 + 8
# The assignment with its item and study.
IMAGE = REQUEST + 1


@pytest.fixture
def study(batch, raters):
    # Repeats and controls too: every kind of item goes through the same queries.
    return open_study(batch, raters, sample_size=12, retest_share=0.2)


def _counted(client, method: str, url: str, **kwargs):
    with CaptureQueriesContext(connection) as queries:
        response = getattr(client, method)(url, **kwargs)
    return len(queries), response


def _post_rating(client, token: str):
    return _counted(
        client,
        "post",
        reverse("api:ratings"),
        data={"token": token, "score": 5, "seconds": 2.5},
        content_type="application/json",
    )


def test_queue_and_rating_queries_stay_fixed_from_the_first_item_to_the_last(client, study, raters):
    client.force_login(raters[0])
    queue_url = reverse("api:queue", args=[study.pk])
    queue_counts, rating_counts = [], []
    while True:
        n, response = _counted(client, "get", queue_url)
        assert response.status_code == 200
        queue_counts.append(n)
        current = response.json()["current"]
        if current is None:
            break
        n, response = _post_rating(client, current["token"])
        assert response.status_code == 201
        rating_counts.append(n)
    total = Assignment.objects.filter(study=study, rater=raters[0]).count()
    assert len(rating_counts) == total > 12
    assert rating_counts == [RATING] * total
    # The finished queue has no item to mark as served.
    assert queue_counts == [QUEUE] * total + [QUEUE - 1]


def test_asking_the_queue_again_for_a_served_item_does_not_write(client, study, raters):
    client.force_login(raters[1])
    url = reverse("api:queue", args=[study.pk])
    first, response = _counted(client, "get", url)
    again, response_again = _counted(client, "get", url)
    assert response.json()["current"] == response_again.json()["current"]
    assert (first, again) == (QUEUE, QUEUE - 1)


def test_a_repeated_rating_runs_no_more_queries_than_the_first(client, study, raters):
    client.force_login(raters[2])
    token = client.get(reverse("api:queue", args=[study.pk])).json()["current"]["token"]
    first, response = _post_rating(client, token)
    repeat, response_repeat = _post_rating(client, token)
    assert (response.status_code, response_repeat.status_code) == (201, 200)
    assert response_repeat.json()["done"] == 1
    # The repeat is audited instead of inserted and skips the order check and the check
    # for the study's last unrated item.
    assert first == RATING and repeat == RATING - 3


def test_the_blinded_image_runs_a_fixed_number_of_queries(client, study, raters):
    client.force_login(raters[0])
    queue = client.get(reverse("api:queue", args=[study.pk])).json()
    for item in (queue["current"], queue["next"]):
        n, response = _counted(client, "get", item["image"])
        assert response.status_code == 200
        assert n == IMAGE
