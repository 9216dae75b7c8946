"""Notifications: one row per (kind, object, occurrence, recipient), shown in the recipient's
home-page list and mailed to them once."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class NotificationKind(models.TextChoices):
    STUDY_ASSIGNED = "study_assigned", "A study assigns you images to rate"
    RATING_REMINDER = "rating_reminder", "Reminder: images wait for your ratings"
    STUDY_RATED = "study_rated", "Every rater finished a study of yours (its gate is ready)"
    JOB_SUCCEEDED = "job_succeeded", "A run or batch you launched succeeded"
    JOB_FAILED = "job_failed", "A run or batch you launched failed"


class EmailState(models.TextChoices):
    PENDING = "pending", "Waiting to be sent"
    SENT = "sent", "Sent"
    NO_ADDRESS = "no_address", "Not sent: no email address"


class Notification(models.Model):
    """Written in the transaction of the work it reports, so it exists exactly when the work
    committed; the mail goes out after commit. The unique constraint is the deduplication: a
    retried or resumed job, a repeated signal or a second periodic check writes nothing new
    for an occurrence already recorded."""

    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    kind = models.CharField(max_length=24, choices=NotificationKind.choices)
    object_key = models.CharField(max_length=80, help_text="What it is about: study:12, job:40.")
    occurrence = models.CharField(
        max_length=40, help_text="Which event of that object: opened, reminder:2, attempt:3."
    )
    subject = models.CharField(max_length=200)
    body = models.TextField()
    link = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)
    email_state = models.CharField(
        max_length=12, choices=EmailState.choices, default=EmailState.PENDING
    )
    email_sent_at = models.DateTimeField(null=True, blank=True)
    email_attempts = models.PositiveIntegerField(default=0)
    email_error = models.TextField(blank=True, help_text="The mail server's last refusal.")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "object_key", "occurrence", "recipient"],
                name="notification_once_per_occurrence",
            )
        ]
        indexes = [
            models.Index(fields=["recipient", "-created_at"], name="notification_inbox_idx"),
            models.Index(
                fields=["created_at"],
                name="notification_unsent_idx",
                condition=Q(email_state="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.object_key} {self.occurrence} to {self.recipient_id}"


class NotificationOptOut(models.Model):
    """A kind the user turned off: neither listed nor mailed. No row: on."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_opt_outs"
    )
    kind = models.CharField(max_length=24, choices=NotificationKind.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "kind"], name="notification_opt_out_once")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} off {self.kind}"
