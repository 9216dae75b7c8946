"""Training runs: textual inversion, LoRA and joint refinement (classifier runs come later)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models


class RunKind(models.TextChoices):
    TEXTUAL_INVERSION = "textual_inversion", "Textual inversion"
    LORA = "lora", "LoRA"
    JOINT = "joint", "Joint refinement"
    CLASSIFIER = "classifier", "Classifier"


# The kinds whose model generates images: a generation batch's, an on-the-fly classifier's.
GENERATING_KINDS = (RunKind.LORA, RunKind.JOINT)

# The kind each kind's parent must be: TI -> LoRA -> joint.
PARENT_KIND: dict[str, RunKind] = {
    RunKind.LORA: RunKind.TEXTUAL_INVERSION,
    RunKind.JOINT: RunKind.LORA,
}


class Run(models.Model):
    kind = models.CharField(max_length=24, choices=RunKind.choices)
    name = models.CharField(max_length=120, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    base_model = models.CharField(max_length=300, help_text="tiny, sd15-random, folder or hub id")
    base_model_resolved = models.CharField(max_length=500, blank=True)
    config = models.JSONField(default=dict)
    selection = models.JSONField(default=dict, help_text="Which catalog images train the run.")
    selection_hash = models.CharField(max_length=64, blank=True)
    image_count = models.PositiveIntegerField(default=0)
    job = models.OneToOneField(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="run"
    )
    identity = models.CharField(
        max_length=80,
        blank=True,
        help_text="The artifacts folder's name (run-<id>-<token>), set at creation; its "
        "checkpoints carry it, and a resume needs it to match.",
    )
    artifacts_dir = models.CharField(max_length=500, blank=True)
    tokens = models.JSONField(default=list, blank=True)
    final_loss = models.FloatField(null=True, blank=True)
    evaluation = models.JSONField(
        default=dict, blank=True, help_text="Classifier runs: the fairness evaluation."
    )
    is_confidence_model = models.BooleanField(
        default=False, help_text="The classifier generation uses to score synthetic images."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("launch_run", "Can launch, cancel and resume training runs")]
        constraints = [
            models.UniqueConstraint(
                fields=["is_confidence_model"],
                condition=models.Q(is_confidence_model=True),
                name="one_confidence_model",
            ),
        ]

    def __str__(self) -> str:
        return f"Run {self.pk} ({self.get_kind_display()}{': ' + self.name if self.name else ''})"

    @property
    def uses_synthetic(self) -> bool:
        return bool(self.selection.get("synthetic_datasets")) or self.uses_on_the_fly

    @property
    def uses_on_the_fly(self) -> bool:
        """A classifier that trained on images generated as it ran (never studied)."""
        return (self.config or {}).get("on_the_fly_share", 0) > 0

    @property
    def training_data(self) -> str:
        """What a classifier trained on, in the words the fairness report and exports use."""
        if self.uses_on_the_fly:
            return "with unstudied on-the-fly images"
        return "with synthetic" if self.uses_synthetic else "real only"

    @property
    def folder(self) -> Path:
        """This host's working folder for the artifacts (`jobs.artifacts.local_folder`): what
        a job writes into, and what it reads after fetching from the store."""
        from jobs.artifacts import local_folder

        return local_folder(self.artifacts_dir)

    def lineage(self) -> list[Run]:
        """This run and its ancestors, oldest first: TI -> LoRA -> joint."""
        chain: list[Run] = []
        run: Run | None = self
        while run is not None:
            chain.append(run)
            run = run.parent
        return list(reversed(chain))
