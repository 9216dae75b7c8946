"""Personal API tokens: create, list, revoke, and authenticate a request by one.

A token reads ``fsk_<prefix>_<secret>``. The prefix is public (it names the token in lists and
logs); the secret is 32 random bytes, of which only the sha256 is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import ApiToken, ApiTokenUse
from accounts.roles import STAFF_ROLES, Role, user_role
from fairskin.errors import ApplicationError

TOKEN_SCHEME = "fsk"  # noqa: S105  (the tokens' visible prefix, not a secret)
EXPIRY_DAYS = (7, 30, 90, 365)
MAX_ACTIVE_TOKENS = 20
RATERS_REFUSED = (
    "dermatologists rate in the browser only: API tokens are for engineers and project leads"
)


class TokenRefused(ApplicationError, PermissionError):
    status = 403


class TokenInvalid(ApplicationError, ValueError):
    status = 400


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_may_hold(user: Any) -> bool:
    """Engineers and leads may hold tokens; raters and users without a role may not."""
    return user_role(user) in STAFF_ROLES


def token_create(*, user: Any, name: str, expires_in_days: int) -> tuple[ApiToken, str]:
    """A new token for ``user``; returns it with the full token text, which is never stored
    and cannot be shown again."""
    name = (name or "").strip()
    if user_role(user) is Role.DERMATOLOGIST:
        raise TokenRefused(RATERS_REFUSED)
    if not token_may_hold(user):
        raise TokenRefused("only engineers and project leads can create API tokens")
    if not name:
        raise TokenInvalid("give the token a name: what it is for")
    if len(name) > 80:
        raise TokenInvalid(f"the name has {len(name)} characters; at most 80")
    if expires_in_days not in EXPIRY_DAYS:
        allowed = ", ".join(str(d) for d in EXPIRY_DAYS)
        raise TokenInvalid(f"a token expires after {allowed} days, not {expires_in_days!r}")
    now = timezone.now()
    if tokens_active(user=user).count() >= MAX_ACTIVE_TOKENS:
        raise TokenInvalid(
            f"you have {MAX_ACTIVE_TOKENS} active tokens already: revoke one you no longer use"
        )
    prefix, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            token = ApiToken.objects.create(
                user=user,
                name=name,
                prefix=prefix,
                digest=_digest(secret),
                created_at=now,
                expires_at=now + timedelta(days=expires_in_days),
            )
    except IntegrityError:
        raise TokenInvalid(f"you already have a token named {name!r}") from None
    return token, f"{TOKEN_SCHEME}_{prefix}_{secret}"


def tokens_of(*, user: Any) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user)


def tokens_active(*, user: Any) -> QuerySet[ApiToken]:
    return tokens_of(user=user).filter(revoked_at__isnull=True, expires_at__gt=timezone.now())


def token_revoke(*, user: Any, token_id: int) -> ApiToken:
    """Revoke one of the user's own tokens (someone else's reads as missing)."""
    token = tokens_of(user=user).filter(pk=token_id).first()
    if token is None:
        raise TokenInvalid("you have no such token")
    if token.revoked_at is None:
        ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        token.refresh_from_db()
    return token


def token_authenticate(*, raw: str, method: str, path: str) -> ApiToken:
    """The live token ``raw`` is, its use recorded; raises TokenRefused with the reason."""
    scheme, _, rest = raw.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != TOKEN_SCHEME or not prefix or not secret:
        raise TokenRefused(f"not a FairSkin API token (they read {TOKEN_SCHEME}_…)")
    token = ApiToken.objects.select_related("user").filter(prefix=prefix).first()
    if token is None or not hmac.compare_digest(token.digest, _digest(secret)):
        raise TokenRefused("invalid API token")
    now = timezone.now()
    if token.revoked_at is not None:
        raise TokenRefused(f"the API token {token.name!r} was revoked")
    if token.expires_at <= now:
        raise TokenRefused(f"the API token {token.name!r} expired on {token.expires_at:%Y-%m-%d}")
    if not token.user.is_active:
        raise TokenRefused("this account is disabled")
    if user_role(token.user) is Role.DERMATOLOGIST:
        raise TokenRefused(RATERS_REFUSED)
    if not token_may_hold(token.user):
        raise TokenRefused("this account has no engineer or lead role")
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    ApiTokenUse.objects.create(
        token=token, token_name=token.name, at=now, method=method[:10], path=path[:300]
    )
    return token
