import json
from typing import Any, cast

from django import forms
from django.conf import settings
from django.http import QueryDict

from catalog.selectors import datasets_all, datasets_synthetic
from fairskin.classifier.config import ClassifierConfig
from fairskin.diffusion.config import TrainConfig
from fairskin.labels import DIAGNOSIS_CHOICES
from training.models import PARENT_KIND, Run, RunKind
from training.selectors import runs_finished

# A dataset the catalog marks for textual inversion only (catalog's AllowedUse value).
TEXTUAL_INVERSION_ONLY = "textual_inversion_only"


def kind_defaults() -> dict[str, dict[str, Any]]:
    """Each kind's default settings as the settings box shows them (without ``kind``)."""
    out: dict[str, dict[str, Any]] = {}
    for kind in RunKind.values:
        if kind == RunKind.CLASSIFIER:
            out[kind] = ClassifierConfig().to_dict()
        else:
            out[kind] = {k: v for k, v in TrainConfig.defaults(kind).items() if k != "kind"}
    return out


def kind_mismatch(kind: str, config: dict[str, Any]) -> str | None:
    """Why ``config`` cannot train a ``kind`` run when its unknown settings are another kind's,
    or it is another kind's defaults untouched (the Kind was changed but the settings box was
    not); None otherwise (unknown settings of no kind are left to the service, which names
    them)."""
    defaults = kind_defaults()
    unknown = set(config) - set(defaults[kind])
    owners = [k for k in RunKind.values if k != kind and unknown <= set(defaults[k])]
    same_as = [k for k in RunKind.values if k != kind and config == defaults[k]]
    if not unknown and same_as and config != defaults[kind]:
        # TI, LoRA and joint share their setting names: another kind's defaults, untouched,
        # are as surely a Kind changed without its settings (steps, learning rate, schedule).
        return (
            f"these are the {RunKind(same_as[0]).label} defaults, not the "
            f"{RunKind(kind).label} ones: load the {RunKind(kind).label} defaults (the kind "
            "links above the form), or change a setting if these values are meant."
        )
    if not unknown or not owners:
        return None
    owner_labels = [RunKind(k).label for k in owners]
    owned_by = (
        owner_labels[0]
        if len(owner_labels) == 1
        else ", ".join(owner_labels[:-1]) + " or " + owner_labels[-1]
    )
    return (
        f"these {len(unknown)} settings are for a {owned_by} run, not a "
        f"{RunKind(kind).label} run: {', '.join(sorted(unknown))}. The settings box still "
        f"holds another kind's settings: load the {RunKind(kind).label} defaults (the kind "
        "links above the form) or remove these settings."
    )


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

    def __init__(
        self, *args, kind: str = "textual_inversion", query: QueryDict | None = None, **kwargs
    ):
        super().__init__(*args, **kwargs)
        cast(forms.ModelChoiceField, self.fields["parent"]).queryset = runs_finished().filter(
            kind__in=[RunKind.TEXTUAL_INVERSION, RunKind.LORA]
        )
        cast(forms.ModelChoiceField, self.fields["datasets"]).queryset = datasets_all()
        cast(
            forms.ModelChoiceField, self.fields["synthetic_datasets"]
        ).queryset = datasets_synthetic()
        # Every kind's defaults: the page swaps the settings box to them when the Kind changes.
        self.kind_defaults = kind_defaults()
        self.fields["config"].initial = json.dumps(self.kind_defaults[kind], indent=2)
        self.fields["kind"].initial = kind
        self.fields["base_model"].initial = settings.FAIRSKIN_BASE_MODEL
        # What a link asked to preselect but could not be (shown above the form).
        self.preselect_problems: list[str] = []
        if query is not None and not self.is_bound:
            self._preselect(kind, query)

    def _preselect(self, kind: str, query: QueryDict) -> None:
        """Initial values from a link (``?parent=``, ``?datasets=``, ``?synthetic_datasets=``),
        each checked: what does not fit is left out and said why."""
        parent = self._preselect_parent(kind, query.get("parent", ""))
        if parent is not None:
            self.initial["parent"] = parent.pk
            selection = parent.selection or {}
            names = [
                d.name
                for d in datasets_all().filter(name__in=selection.get("datasets", []))
                if kind == RunKind.TEXTUAL_INVERSION or d.allowed_use != TEXTUAL_INVERSION_ONLY
            ]
            if names and "datasets" not in query:
                self.initial["datasets"] = names
                for key in ("diagnoses", "fsts", "split"):
                    if selection.get(key):
                        self.initial[key] = selection[key]
        for key, queryset, what in (
            ("datasets", datasets_all(), "dataset"),
            ("synthetic_datasets", datasets_synthetic(), "synthetic dataset"),
        ):
            asked = query.getlist(key)
            found = set(queryset.filter(name__in=asked).values_list("name", flat=True))
            if found:
                self.initial[key] = sorted(found)
            for name in sorted(set(asked) - found):
                self.preselect_problems.append(f"there is no {what} named {name!r}")

    def _preselect_parent(self, kind: str, value: str) -> Run | None:
        if not value:
            return None
        expected = PARENT_KIND.get(kind)
        if expected is None:
            self.preselect_problems.append(
                f"a {RunKind(kind).label} run takes no parent run; run {value} is not used"
            )
            return None
        is_id = value.isascii() and value.isdigit() and len(value) < 19
        parent = runs_finished().filter(pk=int(value), kind=expected).first() if is_id else None
        if parent is None:
            self.preselect_problems.append(
                f"{value!r} is not a finished {RunKind(expected).label} run, so it is not "
                "preselected as the parent; choose one below"
            )
        return parent

    def clean_config(self):
        try:
            value = json.loads(self.cleaned_data["config"])
        except ValueError as exc:  # JSONDecodeError, or a number over 4,300 digits
            raise forms.ValidationError(f"not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise forms.ValidationError("settings must be a JSON object")
        value.pop("kind", None)
        return value

    def run_create_kwargs(self) -> dict[str, Any]:
        """The valid form as ``training.services.run_create`` takes it (less ``user``): the
        admin's launch page and the API launch runs alike."""
        d = self.cleaned_data
        return {
            "kind": d["kind"],
            "name": d["name"],
            "parent": d["parent"],
            "base_model": d["base_model"] or None,
            "config": d["config"],
            "selection": {
                "datasets": [ds.name for ds in d["datasets"]],
                "diagnoses": d["diagnoses"],
                "fsts": d["fsts"] or list(range(1, 7)),
                "split": d["split"],
                "synthetic_datasets": [ds.name for ds in d["synthetic_datasets"]],
            },
        }

    def clean(self):
        super().clean()
        data = self.cleaned_data
        kind, config = data.get("kind"), data.get("config")
        if kind in RunKind.values and isinstance(config, dict):
            problem = kind_mismatch(kind, config)
            if problem:
                self.add_error("config", problem)
        return data
