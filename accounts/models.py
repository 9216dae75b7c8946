"""Personal API tokens: a user's scripted access to the API, with their role and nothing more.

Only a digest of each token's secret is stored; the secret is shown once, when it is made. A
token is found by its public prefix, then its digest is compared in constant time.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiToken(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=80, help_text="What the token is for, in the owner's words.")
    prefix = models.CharField(
        max_length=16, unique=True, help_text="The public part of the token, to find it by."
    )
    digest = models.CharField(max_length=64, help_text="sha256 of the secret, hex.")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["user", "name"], name="api_token_name_per_user")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…) of {self.user_id}"

    def state(self, now=None) -> str:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= now:
            return "expired"
        return "active"


class ApiTokenUse(models.Model):
    """One request authenticated by a token. The token's name is copied: the record of what
    a script did stays readable after the token is revoked and renamed away."""

    token = models.ForeignKey(ApiToken, on_delete=models.CASCADE, related_name="uses")
    token_name = models.CharField(max_length=80)
    at = models.DateTimeField(default=timezone.now)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=300)

    class Meta:
        ordering = ["-at", "-pk"]
        indexes = [models.Index(fields=["token", "-at"], name="api_token_use_recent")]

    def __str__(self) -> str:
        return f"{self.token_name}: {self.method} {self.path}"
