import json
from typing import cast

from django import forms
from django.http import QueryDict

from fairskin.generation.hard_example import HardExampleSettings
from fairskin.generation.scoring_config import ScoringConfig
from fairskin.generation.spec import SPEC, Number, Text, Whole
from fairskin.labels import DIAGNOSIS_CHOICES
from generation.selectors import model_runs_usable


def _whole(setting: Whole, **kwargs) -> forms.IntegerField:
    """An integer field with the spec's limits and default (the service checks them again)."""
    kwargs.setdefault("initial", setting.default)
    if setting.multiple_of > 1:
        kwargs["step_size"] = setting.multiple_of
    return forms.IntegerField(min_value=setting.low, max_value=setting.high, **kwargs)


def _number(setting: Number, **kwargs) -> forms.FloatField:
    return forms.FloatField(
        min_value=setting.low, max_value=setting.high, initial=setting.default, **kwargs
    )


def _text(setting: Text, **kwargs) -> forms.CharField:
    return forms.CharField(
        max_length=setting.max_length, required=False, initial=setting.default or None, **kwargs
    )


class BatchLaunchForm(forms.Form):
    """The admin's launch form: initial values and limits from the generation spec."""

    # The queryset is set per form (runs finish while the app runs); none() runs no query.
    model_run = forms.ModelChoiceField(
        queryset=model_runs_usable().none(),
        label="Model run",
        help_text="A finished LoRA or joint run.",
    )
    name = _text(SPEC.name)
    target = _whole(SPEC.target, help_text="Accepted images wanted.")
    diagnoses = forms.MultipleChoiceField(
        choices=[c for c in DIAGNOSIS_CHOICES if c[0] != "OTHER"],
        required=False,
        help_text="None selected: the diagnoses the model was trained on.",
    )
    overgeneration = _number(
        SPEC.overgeneration, help_text="Candidate cap per stratum, × its quota."
    )
    scheduler = forms.ChoiceField(
        choices=[(s, s) for s in SPEC.scheduler.choices], initial=SPEC.scheduler.default
    )
    steps = _whole(SPEC.steps)
    guidance = _number(SPEC.guidance)
    negative_prompt = _text(SPEC.negative_prompt)
    size = _whole(
        SPEC.size, initial=None, required=False, help_text="Empty: the model's native size."
    )
    seed = _whole(SPEC.seed)
    shard_size = _whole(SPEC.shard_size)
    device_batch = _whole(SPEC.device_batch)
    filter_percentile = _number(
        SPEC.filter_percentile,
        required=False,
        help_text="Share (%) of held-out real images each calibrated filter threshold lets "
        "pass (the default for LPIPS, memorization and per-image FID). Empty: "
        f"{SPEC.filter_percentile.default:g}.",
    )
    reference = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Empty: text-to-image. Else img2img from catalog images, as JSON: "
        '{"image_ids": [12, 40]} or a selection {"dataset": "isic", "diagnosis": "MEL", '
        '"fst": 6, "split": "train"}; each stratum draws one of its diagnosis.',
    )
    reference_strength = _number(
        SPEC.reference_strength,
        required=False,
        help_text="How far each output moves from its reference, in (0, 1]. Empty: "
        f"{SPEC.reference_strength.default:g}.",
    )
    reference_mode = forms.ChoiceField(
        choices=[
            ("img2img", "img2img: start from the reference's pixels, at the strength"),
            ("image_prompt", "image prompt: the reference's CLIP embedding through an adapter"),
        ],
        initial=SPEC.reference_mode.default,
        required=False,
        help_text="How the reference images condition the batch. An image prompt needs an "
        "adapter: the model's own (image_prompt on its run) or FAIRSKIN_IP_ADAPTER_DIR.",
    )
    image_prompt_scale = _number(
        SPEC.image_prompt_scale,
        required=False,
        help_text="The image prompt's weight (0 to 2) beside the text. Empty: "
        f"{SPEC.image_prompt_scale.default:g}.",
    )
    label_scale = _number(
        SPEC.label_scale,
        required=False,
        help_text="Class-label guidance beside the text's, for a model trained with label "
        "conditioning: 0 leaves the labels out; above 0 each image is guided towards its "
        "diagnosis and skin type, at a third UNet pass per step. Not with reference images. "
        f"Empty: {SPEC.label_scale.default:g}.",
    )
    scoring = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 16, "cols": 60}),
        help_text="Thresholds as JSON. A threshold is a number (absolute), "
        '{"mode": "calibrated"} (held-out real images; percentile: the filter percentile '
        'unless given) or {"mode": "relative", "percentile": 95} (the reference\'s own values).',
    )

    def __init__(self, *args, query: QueryDict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        cast(forms.ModelChoiceField, self.fields["model_run"]).queryset = model_runs_usable()
        # A link's ?model_run=<id> preselects the model; one that is not usable is said why.
        self.preselect_problems: list[str] = []
        asked = query.get("model_run", "") if query is not None and not self.is_bound else ""
        if asked:
            is_id = asked.isascii() and asked.isdigit() and len(asked) < 19
            run = model_runs_usable().filter(pk=int(asked)).first() if is_id else None
            if run is None:
                self.preselect_problems.append(
                    f"{asked!r} is not a finished LoRA or joint run, so it is not preselected; "
                    "choose the model run below"
                )
            else:
                self.initial["model_run"] = run.pk
        for fst, share in SPEC.fst_distribution.items():
            self.fields[f"fst_{fst}"] = forms.FloatField(
                min_value=0, max_value=1, initial=share, label=f"FST {fst} share"
            )
        self.fields["scoring"].initial = json.dumps(ScoringConfig().to_dict(), indent=2)

    def clean_filter_percentile(self):
        value = self.cleaned_data.get("filter_percentile")
        return SPEC.filter_percentile.default if value is None else value

    def clean_reference(self):
        text = self.cleaned_data.get("reference", "").strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(f"not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise forms.ValidationError("the reference must be a JSON object")
        return value

    def clean_reference_strength(self):
        value = self.cleaned_data.get("reference_strength")
        return SPEC.reference_strength.default if value is None else value

    def clean_reference_mode(self):
        return self.cleaned_data.get("reference_mode") or SPEC.reference_mode.default

    def clean_image_prompt_scale(self):
        value = self.cleaned_data.get("image_prompt_scale")
        return SPEC.image_prompt_scale.default if value is None else value

    def clean_label_scale(self):
        value = self.cleaned_data.get("label_scale")
        return SPEC.label_scale.default if value is None else value

    def clean_scoring(self):
        try:
            value = json.loads(self.cleaned_data["scoring"])
        except ValueError as exc:  # JSONDecodeError, or a number over 4,300 digits
            raise forms.ValidationError(f"not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise forms.ValidationError("scoring settings must be a JSON object")
        return value

    def distribution(self) -> dict[int, float]:
        return {fst: self.cleaned_data[f"fst_{fst}"] for fst in SPEC.fst_distribution}


HARD_DEFAULTS = HardExampleSettings()


class HardExampleForm(forms.Form):
    """The hard-example plan's settings and launch: model, target, bounds. The page posts the
    quotas it showed beside them (`sent_quotas`); the service plans again and refuses a launch
    whose quotas differ."""

    model_run = forms.ModelChoiceField(
        queryset=model_runs_usable().none(),
        label="Model run",
        help_text="A finished LoRA or joint run of diagnoses the classifier was validated on.",
    )
    target = _whole(SPEC.target, help_text="Accepted images wanted over all strata.")
    floor = forms.IntegerField(
        min_value=0,
        max_value=SPEC.target.high,
        initial=HARD_DEFAULTS.floor,
        help_text="Images every stratum gets, however few its errors.",
    )
    cap_share = forms.FloatField(
        min_value=0.01,
        max_value=1,
        initial=HARD_DEFAULTS.cap_share,
        label="Cap share",
        help_text="The most one stratum may get, as a share of the target.",
    )
    min_images = forms.IntegerField(
        min_value=1,
        max_value=100_000,
        initial=HARD_DEFAULTS.min_images,
        label="Minimum validation images",
        help_text="A stratum with fewer is not judged: its quota stays at the floor.",
    )
    name = _text(SPEC.name)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        cast(forms.ModelChoiceField, self.fields["model_run"]).queryset = model_runs_usable()

    def settings(self) -> HardExampleSettings:
        d = self.cleaned_data
        return HardExampleSettings(
            floor=d["floor"], cap_share=d["cap_share"], min_images=d["min_images"]
        )


def sent_quotas(text: str) -> dict[str, object]:
    """The quotas a plan page posted back ({} when absent or unreadable: never the plan)."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
