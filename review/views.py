import json

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from common.refusals import refused_to_messages
from fairskin.errors import ApplicationError
from fairskin.review.gate import GateCriteria
from generation.models import Batch, BatchState
from review import services
from review.models import Assignment, Release, Study, StudyRater, StudyState

DEFAULT_CRITERIA = GateCriteria()


class StudyForm(forms.Form):
    batch = forms.ModelChoiceField(queryset=Batch.objects.none())
    name = forms.CharField(max_length=120, required=False)
    raters = forms.ModelMultipleChoiceField(
        queryset=get_user_model().objects.none(), widget=forms.CheckboxSelectMultiple,
        help_text="Three dermatologists (distinct accounts).")
    sample_size = forms.IntegerField(min_value=1, max_value=services.MAX_SAMPLE, initial=500,
                                     help_text="Synthetic images, stratified by diagnosis × "
                                     "skin type in proportion to the batch.")
    control_ratio = forms.FloatField(min_value=0, max_value=1, initial=0.25,
                                     help_text="Real controls per synthetic image (0.25: one "
                                     "in four), matched to the same strata.")
    seed = forms.IntegerField(min_value=0, required=False, help_text="Empty: drawn and recorded.")
    warmup_count = forms.IntegerField(min_value=0, max_value=50, initial=3,
                                      help_text="Unscored practice images first.")
    retest_share = forms.FloatField(min_value=0, max_value=0.5, initial=0.05,
                                    help_text="Share of images shown a second time.")
    allow_changes = forms.BooleanField(required=False,
                                       help_text="Let raters change a submitted rating.")
    mean_min = forms.FloatField(min_value=1, max_value=7, initial=DEFAULT_CRITERIA.mean_min,
                                label="(a) mean synthetic rating above")
    median_share_min = forms.FloatField(
        min_value=0, max_value=1, initial=DEFAULT_CRITERIA.median_share_min,
        label="(b) share of synthetic images with median ≥ 4 above")
    low_share_max = forms.FloatField(min_value=0, max_value=1,
                                     initial=DEFAULT_CRITERIA.low_share_max,
                                     label="(c) share with a rating below 3 under")
    use_interval = forms.BooleanField(required=False, label="Judge on the 95% interval bound")
    per_fst = forms.BooleanField(required=False, label="Apply (a) within each skin type")
    instructions = forms.CharField(widget=forms.Textarea(attrs={"rows": 10, "cols": 80}),
                                   required=False, help_text="Empty: the standard text, which "
                                   "discloses the share of real images.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["batch"].queryset = Batch.objects.filter(state=BatchState.FINISHED,
                                                             releases__isnull=True,
                                                             rejection__isnull=True)
        self.fields["raters"].queryset = get_user_model().objects.filter(
            groups__name="dermatologist", is_active=True).order_by("username")
        self.fields["instructions"].initial = services.default_instructions(0.25)

    def criteria(self) -> dict:
        d = self.cleaned_data
        return {"mean_min": d["mean_min"], "median_share_min": d["median_share_min"],
                "low_share_max": d["low_share_max"], "use_interval": d["use_interval"],
                "per_fst": d["per_fst"]}


@login_required
@permission_required("review.view_study", raise_exception=True)
def study_list(request):
    studies = Study.objects.select_related("batch", "release")[:100]
    return render(request, "review/study_list.html", {
        "studies": studies, "releases": Release.objects.select_related("study")[:50]})


@login_required
@permission_required("review.add_study", raise_exception=True)
def study_new(request):
    initial = {"batch": request.GET.get("batch")} if request.GET.get("batch") else None
    form = StudyForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        default_text = services.default_instructions(0.25).strip()
        text = d["instructions"].strip()
        try:
            study = services.study_create(
                batch=d["batch"], raters=list(d["raters"]), name=d["name"],
                sample_size=d["sample_size"], control_ratio=d["control_ratio"], seed=d["seed"],
                warmup_count=d["warmup_count"], retest_share=d["retest_share"],
                allow_changes=d["allow_changes"], criteria=form.criteria(),
                instructions=None if text == default_text else text, user=request.user)
        except ApplicationError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Study {study.pk} is being prepared; it opens for "
                                      "rating when its images are blinded.")
            return redirect("review:study", study_id=study.pk)
    return render(request, "review/study_new.html", {"form": form})


GATE_LABELS = [("mean", "(a) mean rating of synthetic images"),
               ("median_share", "(b) share of synthetic images with median ≥ 4"),
               ("low_share", "(c) share of synthetic images with a rating below 3")]


def _gate_rows(gate: dict) -> list[dict]:
    rows = [{"label": label, **gate[key]} for key, label in GATE_LABELS if key in gate]
    finished = gate.get("raters_finished")
    if finished:
        rows.append({"label": "(d) every rater finished", "estimate": finished["n_finished"],
                     "judged": finished["n_finished"], "comparison": "=",
                     "limit": finished["n_raters"], "passed": finished["passed"],
                     "why": ", ".join(finished.get("unfinished") or [])})
    per_fst = gate.get("mean_per_fst")
    if per_fst:
        for fst, row in sorted(per_fst.get("groups", {}).items()):
            rows.append({"label": f"(a) within FST {fst}", **row})
    return rows


@login_required
@permission_required("review.view_study", raise_exception=True)
def study_detail(request, study_id: int):
    study = get_object_or_404(Study.objects.select_related("batch", "job"), pk=study_id)
    context = {"study": study, "progress": services.study_progress(study=study)}
    if study.state == StudyState.CLOSED:
        context["gate"] = study.gate
        context["gate_rows"] = _gate_rows(study.gate.get("gate", {}))
        context["gate_json"] = json.dumps(study.gate, indent=2, default=str)
        context["release"] = Release.objects.filter(study=study).first()
        context["rejection"] = getattr(study.batch, "rejection", None)
    return render(request, "review/study_detail.html", context)


@require_POST
@login_required
@permission_required("review.manage_study", raise_exception=True)
def study_close(request, study_id: int):
    study = get_object_or_404(Study, pk=study_id)
    with refused_to_messages(request):
        services.study_close(study=study, user=request.user)
        messages.success(request, f"Study {study.pk} closed; the gate report is below.")
    return redirect("review:study", study_id=study.pk)


@require_POST
@login_required
@permission_required("review.manage_study", raise_exception=True)
def study_preparation_control(request, study_id: int, action: str):
    """Cancel or resume a study's preparation: the study page owns its job."""
    study = get_object_or_404(Study, pk=study_id)
    service = {"cancel": services.study_preparation_cancel,
               "resume": services.study_preparation_resume}.get(action)
    if service is None:
        raise Http404("unknown action")
    with refused_to_messages(request):
        service(study=study, user=request.user)
        messages.success(request, f"Study {study.pk}: preparation "
                                  f"{'cancelled' if action == 'cancel' else 'queued again'}.")
    return redirect("review:study", study_id=study.pk)


@require_POST
@login_required
@permission_required("review.manage_study", raise_exception=True)
def release_export_resume(request, release_id: int):
    release = get_object_or_404(Release.objects.select_related("export_job"), pk=release_id)
    with refused_to_messages(request):
        services.release_export_resume(release=release, user=request.user)
        messages.success(request, f"Release {release.pk}: the export is being written again.")
    return redirect("review:release", release_id=release.pk)


@require_POST
@login_required
@permission_required("review.manage_study", raise_exception=True)
def batch_approve(request, study_id: int):
    study = get_object_or_404(Study, pk=study_id)
    with refused_to_messages(request) as attempt:
        release = services.batch_approve(study=study, user=request.user,
                                         note=request.POST.get("note", ""))
    if attempt.refused:
        return redirect("review:study", study_id=study.pk)
    messages.success(request, f"Batch {study.batch_id} approved: release {release.pk}; its "
                              "export is being written.")
    return redirect("review:release", release_id=release.pk)


@require_POST
@login_required
@permission_required("review.manage_study", raise_exception=True)
def batch_reject(request, study_id: int):
    study = get_object_or_404(Study.objects.select_related("batch"), pk=study_id)
    with refused_to_messages(request):
        services.batch_reject(batch=study.batch, study=study, user=request.user,
                              reason=request.POST.get("reason", ""))
        messages.success(request, f"Batch {study.batch_id} rejected.")
    return redirect("review:study", study_id=study.pk)


@login_required
@permission_required("review.view_release", raise_exception=True)
def release_detail(request, release_id: int):
    release = get_object_or_404(Release.objects.select_related("study", "batch", "export_job",
                                                               "approved_by"), pk=release_id)
    counts: dict[str, dict[int, int]] = {}
    for entry in release.manifest["images"]:
        row = counts.setdefault(entry["diagnosis"], dict.fromkeys(range(1, 7), 0))
        row[entry["fst"]] += 1
    return render(request, "review/release_detail.html", {
        "release": release, "counts": sorted(counts.items()), "fsts": range(1, 7)})


@require_GET
@login_required
@permission_required("review.view_release", raise_exception=True)
def release_download(request, release_id: int):
    release = get_object_or_404(Release, pk=release_id)
    if not release.export_path:
        raise Http404("the export is not written yet")
    return FileResponse(open(release.export_path, "rb"), as_attachment=True,  # noqa: SIM115
                        filename=f"fairskin-release-{release.pk}.zip")


# --- rating (dermatologists) -----------------------------------------------------------------


def _my_study(request, study_id: int) -> Study:
    if not request.user.has_perm("review.rate_study"):
        raise PermissionDenied
    study = Study.objects.filter(pk=study_id, raters__rater=request.user).first()
    if study is None:
        raise Http404("no such study among your assignments")  # unknown or not yours alike
    return study


@never_cache
@login_required
def rate(request, study_id: int):
    study = _my_study(request, study_id)
    seat = StudyRater.objects.get(study=study, rater=request.user)
    if request.method == "POST" and "accept_instructions" in request.POST:
        seat.instructions_accepted = study.instructions_version
        seat.save(update_fields=["instructions_accepted"])
        return redirect("review:rate", study_id=study.pk)
    queue = services.rater_queue(study=study, rater=request.user)
    return render(request, "review/rate.html", {
        "study": study, "queue": queue, "open": study.state == StudyState.OPEN,
        "instructions_pending": seat.instructions_accepted != study.instructions_version})


BLIND_HEADERS = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff",
                 "Referrer-Policy": "no-referrer"}


@require_GET
@login_required
def blinded_image(request, token: str):
    """An item's pixels for the rater it is assigned to; the same headers for every item."""
    assignment = (Assignment.objects.select_related("item", "study")
                  .filter(token=token).first())
    if assignment is None or assignment.rater_id != request.user.pk \
            or not request.user.has_perm("review.rate_study"):
        raise Http404("no such image")  # the same answer for another rater's token
    if assignment.study.state != StudyState.OPEN:
        raise Http404("no such image")
    with assignment.item.derivative.open("rb") as fh:
        data = fh.read()
    response = HttpResponse(data, content_type="image/jpeg")
    for key, value in BLIND_HEADERS.items():
        response[key] = value
    return response
