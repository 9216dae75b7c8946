import json
from typing import cast

from django import forms
from django.conf import settings

from catalog.selectors import datasets_all, datasets_synthetic
from fairskin.classifier.config import ClassifierConfig
from fairskin.diffusion.config import TrainConfig
from fairskin.labels import DIAGNOSIS_CHOICES
from training.models import Run, RunKind
from training.selectors import runs_finished


class RunLaunchForm(forms.Form):
    """The admin's launch form, prefilled with the planning document's defaults."""

    kind = forms.ChoiceField(choices=RunKind.choices)
    name = forms.CharField(max_length=120, required=False)
    parent = forms.ModelChoiceField(
        queryset=Run.objects.none(),
        required=False,
        help_text="LoRA: a textual-inversion run; joint: a LoRA run.",
    )
    base_model = forms.CharField(
        max_length=300,
        required=False,
        help_text="tiny, sd15-random, a diffusers folder or a hub id; "
        "empty: the parent's, else FAIRSKIN_BASE_MODEL.",
    )
    datasets = forms.ModelMultipleChoiceField(queryset=datasets_all().none(), to_field_name="name")
    diagnoses = forms.MultipleChoiceField(
        choices=DIAGNOSIS_CHOICES, required=False, help_text="None selected: all."
    )
    synthetic_datasets = forms.ModelMultipleChoiceField(
        queryset=datasets_synthetic().none(),
        to_field_name="name",
        required=False,
        help_text="Classifier runs: synthetic images to mix in (none: a real-only baseline).",
    )
    fsts = forms.TypedMultipleChoiceField(
        choices=[(i, f"FST {i}") for i in range(1, 7)],
        coerce=int,
        required=False,
        label="Skin types",
    )
    split = forms.ChoiceField(
        choices=[("train", "train"), ("val", "val"), ("test", "test"), ("any", "any")],
        initial="train",
    )
    config = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 22, "cols": 60}),
        help_text="Run settings as JSON; defaults shown for the kind.",
    )

    def __init__(self, *args, kind: str = "textual_inversion", **kwargs):
        super().__init__(*args, **kwargs)
        cast(forms.ModelChoiceField, self.fields["parent"]).queryset = runs_finished().filter(
            kind__in=[RunKind.TEXTUAL_INVERSION, RunKind.LORA]
        )
        cast(forms.ModelChoiceField, self.fields["datasets"]).queryset = datasets_all()
        cast(
            forms.ModelChoiceField, self.fields["synthetic_datasets"]
        ).queryset = datasets_synthetic()
        if kind == RunKind.CLASSIFIER:
            defaults = ClassifierConfig().to_dict()
        else:
            defaults = {k: v for k, v in TrainConfig.defaults(kind).items() if k != "kind"}
        self.fields["config"].initial = json.dumps(defaults, indent=2)
        self.fields["kind"].initial = kind
        self.fields["base_model"].initial = settings.FAIRSKIN_BASE_MODEL

    def clean_config(self):
        try:
            value = json.loads(self.cleaned_data["config"])
        except ValueError as exc:  # JSONDecodeError, or a number over 4,300 digits
            raise forms.ValidationError(f"not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise forms.ValidationError("settings must be a JSON object")
        value.pop("kind", None)
        return value
