"""Blinding, checked on what a rater actually receives: the image bytes and their headers, the
rating page, the queue API, and who else may fetch an item. Nothing a rater can see may tell a
real control from a synthetic image, and an item reaches only the rater it is assigned to."""

import json
import re

import pytest
from django.template.defaultfilters import linebreaks_filter
from django.urls import reverse

from fairskin.review.blinding import inspect_served
from review.models import Assignment, Rating, RatingAudit
from review.services.gate import study_close
from tests.factories import make_user
from tests.review.conftest import open_study

pytestmark = pytest.mark.django_db

QUEUE_KEYS = {"study", "state", "total", "done", "current", "next"}
QUEUE_ITEM_KEYS = {"token", "image", "kind"}
LEAKY_WORDS = (b"synthetic", b"camera")


@pytest.fixture
def study(batch, raters):
    study = open_study(batch, raters, sample_size=8, control_ratio=0.5)
    origins = list(study.items.values_list("origin", flat=True))
    assert origins.count("real") >= 2 and origins.count("synthetic") >= 4, origins
    return study


def assignments_of(study, rater):
    return list(
        Assignment.objects.filter(study=study, rater=rater)
        .select_related("item__image")
        .order_by("position")
    )


def fetch_image(client, token):
    return client.get(reverse("review:image", args=[token]))


def secrets_of(study) -> set[str]:
    """Every string that would name an item's origin or identity if a rater saw it."""
    found = {"real", "synthetic"}
    for item in study.items.select_related("image"):
        image = item.image
        found |= {
            str(item.pk),
            str(image.pk),
            image.sha256,
            item.derivative_sha256,
            image.source_id,
            image.file_name,
            image.preprocessed.name,
            image.preprocessed.name.rsplit("/", 1)[-1],
            item.derivative.name,
            item.derivative.name.rsplit("/", 1)[-1],
        }
    return {s for s in found if s}


def test_served_bytes_are_identical_in_form_for_real_and_synthetic(client, study, raters):
    rater = raters[0]
    client.force_login(rater)
    forms = {"real": set(), "synthetic": set()}
    for assignment in assignments_of(study, rater):
        response = fetch_image(client, assignment.token)
        assert response.status_code == 200
        assert response["Content-Type"] == "image/jpeg"
        data = response.content
        image = assignment.item.image
        for word in (
            *LEAKY_WORDS,
            image.source_id.encode(),
            image.file_name.encode(),
            image.preprocessed.name.rsplit("/", 1)[-1].encode(),
        ):
            assert word.lower() not in data.lower(), (word, assignment.item.origin)
        info = inspect_served(data)
        assert not (info["has_exif"] or info["has_icc"] or info["has_comment"]), info
        assert info["metadata_markers"] == ["APP0"]  # the fixed JFIF header and nothing else
        assert info["trailing_bytes"] == 0
        forms[assignment.item.origin].add(
            (
                info["format"],
                tuple(info["size"]),
                info["mode"],
                info["subsampling"],
                info["quantization_sha256"],
                info["progressive"],
                tuple(info["dpi"]),
                tuple(info["markers"]),
                info["header_sha256"],
            )
        )
    # One form per origin, and the same one: the real controls' camera JPEGs (with a comment
    # naming the camera) and the generator's PNGs (with a text chunk) end up alike.
    assert len(forms["real"]) == 1 and forms["real"] == forms["synthetic"], forms
    (form,) = forms["real"]
    assert form[:4] == ("JPEG", (512, 512), "RGB", "4:2:0")


def test_response_headers_do_not_depend_on_origin(client, study, raters):
    rater = raters[1]
    client.force_login(rater)
    seen = {"real": set(), "synthetic": set()}
    for assignment in assignments_of(study, rater):
        response = fetch_image(client, assignment.token)
        headers = {k.lower(): v for k, v in response.headers.items()}
        assert int(headers.pop("content-length")) == len(response.content)
        assert "last-modified" not in headers and "etag" not in headers
        assert "content-disposition" not in headers
        assert "no-store" in headers["cache-control"]
        assert not response.cookies  # nothing per item rides along in a cookie either
        seen[assignment.item.origin].add(tuple(sorted(headers.items())))
    assert len(seen["real"]) == 1 and seen["real"] == seen["synthetic"], seen


def test_rate_page_and_queue_carry_no_origin_or_identity(client, study, raters):
    rater = raters[2]
    client.force_login(rater)
    url = reverse("review:rate", args=[study.pk])
    assert client.post(url, {"accept_instructions": "1"}).status_code == 302
    html = client.get(url).content.decode()
    assert 'id="rater"' in html  # the rating screen, not the instructions again
    # The instructions truthfully say some images are real photographs; the rest of the page
    # must not mention an origin at all.
    rest = html.replace(linebreaks_filter(study.instructions, autoescape=True), "")
    assert rest != html
    assert not re.search(r"\b(real|synthetic|origin)\b", rest, re.IGNORECASE), rest
    hidden = secrets_of(study) - {"real", "synthetic"}
    tokens = {a.token for a in assignments_of(study, rater)}
    assert not [s for s in hidden | tokens if s in rest and not s.isdigit()]
    assert not re.search(r"data-(origin|item|image|id)\b", rest)

    response = client.get(reverse("api:queue", args=[study.pk]))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == QUEUE_KEYS
    assert body["study"] == study.pk and body["state"] == "open"
    assert body["done"] == 0 and body["total"] == len(tokens)
    for key in ("current", "next"):
        item = body[key]
        assert set(item) == QUEUE_ITEM_KEYS
        assert item["token"] in tokens
        assert item["image"] == reverse("review:image", args=[item["token"]])
        assert item["kind"] == "rating"
        for value in item.values():
            assert value not in secrets_of(study)
    text = json.dumps(body).lower()
    assert "synthetic" not in text and not re.search(r"\breal\b", text)
    assert not [s for s in hidden if not s.isdigit() and s.lower() in text]


def test_image_url_names_the_token_and_nothing_else(study, raters):
    assignments = list(Assignment.objects.filter(study=study).select_related("item"))
    tokens = [a.token for a in assignments]
    assert len(set(tokens)) == len(tokens)  # the same item has another name for each rater
    prefix = reverse("review:image", args=["x"])[:-1]
    for assignment in assignments:
        url = reverse("review:image", args=[assignment.token])
        assert url == prefix + assignment.token
        assert len(assignment.token) >= 40 and re.fullmatch(r"[A-Za-z0-9_-]+", assignment.token)
        assert assignment.item.derivative_sha256 not in url


def test_another_raters_token_is_not_found_and_cannot_be_rated(client, study, raters):
    owner, other = raters[0], raters[1]
    token = assignments_of(study, owner)[0].token
    client.force_login(other)
    assert fetch_image(client, token).status_code == 404
    assert fetch_image(client, "n0-such-t0ken").status_code == 404

    response = client.post(
        reverse("api:ratings"),
        {"token": token, "score": 7, "seconds": 2},
        content_type="application/json",
    )
    assert response.status_code == 403
    assert not Rating.objects.exists()
    refused = RatingAudit.objects.get(study=study)
    assert (refused.action, refused.rater, refused.score) == ("refused", other, 7)
    assert "another rater" in refused.detail

    # The owner still gets the image, and rates it.
    client.force_login(owner)
    assert fetch_image(client, token).status_code == 200


def test_anonymous_visitors_get_nothing(client, study, raters):
    token = assignments_of(study, raters[0])[0].token
    response = fetch_image(client, token)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:login"))
    assert client.get(reverse("api:queue", args=[study.pk])).status_code == 403
    response = client.post(
        reverse("api:ratings"),
        {"token": token, "score": 4, "seconds": 1},
        content_type="application/json",
    )
    assert response.status_code == 403
    assert not Rating.objects.exists()


@pytest.mark.parametrize("role", ["lead", "engineer"])
def test_leads_and_engineers_cannot_fetch_a_raters_image(client, study, raters, role):
    client.force_login(make_user(role))
    for assignment in assignments_of(study, raters[0])[:3]:
        assert fetch_image(client, assignment.token).status_code == 404


def test_closing_audit_finds_identical_dimensions_and_format(client, study, raters, lead):
    for rater in raters:
        client.force_login(rater)
        while current := client.get(reverse("api:queue", args=[study.pk])).json()["current"]:
            response = client.post(
                reverse("api:ratings"),
                {"token": current["token"], "score": 6, "seconds": 2.5},
                content_type="application/json",
            )
            assert response.status_code == 201, response.content
    assert (
        Rating.objects.filter(study=study).count() == Assignment.objects.filter(study=study).count()
    )

    audit = study_close(study=study, user=lead).gate["blinding_audit"]
    items = list(study.items.all())
    assert audit["n_files"] == {
        "real": sum(i.origin == "real" for i in items),
        "synthetic": sum(i.origin == "synthetic" for i in items),
    }
    assert audit["identical_dimensions"] and audit["dimensions"] == [[512, 512]]
    assert audit["identical_format"] and audit["formats"] == ["JPEG"]
    assert audit["headers_differing_by_origin"] == {}
