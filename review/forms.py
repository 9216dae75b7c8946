"""The form a lead opens a study with."""

from django import forms
from django.contrib.auth import get_user_model

from fairskin.review.gate import GateCriteria
from review import selectors
from review.services.study import MAX_SAMPLE, SHARE_PLACEHOLDER, default_instructions

DEFAULT_CRITERIA = GateCriteria()


class StudyForm(forms.Form):
    batch = forms.ModelChoiceField(queryset=selectors.study_batch_choices().none())
    name = forms.CharField(max_length=120, required=False)
    raters = forms.ModelMultipleChoiceField(
        queryset=get_user_model().objects.none(),
        widget=forms.CheckboxSelectMultiple,
        help_text="Three dermatologists (distinct accounts).",
    )
    sample_size = forms.IntegerField(
        min_value=1,
        max_value=MAX_SAMPLE,
        initial=500,
        help_text="Synthetic images, stratified by diagnosis × "
        "skin type in proportion to the batch.",
    )
    control_ratio = forms.FloatField(
        min_value=0,
        max_value=1,
        initial=0.25,
        help_text="Real controls per synthetic image (0.25: one "
        "in four), matched to the same strata.",
    )
    seed = forms.IntegerField(min_value=0, required=False, help_text="Empty: drawn and recorded.")
    warmup_count = forms.IntegerField(
        min_value=0, max_value=50, initial=3, help_text="Unscored practice images first."
    )
    retest_share = forms.FloatField(
        min_value=0, max_value=0.5, initial=0.05, help_text="Share of images shown a second time."
    )
    allow_changes = forms.BooleanField(
        required=False, help_text="Let raters change a submitted rating."
    )
    mean_min = forms.FloatField(
        min_value=1,
        max_value=7,
        initial=DEFAULT_CRITERIA.mean_min,
        label="(a) mean synthetic rating above",
    )
    median_share_min = forms.FloatField(
        min_value=0,
        max_value=1,
        initial=DEFAULT_CRITERIA.median_share_min,
        label="(b) share of synthetic images with median ≥ 4 above",
    )
    low_share_max = forms.FloatField(
        min_value=0,
        max_value=1,
        initial=DEFAULT_CRITERIA.low_share_max,
        label="(c) share with a rating below 3 under",
    )
    use_interval = forms.BooleanField(required=False, label="Judge on the 95% interval bound")
    per_fst = forms.BooleanField(required=False, label="Apply (a) within each skin type")
    instructions = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 10, "cols": 80}),
        required=False,
        help_text=f"Empty: the standard text. The share of real images raters are told is "
        f"computed when the study is prepared, from the images actually drawn (controls, "
        f"synthetic and warm-ups), and put where {SHARE_PLACEHOLDER} stands (or added at the "
        f"end); a text that states a share itself is refused.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        batch, raters = self.fields["batch"], self.fields["raters"]
        assert isinstance(batch, forms.ModelChoiceField)  # as declared above
        assert isinstance(raters, forms.ModelMultipleChoiceField)
        batch.queryset = selectors.study_batch_choices()
        raters.queryset = selectors.study_rater_choices()
        self.fields["instructions"].initial = default_instructions()

    def study_create_kwargs(self) -> dict:
        """The valid form as ``study_create`` takes it (less ``user``), for the page and the
        API alike. The standard text left as it is is no text of the lead's own (None)."""
        d = self.cleaned_data
        text = d["instructions"].strip()
        keys = ("batch", "name", "sample_size", "control_ratio", "seed", "warmup_count")
        return {
            **{key: d[key] for key in keys},
            "raters": list(d["raters"]),
            "retest_share": d["retest_share"],
            "allow_changes": d["allow_changes"],
            "criteria": self.criteria(),
            "instructions": None if text == default_instructions(0.25).strip() else text,
        }

    def criteria(self) -> dict:
        d = self.cleaned_data
        return {
            "mean_min": d["mean_min"],
            "median_share_min": d["median_share_min"],
            "low_share_max": d["low_share_max"],
            "use_interval": d["use_interval"],
            "per_fst": d["per_fst"],
        }
