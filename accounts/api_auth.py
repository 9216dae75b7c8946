"""The API's token authentication (``Authorization: Bearer fsk_…``), beside the browser's
session, and its declaration in the OpenAPI schema."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions, status
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from accounts.tokens import TOKEN_SCHEME, TokenRefused, token_authenticate

KEYWORD = "Bearer"
REALM = 'Bearer realm="api"'


class TokenAuthenticationFailed(exceptions.APIException):
    """401 with the reason. (DRF would turn an AuthenticationFailed into a 403 here, since the
    first authentication class, the session's, asks for no credentials.)"""

    status_code = status.HTTP_401_UNAUTHORIZED
    default_detail = "invalid API token"
    default_code = "authentication_failed"
    auth_header = REALM


class TokenAuthentication(BaseAuthentication):
    """A personal API token: the request acts as the token's owner, with their role's
    permissions and nothing more (a superuser's token does not carry superuser rights)."""

    def authenticate(self, request: Any) -> tuple[Any, Any] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != KEYWORD.lower().encode():
            return None
        if len(parts) != 2:
            raise TokenAuthenticationFailed(
                f"the Authorization header reads '{KEYWORD} {TOKEN_SCHEME}_…', one token"
            )
        try:
            raw = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise TokenAuthenticationFailed("the token is not ASCII text") from None
        try:
            token = token_authenticate(raw=raw, method=request.method, path=request.get_full_path())
        except TokenRefused as exc:
            raise TokenAuthenticationFailed(str(exc)) from None
        user = token.user
        user.is_superuser = False  # this request only: the role's permissions, nothing more
        return user, token

    def authenticate_header(self, request: Any) -> str:
        return REALM


class TokenAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.api_auth.TokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": f"{TOKEN_SCHEME}_<prefix>_<secret>",
            "description": "A personal API token (engineers and project leads), made on the "
            "account page. It acts with its owner's role; it expires and can be revoked.",
        }
