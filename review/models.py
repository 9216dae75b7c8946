"""Blinded review studies, their ratings, and the releases a passed gate allows.

A study freezes everything before rating starts: the sample (seeded), the real controls, each
rater's order, the instructions and the gate criteria (both versioned). Raters see items only
through per-assignment random tokens; the origin of an item lives on the server alone.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q

from catalog.models import Origin


class StudyState(models.TextChoices):
    PREPARING = "preparing", "Preparing (sampling and blinding)"
    OPEN = "open", "Open for rating"
    CLOSED = "closed", "Closed"
    FAILED = "failed", "Preparation failed"


class Study(models.Model):
    batch = models.ForeignKey("generation.Batch", on_delete=models.PROTECT, related_name="studies")
    name = models.CharField(max_length=120, blank=True)
    sample_size = models.PositiveIntegerField(
        default=500, help_text="Synthetic images drawn for rating."
    )
    control_ratio = models.FloatField(default=0.25, help_text="Real controls per synthetic.")
    seed = models.BigIntegerField()
    warmup_count = models.PositiveIntegerField(default=0, help_text="Unscored practice items.")
    retest_share = models.FloatField(default=0.0, help_text="Share of items shown twice.")
    max_run = models.PositiveIntegerField(default=5, help_text="Longest run of one origin.")
    allow_changes = models.BooleanField(
        default=False, help_text="Raters may change a submitted rating."
    )
    instructions = models.TextField()
    instructions_template = models.TextField(
        blank=True,
        help_text="The lead's text; preparation renders it into the instructions with the "
        "share of real images actually drawn. Empty: the instructions are final as written.",
    )
    identity = models.CharField(
        max_length=80, blank=True, help_text="Its blinded files' folder (study-<id>-<token>)."
    )
    instructions_version = models.PositiveIntegerField(default=1)
    criteria = models.JSONField(help_text="Gate criteria, versioned, frozen at creation.")
    state = models.CharField(
        max_length=12, choices=StudyState.choices, default=StudyState.PREPARING
    )
    plan = models.JSONField(default=dict, blank=True, help_text="Sample, controls, substitutes.")
    gate = models.JSONField(default=dict, blank=True, help_text="Gate report at closing.")
    job = models.OneToOneField(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="study"
    )
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("manage_study", "Can open, close and decide on review studies"),
            ("rate_study", "Can rate images in studies assigned to them"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(control_ratio__gte=0, control_ratio__lte=1),
                name="study_control_ratio_range",
            ),
            models.CheckConstraint(
                condition=Q(retest_share__gte=0, retest_share__lte=0.5),
                name="study_retest_share_range",
            ),
        ]

    def __str__(self) -> str:
        return f"Study {self.pk}" + (f" ({self.name})" if self.name else "")


class StudyRater(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="raters")
    rater = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="studies_rated"
    )
    index = models.PositiveSmallIntegerField()
    instructions_accepted = models.PositiveIntegerField(
        null=True, blank=True, help_text="The instructions version the rater read."
    )

    class Meta:
        ordering = ["study_id", "index"]
        constraints = [
            models.UniqueConstraint(fields=["study", "rater"], name="study_rater_once"),
            models.UniqueConstraint(fields=["study", "index"], name="study_rater_index"),
        ]

    def __str__(self) -> str:
        return f"rater {self.index + 1} of study {self.study_id}"


def derivative_upload_to(item: StudyItem, filename: str) -> str:
    # A random name: nothing about the image, its origin or its order in the file path. The
    # folder is the study's own (its identity), never shared with a study that re-used its id.
    folder = item.study.identity or f"study-{item.study_id}"
    return f"review/{folder}/{secrets.token_hex(16)}.png"


class StudyItem(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="items")
    image = models.ForeignKey("catalog.Image", on_delete=models.PROTECT, related_name="+")
    origin = models.CharField(max_length=10, choices=Origin.choices)
    diagnosis = models.CharField(max_length=8)
    fst = models.PositiveSmallIntegerField()
    substituted_from = models.JSONField(
        null=True, blank=True, help_text="A control taken from the nearest stratum."
    )
    derivative = models.FileField(upload_to=derivative_upload_to, max_length=200)
    derivative_bytes = models.PositiveIntegerField(default=0)
    derivative_sha256 = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["study_id", "id"]
        constraints = [models.UniqueConstraint(fields=["study", "image"], name="study_item_once")]

    def __str__(self) -> str:
        return f"item {self.pk} of study {self.study_id}"


class Kind(models.TextChoices):
    WARMUP = "warmup", "Warm-up (not scored)"
    SCORED = "scored", "Scored"
    RETEST = "retest", "Repeat (test-retest)"


def new_token() -> str:
    return secrets.token_urlsafe(32)


class Assignment(models.Model):
    """One item in one rater's order. The token is the only name the rater ever sees."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="assignments")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    item = models.ForeignKey(StudyItem, on_delete=models.CASCADE, related_name="assignments")
    position = models.PositiveIntegerField()
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.SCORED)
    token = models.CharField(max_length=64, unique=True, default=new_token)
    first_served_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["study_id", "rater_id", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["study", "rater", "position"], name="assignment_position_once"
            ),
            models.UniqueConstraint(
                fields=["study", "rater", "item", "kind"], name="assignment_item_once_per_kind"
            ),
        ]

    def __str__(self) -> str:
        return f"position {self.position} for rater {self.rater_id} in study {self.study_id}"


class Rating(models.Model):
    assignment = models.OneToOneField(Assignment, on_delete=models.PROTECT, related_name="rating")
    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="ratings")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    item = models.ForeignKey(StudyItem, on_delete=models.PROTECT, related_name="ratings")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    score = models.PositiveSmallIntegerField()
    seconds = models.FloatField(help_text="From showing the image to submitting.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["study_id", "rater_id", "assignment__position"]
        constraints = [
            models.UniqueConstraint(
                fields=["rater", "item", "kind"], name="rating_once_per_rater_item"
            ),
            models.CheckConstraint(
                condition=Q(score__gte=1, score__lte=7), name="rating_score_1_to_7"
            ),
            models.CheckConstraint(condition=Q(seconds__gte=0), name="rating_seconds_positive"),
        ]

    def __str__(self) -> str:
        return f"rating {self.score} by {self.rater_id} in study {self.study_id}"


class RatingAudit(models.Model):
    """Append-only: every attempt to write a rating and what became of it."""

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="audit")
    rater = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    assignment = models.ForeignKey(
        Assignment, null=True, on_delete=models.PROTECT, related_name="+"
    )
    action = models.CharField(max_length=16)  # created, repeated, changed, refused
    score = models.PositiveSmallIntegerField(null=True)
    previous = models.PositiveSmallIntegerField(null=True)
    detail = models.CharField(max_length=300, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.action} at {self.at:%Y-%m-%d %H:%M:%S}"


class Release(models.Model):
    """An approved batch: immutable once written (only its export fields are filled later)."""

    study = models.OneToOneField(Study, on_delete=models.PROTECT, related_name="release")
    batch = models.ForeignKey("generation.Batch", on_delete=models.PROTECT, related_name="releases")
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    approved_at = models.DateTimeField(auto_now_add=True)
    note = models.TextField(blank=True)
    manifest = models.JSONField()
    manifest_sha256 = models.CharField(max_length=64)
    gate = models.JSONField(help_text="The gate report the approval relied on.")
    criteria_version = models.PositiveIntegerField()
    image_count = models.PositiveIntegerField()
    export_job = models.OneToOneField(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="release"
    )
    export_path = models.CharField(max_length=500, blank=True)
    identity = models.CharField(
        max_length=80,
        blank=True,
        help_text="Its export folder's name (release-<id>-<token>), set at creation.",
    )

    class Meta:
        ordering = ["-approved_at"]
        constraints = [models.UniqueConstraint(fields=["batch"], name="one_release_per_batch")]

    EXPORT_FIELDS = frozenset({"export_job", "export_path"})

    def __str__(self) -> str:
        return f"Release {self.pk} of batch {self.batch_id}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            fields = set(kwargs.get("update_fields") or ())
            if not fields or not fields <= self.EXPORT_FIELDS:
                raise ValueError("a release is immutable; only its export can be recorded")
        super().save(*args, **kwargs)


class BatchRejection(models.Model):
    batch = models.OneToOneField(
        "generation.Batch", on_delete=models.PROTECT, related_name="rejection"
    )
    study = models.ForeignKey(
        Study, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reason = models.TextField()
    rejected_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    rejected_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"rejection of batch {self.batch_id}"
