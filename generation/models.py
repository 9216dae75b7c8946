"""Generation batches and the samples they store.

A batch asks a fine-tuned model for a number of accepted images, balanced over diagnoses and
Fitzpatrick types. Every candidate it stores, accepted or rejected, is a catalog Image (origin
synthetic) with exactly one Sample holding how it was made, every score and the verdict.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import Q

from fairskin.generation.plan import Plan
from fairskin.generation.spec import SPEC


class BatchState(models.TextChoices):
    PREPARING = "preparing", "Preparing reference features"
    GENERATING = "generating", "Generating"
    REPORTING = "reporting", "Computing batch metrics"
    FINISHED = "finished", "Finished"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_STATES = (BatchState.PREPARING, BatchState.GENERATING, BatchState.REPORTING)
SCHEDULER_CHOICES = [(name, name) for name in SPEC.scheduler.choices]


def default_fst_distribution() -> dict[str, float]:
    return {str(fst): share for fst, share in SPEC.fst_distribution.items()}


class Batch(models.Model):
    model_run = models.ForeignKey(
        "training.Run",
        on_delete=models.PROTECT,
        related_name="batches",
        help_text="A LoRA or joint run; its parents are implied.",
    )
    name = models.CharField(max_length=SPEC.name.max_length, blank=True)
    target = models.PositiveIntegerField(help_text="Accepted images wanted.")
    diagnoses = models.JSONField(default=list)
    fst_distribution = models.JSONField(default=default_fst_distribution)
    overgeneration = models.FloatField(default=SPEC.overgeneration.default)
    scheduler = models.CharField(
        max_length=16, choices=SCHEDULER_CHOICES, default=SPEC.scheduler.default
    )
    steps = models.PositiveIntegerField(default=SPEC.steps.default)
    guidance = models.FloatField(default=SPEC.guidance.default)
    negative_prompt = models.CharField(
        max_length=SPEC.negative_prompt.max_length, default=SPEC.negative_prompt.default, blank=True
    )
    size = models.PositiveIntegerField(help_text="Image side in pixels.")
    seed = models.BigIntegerField(default=SPEC.seed.default)
    shard_size = models.PositiveIntegerField(
        default=SPEC.shard_size.default, help_text="Candidates per shard job."
    )
    device_batch = models.PositiveIntegerField(
        default=SPEC.device_batch.default,
        help_text="Images per device pass: the fixed "
        "micro-batch size, which the pixels depend on (see reproducibility).",
    )
    scoring = models.JSONField(default=dict, blank=True, help_text="Thresholds and switches.")
    filter_percentile = models.FloatField(
        default=SPEC.filter_percentile.default,
        help_text="Share (%) of held-out real images each calibrated filter threshold lets "
        "pass; the default threshold of every distance check.",
    )
    filter_calibration = models.JSONField(
        default=dict,
        blank=True,
        help_text="Per check and skin type: the threshold, how it was obtained and the share "
        "of held-out real images it would reject (set when the reference is ready).",
    )

    reference = models.JSONField(
        default=dict,
        blank=True,
        help_text="img2img from catalog images (empty: text-to-image): the request, the image "
        "ids it resolved to, the strength and each stratum's reference image "
        "(fairskin.generation.reference_images).",
    )
    label_scale = models.FloatField(
        default=SPEC.label_scale.default,
        help_text="Class-label guidance beside the text's (fairskin.diffusion.label_guidance): "
        "0 samples with the null label; above 0 needs a model trained with label conditioning.",
    )

    # The plan, fixed at creation: {"MEL:6": quota} (Plan.quotas_json; read back by plan());
    # how far each stratum has been planned, and the finished ones, under the same keys.
    quotas = models.JSONField(default=dict)
    origin = models.JSONField(
        default=dict,
        blank=True,
        help_text="Where explicit quotas came from (empty: planned from the target and the "
        'FST distribution): {"kind": "hard_example", "classifier_run": id, "table": [...]} '
        "with each stratum's validation error and the reason for its quota.",
    )
    planned = models.JSONField(default=dict, help_text="Next candidate index per stratum.")
    outcomes = models.JSONField(
        default=dict, blank=True, help_text="Finished strata: accepted and shortfall."
    )
    state = models.CharField(
        max_length=12, choices=BatchState.choices, default=BatchState.PREPARING
    )
    job = models.OneToOneField(
        "jobs.Job",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="batch",
        help_text="Preparation; shards are its children.",
    )
    dataset = models.OneToOneField(
        "catalog.Dataset", null=True, blank=True, on_delete=models.PROTECT, related_name="batch"
    )
    identity = models.CharField(
        max_length=80,
        blank=True,
        help_text="The artifacts folder's name (batch-<id>-<token>), set at creation; the "
        "scoring reference records it and shards refuse any other.",
    )
    artifacts_dir = models.CharField(max_length=500, blank=True)
    provenance = models.JSONField(
        default=dict, blank=True, help_text="Feature extractors and their weights."
    )
    reproducibility = models.JSONField(
        default=dict,
        blank=True,
        help_text="What a candidate's pixels depend on besides its "
        "seed and the settings: the micro-batch size, and each machine (device, dtype, "
        "library versions, CPU threads) that generated candidates.",
    )
    report = models.JSONField(default=dict, blank=True, help_text="Batch metrics.")
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("launch_batch", "Can launch, cancel and resume generation batches")]
        constraints = [
            models.CheckConstraint(
                condition=Q(overgeneration__gte=1), name="batch_overgeneration_at_least_1"
            ),
            models.CheckConstraint(condition=Q(target__gt=0), name="batch_target_positive"),
        ]

    def __str__(self) -> str:
        return f"Batch {self.pk}" + (f" ({self.name})" if self.name else "")

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def reference_strength(self) -> float | None:
        return self.reference.get("strength") if self.reference else None

    @property
    def micro_batch(self) -> int:
        """Candidates computed together in one device pass (fixed when the batch was created)."""
        return int(self.reproducibility.get("micro_batch") or self.device_batch)

    @property
    def folder(self) -> Path:
        """This host's working folder for the artifacts (`jobs.artifacts.local_folder`): what
        a job writes into, and what it reads after fetching from the store."""
        from jobs.artifacts import local_folder

        return local_folder(self.artifacts_dir)

    def plan(self) -> Plan:
        """Every stratum with its quota and candidate cap, in the order of ``quotas``."""
        return Plan.from_json(self.quotas, self.overgeneration)


class Verdict(models.TextChoices):
    PENDING = "pending", "Pending (earlier seeds not scored yet)"
    ACCEPTED = "accepted", "Accepted"
    REJECTED = "rejected", "Rejected"
    SURPLUS = "surplus", "Not needed (quota met by earlier seeds)"


class Sample(models.Model):
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="samples")
    image = models.OneToOneField("catalog.Image", on_delete=models.CASCADE, related_name="sample")
    diagnosis = models.CharField(max_length=8)
    fst = models.PositiveSmallIntegerField()
    index = models.PositiveIntegerField(help_text="Place in the stratum's seed order.")
    seed = models.BigIntegerField()
    prompt = models.CharField(max_length=500)
    negative_prompt = models.CharField(max_length=500, blank=True)
    steps = models.PositiveIntegerField()
    guidance = models.FloatField()
    scheduler = models.CharField(max_length=16)
    model_runs = models.JSONField(default=list, help_text="Run ids, oldest first.")
    reference_image = models.ForeignKey(
        "catalog.Image",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The image it was generated from (img2img); empty for text-to-image.",
    )
    reference_strength = models.FloatField(null=True, blank=True)
    class_label = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="The packed label index it was guided towards "
        "(fairskin.diffusion.labels_conditioning); empty without label guidance.",
    )
    label_scale = models.FloatField(null=True, blank=True)
    metrics = models.JSONField(default=dict)
    checks = models.JSONField(default=list, help_text="Every check with its value and limit.")
    failed_checks = models.JSONField(default=list, help_text="Reasons from the image itself.")
    clip_embedding = models.BinaryField(help_text="float32 vector, for duplicates/diversity.")
    inception_features = models.BinaryField(help_text="float32 pool features, for FID/KID.")
    verdict = models.CharField(max_length=10, choices=Verdict.choices, default=Verdict.PENDING)
    reasons = models.JSONField(default=list, help_text="Why it was rejected.")
    shard_job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["batch_id", "diagnosis", "fst", "index"]
        constraints = [
            models.UniqueConstraint(
                fields=["batch", "diagnosis", "fst", "index"], name="sample_unique_candidate"
            ),
        ]
        indexes = [
            models.Index(
                fields=["batch", "verdict", "diagnosis", "fst"], name="sample_batch_verdict_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.batch} {self.diagnosis} FST {self.fst} #{self.index}"
