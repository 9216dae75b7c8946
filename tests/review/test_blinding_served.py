"""Blinding, checked on what a rater actually receives: the image bytes and their headers, the
rating page, the queue API, and who else may fetch an item. Nothing a rater can see may tell a
real control from a synthetic image, and an item reaches only the rater it is assigned to."""

import io
import json
import re

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.template.defaultfilters import linebreaks_filter
from django.urls import reverse
from PIL import Image as PILImage
from scipy.ndimage import gaussian_filter

from fairskin.review.blinding import inspect_served, served_encoding_lines, served_length
from review.models import Assignment, Rating, RatingAudit
from review.services.gate import _blinding_audit, study_close
from tests.factories import BatchFactory, DatasetFactory, ImageFactory, SampleFactory, make_user
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
        assert response["Content-Type"] == "image/png"
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
        assert info["metadata_markers"] == []  # no ancillary chunk at all
        assert info["stored"] and info["trailing_bytes"] == 0
        forms[assignment.item.origin].add(
            (
                len(data),
                info["format"],
                tuple(info["size"]),
                info["mode"],
                tuple(info["markers"]),
                info["payload_bytes"],
                info["header_sha256"],
            )
        )
    # One form per origin, and the same one: the real controls' camera JPEGs (with a comment
    # naming the camera) and the generator's PNGs (with a text chunk) end up alike, down to
    # the byte length.
    assert len(forms["real"]) == 1 and forms["real"] == forms["synthetic"], forms
    (form,) = forms["real"]
    assert form[:5] == (served_length(512), "PNG", (512, 512), "RGB", ("IHDR", "IDAT", "IEND"))


def probe(client, study, raters) -> dict[str, set]:
    """What the issue 15 probe saw: every served image fetched as each rater, its byte length
    and every response header, grouped by the origin only the server knows."""
    seen = {"real": set(), "synthetic": set()}
    for rater in raters:
        client.force_login(rater)
        for assignment in assignments_of(study, rater):
            response = fetch_image(client, assignment.token)
            assert response.status_code == 200
            assert not response.cookies  # nothing per item rides along in a cookie either
            headers = {k.lower(): v for k, v in response.headers.items()}
            assert int(headers["content-length"]) == len(response.content)
            seen[assignment.item.origin].add((len(response.content), *sorted(headers.items())))
    return seen


def test_every_image_as_every_rater_has_one_length_and_one_set_of_headers(client, study, raters):
    seen = probe(client, study, raters)
    assert len(seen["real"]) == 1 and seen["real"] == seen["synthetic"], seen
    ((length, *header_items),) = seen["real"]
    headers = dict(header_items)
    assert length == served_length(512) == int(headers["content-length"])
    assert headers["content-type"] == "image/png"
    assert headers["cache-control"] == "private, no-store"
    for validator in ("etag", "last-modified", "content-disposition", "expires"):
        assert validator not in headers


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
    assert audit["identical_format"] and audit["formats"] == ["PNG"]
    assert audit["headers_differing_by_origin"] == {}
    assert audit["encoding_failures"] == []
    assert audit["signals"]["bytes"]["value"] == 0.5
    assert audit["signals"]["payload_bytes"]["value"] == 0.5
    assert {"blockiness", "double_compression", "sharpness", "high_frequency"} <= set(
        audit["signals"]
    )

    # The release datasheet says what raters saw.
    lengths = list(study.items.values_list("derivative_bytes", flat=True))
    sheet = " ".join(served_encoding_lines(study_close_gate(study)["blinding_audit"], lengths))
    assert "one JPEG round trip (baseline, quality 90, 4:2:0" in sheet
    assert "uncompressed PNG" in sheet and "512 x 512 px" in sheet
    assert f"Every served file was {served_length(512):,} bytes long" in sheet
    assert "found no encoding signal" in sheet


def study_close_gate(study):
    study.refresh_from_db()
    return study.gate


def textured(seed: int) -> np.ndarray:
    """A 512 px skin-like texture: smooth shading, mottling and fine grain, seeded."""
    rng = np.random.default_rng(seed)
    field = np.array([170.0, 120.0, 100.0]) + sum(
        amp * gaussian_filter(rng.normal(size=(512, 512, 3)), (sigma, sigma, 0)) * sigma
        for sigma, amp in ((24, 20), (4, 6), (1, 3))
    )
    return np.clip(field, 0, 255).astype(np.uint8)


def encoded(pixels: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture
def textured_study(raters):
    """24 synthetic generator PNGs and 12 real camera JPEGs (quality 90, a comment) of the
    same kind of content: enough files for the audit's tests to reach alpha if any encoding
    signal separated them."""
    strata = [("MEL", 5), ("NV", 5)]
    batch = BatchFactory(
        state="finished", quotas={f"{dx}:{f}": 12 for dx, f in strata}, diagnoses=["MEL", "NV"]
    )
    real = DatasetFactory(name="real-camera")
    n = 0
    for dx, fst in strata:
        for index in range(18):
            n += 1
            is_real = index >= 12
            data = (
                encoded(textured(n), "JPEG", quality=90, comment=b"camera: real clinic")
                if is_real
                else encoded(textured(n), "PNG")
            )
            image = ImageFactory(
                dataset=real if is_real else batch.dataset,
                origin="real" if is_real else "synthetic",
                diagnosis=dx,
                fst_low=fst,
                fst_high=fst,
                source_id=f"{dx}-{n}",
            )
            image.preprocessed.save("r.jpg" if is_real else "s.png", ContentFile(data))
            if not is_real:
                SampleFactory(
                    batch=batch, image=image, diagnosis=dx, fst=fst, index=index, verdict="accepted"
                )
    study = open_study(batch, raters, sample_size=24, control_ratio=0.5)
    origins = list(study.items.values_list("origin", flat=True))
    assert (origins.count("real"), origins.count("synthetic")) == (12, 24), origins
    return study


def test_probe_and_audit_on_a_textured_study(client, textured_study, raters):
    seen = probe(client, textured_study, raters)
    assert len(seen["real"]) == 1 and seen["real"] == seen["synthetic"]
    audit = _blinding_audit(textured_study)
    assert audit["n_files"] == {"real": 12, "synthetic": 24}
    assert audit["encoding_failures"] == [], audit["signals"]
    for name in ("bytes", "payload_bytes"):
        assert audit["signals"][name]["value"] == 0.5 and audit["signals"][name]["p_value"] == 1
    for name in ("blockiness", "double_compression"):
        assert audit["signals"][name]["p_value"] >= 0.01, audit["signals"][name]
