"""Personal API tokens: made, listed and revoked on the account page, stored hashed, shown
once, acting with the owner's role only, expiring, refused to dermatologists, every use logged
with the token's name."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiToken, ApiTokenUse
from accounts.tokens import RATERS_REFUSED, TokenInvalid, TokenRefused, token_create, token_revoke
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def bearer(token: str | None) -> APIClient:
    client = APIClient(enforce_csrf_checks=True)
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_page_makes_a_token_shown_once_and_stored_hashed(client):
    engineer = make_user("engineer")
    client.force_login(engineer)
    page = client.post(reverse("accounts:account"), {"name": "nightly", "expires_in_days": "30"})
    assert page.status_code == 200
    assert page["Cache-Control"] == "no-store"
    text = page.context["new_token"]
    assert text.startswith("fsk_") and text in page.content.decode()
    token = ApiToken.objects.get(user=engineer)
    assert token.name == "nightly" and text.startswith(f"fsk_{token.prefix}_")
    secret = text.split("_", 2)[2]
    # Only the digest is kept: the secret is nowhere in the row.
    assert token.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(ApiToken.objects.filter(pk=token.pk).values().get())
    assert timedelta(days=29, hours=23) < token.expires_at - timezone.now() <= timedelta(days=30)
    again = client.get(reverse("accounts:account")).content.decode()
    assert secret not in again and f"fsk_{token.prefix}_…" in again and "nightly" in again


def test_page_refuses_bad_input_and_changes_nothing(client):
    lead = make_user("lead")
    client.force_login(lead)
    token_create(user=lead, name="taken", expires_in_days=7)
    for data, reason in [
        ({"name": "  ", "expires_in_days": "30"}, "give the token a name"),
        ({"name": "x", "expires_in_days": "5"}, "not 5"),
        ({"name": "x", "expires_in_days": "soon"}, "7, 30, 90, 365 days"),
        ({"name": "taken", "expires_in_days": "30"}, "already have a token named 'taken'"),
        ({"name": "n" * 81, "expires_in_days": "30"}, "at most 80"),
    ]:
        page = client.post(reverse("accounts:account"), data, follow=True)
        assert page.context["new_token"] is None
        assert any(reason in str(m) for m in page.context["messages"]), (data, reason)
    assert list(ApiToken.objects.values_list("name", flat=True)) == ["taken"]


def test_dermatologists_cannot_make_or_use_tokens(client):
    rater = make_user("dermatologist")
    client.force_login(rater)
    page = client.get(reverse("accounts:account")).content.decode()
    assert "You cannot create API tokens" in page and "Create token" not in page
    client.post(reverse("accounts:account"), {"name": "x", "expires_in_days": "30"})
    assert not ApiToken.objects.exists()
    with pytest.raises(TokenRefused, match="rate in the browser only"):
        token_create(user=rater, name="x", expires_in_days=30)
    # A lead's token stops working once the user is made a dermatologist.
    lead = make_user("lead")
    _, text = token_create(user=lead, name="script", expires_in_days=30)
    assert bearer(text).get("/api/studies/").status_code == 200
    lead.groups.set([Group.objects.get(name="dermatologist")])
    answer = bearer(text).get("/api/studies/")
    assert answer.status_code == 401 and answer.json()["detail"] == RATERS_REFUSED


def test_a_token_acts_as_its_owner_and_every_use_is_logged():
    lead = make_user("lead")
    token, text = token_create(user=lead, name="weekly report", expires_in_days=7)
    assert bearer(text).get("/api/studies/").status_code == 200
    assert bearer(text).get("/api/releases/?page=2").status_code == 200
    uses = list(ApiTokenUse.objects.order_by("pk").values_list("token_name", "method", "path"))
    assert uses == [
        ("weekly report", "GET", "/api/studies/"),
        ("weekly report", "GET", "/api/releases/?page=2"),
    ]
    token.refresh_from_db()
    assert token.last_used_at is not None
    # A lead's role: the rater's queue and rating are refused.
    assert bearer(text).get("/api/rater/studies/1/queue/").status_code == 403


def test_a_superusers_token_carries_the_role_only():
    lead = make_user("lead")
    lead.is_superuser = True
    lead.save()
    _, text = token_create(user=lead, name="admin script", expires_in_days=7)
    # With the session a superuser passes every permission check; with the token, a lead's.
    answer = bearer(text).post("/api/ratings/", {"token": "x", "score": 3, "seconds": 1})
    assert answer.status_code == 403
    lead.refresh_from_db()
    assert lead.is_superuser  # nothing was saved


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (lambda t, text: text[:-2] + "xx", "invalid API token"),
        (lambda t, text: "abc", "not a FairSkin API token"),
        (lambda t, text: "fsk_nope_secret", "invalid API token"),
    ],
)
def test_a_wrong_token_is_refused_with_a_401(spoil, reason):
    token, text = token_create(user=make_user("engineer"), name="t", expires_in_days=7)
    answer = bearer(spoil(token, text)).get("/api/studies/")
    assert answer.status_code == 401 and reason in answer.json()["detail"]
    assert answer["WWW-Authenticate"].startswith("Bearer")
    assert not ApiTokenUse.objects.exists()


def test_expired_and_revoked_tokens_are_refused():
    engineer = make_user("engineer")
    old, old_text = token_create(user=engineer, name="old", expires_in_days=7)
    ApiToken.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    answer = bearer(old_text).get("/api/studies/")
    assert answer.status_code == 401 and "'old' expired" in answer.json()["detail"]
    live, text = token_create(user=engineer, name="live", expires_in_days=7)
    assert bearer(text).get("/api/studies/").status_code == 200
    token_revoke(user=engineer, token_id=live.pk)
    answer = bearer(text).get("/api/studies/")
    assert answer.status_code == 401 and "'live' was revoked" in answer.json()["detail"]


def test_only_the_owner_revokes_a_token(client):
    owner, other = make_user("engineer"), make_user("engineer")
    token, text = token_create(user=owner, name="mine", expires_in_days=7)
    with pytest.raises(TokenInvalid, match="no such token"):
        token_revoke(user=other, token_id=token.pk)
    client.force_login(other)
    refused = client.post(reverse("accounts:account"), {"revoke": str(token.pk)}, follow=True)
    assert [str(m) for m in refused.context["messages"]] == ["you have no such token"]
    token.refresh_from_db()
    assert token.revoked_at is None
    client.force_login(owner)
    page = client.post(reverse("accounts:account"), {"revoke": str(token.pk)}, follow=True)
    assert [str(m) for m in page.context["messages"]] == ["The token 'mine' is revoked."]
    token.refresh_from_db()
    assert token.revoked_at is not None and token.state() == "revoked"


def test_no_credentials_is_still_a_403_and_the_schema_declares_the_token(client):
    assert APIClient().get("/api/studies/").status_code == 403
    client.force_login(make_user("engineer"))
    schema = client.get("/api/schema/", {"format": "json"}).json()
    scheme = schema["components"]["securitySchemes"]["apiToken"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert {"apiToken": []} in schema["paths"]["/api/studies/"]["get"]["security"]
