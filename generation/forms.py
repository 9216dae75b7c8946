import json

from django import forms

from catalog.models import DIAGNOSIS_CHOICES
from fairskin.generation.options import (
    DEFAULT_GUIDANCE,
    DEFAULT_NEGATIVE_PROMPT,
    DEFAULT_STEPS,
    SCHEDULERS,
)
from fairskin.generation.plan import DEFAULT_FST_DISTRIBUTION, DEFAULT_OVERGENERATION
from fairskin.generation.scoring_config import ScoringConfig
from training.models import Run, RunKind
from training.selectors import runs_finished


class BatchLaunchForm(forms.Form):
    """The admin's launch form, prefilled with the planning document's defaults."""

    model_run = forms.ModelChoiceField(queryset=Run.objects.none(), label="Model run",
                                       help_text="A finished LoRA or joint run.")
    name = forms.CharField(max_length=120, required=False)
    target = forms.IntegerField(min_value=1, initial=60, help_text="Accepted images wanted.")
    diagnoses = forms.MultipleChoiceField(
        choices=[c for c in DIAGNOSIS_CHOICES if c[0] != "OTHER"], required=False,
        help_text="None selected: the diagnoses the model was trained on.")
    overgeneration = forms.FloatField(min_value=1, initial=DEFAULT_OVERGENERATION,
                                      help_text="Candidate cap per stratum, × its quota.")
    scheduler = forms.ChoiceField(choices=[(s, s) for s in SCHEDULERS], initial="ddim")
    steps = forms.IntegerField(min_value=1, max_value=1000, initial=DEFAULT_STEPS)
    guidance = forms.FloatField(min_value=0, max_value=50, initial=DEFAULT_GUIDANCE)
    negative_prompt = forms.CharField(max_length=500, required=False,
                                      initial=DEFAULT_NEGATIVE_PROMPT)
    size = forms.IntegerField(min_value=8, max_value=1024, required=False,
                              help_text="Empty: the model's native size.")
    seed = forms.IntegerField(min_value=0, max_value=2**32 - 1, initial=0)
    shard_size = forms.IntegerField(min_value=1, max_value=10_000, initial=64)
    device_batch = forms.IntegerField(min_value=1, max_value=256, initial=8)
    scoring = forms.CharField(widget=forms.Textarea(attrs={"rows": 16, "cols": 60}),
                              help_text="Thresholds as JSON. A threshold is a number or "
                              '{"value": v, "mode": "relative", "percentile": 95}.')

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model_run"].queryset = runs_finished().filter(
            kind__in=[RunKind.LORA, RunKind.JOINT])
        for fst, share in DEFAULT_FST_DISTRIBUTION.items():
            self.fields[f"fst_{fst}"] = forms.FloatField(min_value=0, max_value=1,
                                                         initial=share, label=f"FST {fst} share")
        self.fields["scoring"].initial = json.dumps(ScoringConfig().to_dict(), indent=2)

    def clean_scoring(self):
        try:
            value = json.loads(self.cleaned_data["scoring"])
        except ValueError as exc:  # JSONDecodeError, or a number over 4,300 digits
            raise forms.ValidationError(f"not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise forms.ValidationError("scoring settings must be a JSON object")
        return value

    def distribution(self) -> dict[int, float]:
        return {fst: self.cleaned_data[f"fst_{fst}"] for fst in DEFAULT_FST_DISTRIBUTION}
