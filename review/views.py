from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import content_disposition_header
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from common.refusals import refused_to_messages
from fairskin.errors import ApplicationError
from fairskin.review.blinding import SERVED_CONTENT_TYPE
from fairskin.store.errors import StoreError
from jobs import artifacts
from review import selectors
from review.forms import StudyForm
from review.gate_display import gate_display
from review.models import Kind, Rating, Release, Study, StudyState
from review.services import gate as gate_services
from review.services import rating as rating_services
from review.services import release as release_services
from review.services import study as study_services


@login_required
@permission_required("review.view_study", raise_exception=True)
def study_list(request):
    return render(
        request,
        "review/study_list.html",
        {"studies": selectors.study_list(), "releases": selectors.release_list()},
    )


@login_required
@permission_required("review.add_study", raise_exception=True)
def study_new(request):
    initial = {"batch": request.GET.get("batch")} if request.GET.get("batch") else None
    form = StudyForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            study = study_services.study_create(**form.study_create_kwargs(), user=request.user)
        except ApplicationError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request,
                f"Study {study.pk} is being prepared; it opens for "
                "rating when its images are blinded.",
            )
            return redirect("review:study", study_id=study.pk)
    return render(request, "review/study_new.html", {"form": form})


# While a study is preparing or open, its page polls this fragment (review:live).
LIVE_STUDY_STATES = {StudyState.PREPARING, StudyState.OPEN}


def _study_live_context(study: Study) -> dict:
    progress = selectors.study_progress(study=study)
    return {
        "study": study,
        "progress": progress,
        "outlook": selectors.study_close_outlook(study=study, progress=progress),
        "live": study.state in LIVE_STUDY_STATES,
    }


@login_required
@permission_required("review.view_study", raise_exception=True)
def study_detail(request, study_id: int):
    study = get_object_or_404(Study.objects.select_related("batch", "job"), pk=study_id)
    context = _study_live_context(study)
    context["accepted"] = selectors.batch_accepted_count(batch_id=study.batch_id)
    context["audit_power"] = selectors.study_audit_power(study=study)
    gate = selectors.study_gate_report(study=study)
    if gate is not None:
        context["gate"] = gate
        # The stored report as a lead reads it; the histograms count the study's scored
        # ratings, which closing froze (the report itself is never recomputed).
        scored = Rating.objects.filter(study=study, kind=Kind.SCORED).values_list(
            "rater_id", "item__origin", "score"
        )
        context["shown"] = gate_display(gate, ((str(r), o, s) for r, o, s in scored))
        context["release"] = selectors.study_release(study=study)
        context["rejection"] = getattr(study.batch, "rejection", None)
    return render(request, "review/study_detail.html", context)


@login_required
@permission_required("review.view_study", raise_exception=True)
def study_live(request, study_id: int):
    """The live part of the study page: state, progress counts, what closing now would do."""
    study = get_object_or_404(Study.objects.select_related("job"), pk=study_id)
    response = render(request, "review/_study_live.html", _study_live_context(study))
    if request.headers.get("HX-Request") and request.GET.get("state", study.state) != study.state:
        # The page was rendered in another state: its forms and gate sit outside this fragment.
        response["HX-Refresh"] = "true"
    return response


def _confirmed(request, refused: str) -> bool:
    """Closing, approving and rejecting are final: each form carries a required checkbox, and a
    post without it (no browser check, a hand-made form) is refused here, changing nothing."""
    if request.POST.get("confirm") == "yes":
        return True
    messages.error(request, f"{refused}: tick the box that confirms it first (it is final).")
    return False


@require_POST
@login_required
@permission_required("review.manage_study", raise_exception=True)
def study_close(request, study_id: int):
    study = get_object_or_404(Study, pk=study_id)
    if not _confirmed(request, f"Study {study.pk} was not closed"):
        return redirect("review:study", study_id=study.pk)
    with refused_to_messages(request):
        gate_services.study_close(study=study, user=request.user)
        messages.success(request, f"Study {study.pk} closed; the gate report is below.")
    return redirect("review:study", study_id=study.pk)


@require_POST
@login_required
@permission_required("review.manage_study", raise_exception=True)
def study_preparation_control(request, study_id: int, action: str):
    """Cancel or resume a study's preparation: the study page owns its job."""
    study = get_object_or_404(Study, pk=study_id)
    service = {
        "cancel": study_services.study_preparation_cancel,
        "resume": study_services.study_preparation_resume,
    }.get(action)
    if service is None:
        raise Http404("unknown action")
    with refused_to_messages(request):
        service(study=study, user=request.user)
        messages.success(
            request,
            f"Study {study.pk}: preparation "
            f"{'cancelled' if action == 'cancel' else 'queued again'}.",
        )
    return redirect("review:study", study_id=study.pk)


@require_POST
@login_required
@permission_required("review.manage_study", raise_exception=True)
def release_export_resume(request, release_id: int):
    release = get_object_or_404(Release.objects.select_related("export_job"), pk=release_id)
    with refused_to_messages(request):
        release_services.release_export_resume(release=release, user=request.user)
        messages.success(request, f"Release {release.pk}: the export is being written again.")
    return redirect("review:release", release_id=release.pk)


@require_POST
@login_required
@permission_required("review.manage_study", raise_exception=True)
def release_approve(request, study_id: int):
    study = get_object_or_404(Study, pk=study_id)
    if not _confirmed(request, f"Batch {study.batch_id} was not approved"):
        return redirect("review:study", study_id=study.pk)
    with refused_to_messages(request) as attempt:
        release = release_services.release_approve(
            study=study, user=request.user, note=request.POST.get("note", "")
        )
    if attempt.refused:
        return redirect("review:study", study_id=study.pk)
    messages.success(
        request,
        f"Batch {study.batch_id} approved: release {release.pk}; its export is being written.",
    )
    return redirect("review:release", release_id=release.pk)


@require_POST
@login_required
@permission_required("review.manage_study", raise_exception=True)
def release_reject(request, study_id: int):
    study = get_object_or_404(Study.objects.select_related("batch"), pk=study_id)
    if not _confirmed(request, f"Batch {study.batch_id} was not rejected"):
        return redirect("review:study", study_id=study.pk)
    with refused_to_messages(request):
        release_services.release_reject(
            batch=study.batch, study=study, user=request.user, reason=request.POST.get("reason", "")
        )
        messages.success(request, f"Batch {study.batch_id} rejected.")
    return redirect("review:study", study_id=study.pk)


def _release_export_live(release: Release) -> bool:
    """Whether the export is still being written (the release page polls until it is not)."""
    job = release.export_job
    return not release.export_path and job is not None and not job.is_terminal


@login_required
@permission_required("review.view_release", raise_exception=True)
def release_detail(request, release_id: int):
    release = get_object_or_404(
        Release.objects.select_related("study", "batch", "export_job", "approved_by"), pk=release_id
    )
    return render(
        request,
        "review/release_detail.html",
        {
            "release": release,
            "counts": selectors.release_image_counts(release=release),
            "fsts": range(1, 7),
            "live": _release_export_live(release),
        },
    )


@login_required
@permission_required("review.view_release", raise_exception=True)
def release_live(request, release_id: int):
    """The live part of the release page: the export's state, until it is written or ends."""
    release = get_object_or_404(Release.objects.select_related("export_job"), pk=release_id)
    return render(
        request,
        "review/_release_live.html",
        {"release": release, "live": _release_export_live(release)},
    )


@require_GET
@login_required
@permission_required("review.view_release", raise_exception=True)
def release_download(request, release_id: int):
    release = get_object_or_404(Release, pk=release_id)
    if not release.export_path:
        raise Http404("the export is not written yet")
    try:  # streamed from the store with this view's permission check, never a bucket URL
        chunks = artifacts.open_object(release.export_path)
    except StoreError as exc:
        raise Http404(f"the export is not in the store: {exc}") from exc
    response = StreamingHttpResponse(chunks, content_type="application/zip")
    name = f"fairskin-release-{release.pk}.zip"
    response["Content-Disposition"] = content_disposition_header(True, name) or "attachment"
    return response


# --- rating (dermatologists) -----------------------------------------------------------------


def _my_study(request, study_id: int) -> Study:
    if not request.user.has_perm("review.rate_study"):
        raise PermissionDenied
    study = selectors.rater_study(study_id=study_id, rater=request.user)
    if study is None:
        raise Http404("no such study among your assignments")  # unknown or not yours alike
    return study


@never_cache
@login_required
def rate(request, study_id: int):
    study = _my_study(request, study_id)
    if request.method == "POST" and "accept_instructions" in request.POST:
        rating_services.rater_instructions_accept(
            study=study, rater=request.user, version=study.instructions_version
        )
        return redirect("review:rate", study_id=study.pk)
    queue = rating_services.rater_queue(study=study, rater=request.user)
    return render(
        request,
        "review/rate.html",
        {
            "study": study,
            "queue": queue,
            "open": study.state == StudyState.OPEN,
            "instructions_pending": selectors.rater_instructions_pending(
                study=study, rater=request.user
            ),
        },
    )


BLIND_HEADERS = {
    "Cache-Control": "private, no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@require_GET
@login_required
def blinded_image(request, token: str):
    """An item's pixels for the rater it is assigned to; the same headers for every item."""
    assignment = selectors.blinded_assignment(token=token, rater=request.user)
    if assignment is None or not request.user.has_perm("review.rate_study"):
        raise Http404("no such image")  # the same answer for another rater's token
    with assignment.item.derivative.open("rb") as fh:
        data = fh.read()
    # Every derivative is an uncompressed PNG of one length (fairskin.review.blinding), so no
    # header varies: one Content-Type and Content-Length, no validators, no file name.
    response = HttpResponse(data, content_type=SERVED_CONTENT_TYPE)
    for key, value in BLIND_HEADERS.items():
        response[key] = value
    return response
