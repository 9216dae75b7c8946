import csv
import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from common.refusals import refused_to_messages
from fairskin.errors import ApplicationError
from fairskin.generation.fst_verdicts import fst_chart
from fairskin.labels import DIAGNOSIS_CHOICES
from fairskin.spreadsheet import safe_row
from generation import selectors, services
from generation.conditioning import batch_conditioning
from generation.forms import HardExampleForm, sent_quotas
from generation.hard_examples import default_model_run, hard_example_batch_create, hard_example_plan
from generation.models import Batch, Sample, Verdict

GALLERY_PAGE = 48


def _batch_context(batch: Batch) -> dict:
    strata = selectors.batch_strata(batch=batch)
    job_states = selectors.batch_job_states(batch=batch)
    running_jobs = selectors.batch_running_jobs(batch=batch)
    calibrated = {name: bool(p.get("calibrated")) for name, p in batch.provenance.items()}
    return {
        "batch": batch,
        "strata": strata,
        "job_states": job_states,
        "running_jobs": running_jobs,
        "running_more": max(0, job_states.get("running", 0) - len(running_jobs)),
        "failed_jobs": list(selectors.batch_failed_jobs(batch=batch).filter(state="failed"))
        if batch.job
        else [],
        "totals": {
            k: sum(r[k] for r in strata) for k in ("quota", "generated", "accepted", "rejected")
        },
        "calibrated": calibrated,
        "report": batch.report,
        "chart": fst_chart(batch.report) if batch.report else None,
        "uncalibrated_fid": not calibrated.get("inception", False),
    }


@login_required
@permission_required("generation.view_batch", raise_exception=True)
def batch_list(request):
    batches = Batch.objects.select_related("model_run", "job")[:100]
    return render(request, "generation/batch_list.html", {"batches": batches})


@login_required
@permission_required("generation.view_batch", raise_exception=True)
def batch_detail(request, batch_id: int):
    batch = get_object_or_404(
        Batch.objects.select_related("model_run", "job", "dataset"), pk=batch_id
    )
    params = request.GET
    dx = params.get("diagnosis") or ""
    fst = params.get("fst") or ""
    verdict = params.get("verdict") or ""
    samples = selectors.batch_gallery(batch=batch, diagnosis=dx, fst=fst, verdict=verdict)
    page = Paginator(samples, GALLERY_PAGE).get_page(params.get("page"))
    query = params.copy()
    query.pop("page", None)
    return render(
        request,
        "generation/batch_detail.html",
        {
            **_batch_context(batch),
            "page": page,
            "query": query.urlencode(),
            "filters": {"diagnosis": dx, "fst": fst, "verdict": verdict},
            "diagnoses": [c for c in DIAGNOSIS_CHOICES if c[0] in batch.diagnoses],
            "verdicts": Verdict.choices,
            "fsts": range(1, 7),
            "reason_counts": selectors.batch_rejection_counts(batch=batch),
            "conditioning": batch_conditioning(batch),
        },
    )


@login_required
@permission_required("generation.view_batch", raise_exception=True)
def batch_live(request, batch_id: int):
    batch = get_object_or_404(Batch.objects.select_related("model_run", "job"), pk=batch_id)
    response = render(request, "generation/_batch_live.html", _batch_context(batch))
    if request.headers.get("HX-Request") and not batch.is_active:
        # The page was rendered while the batch ran: its report and gallery are outside this
        # fragment, so the whole page reloads once the batch has ended.
        response["HX-Refresh"] = "true"
    return response


@login_required
@permission_required("generation.view_batch", raise_exception=True)
def sample_detail(request, sample_id: int):
    sample = get_object_or_404(Sample.objects.select_related("batch", "image"), pk=sample_id)
    return render(
        request,
        "generation/sample_detail.html",
        {
            "sample": sample,
            "batch": sample.batch,
            "calibrated": {
                n: bool(p.get("calibrated")) for n, p in sample.batch.provenance.items()
            },
        },
    )


@require_GET
@login_required
@permission_required("generation.view_batch", raise_exception=True)
def sample_image(request, sample_id: int, variant: str):
    sample = get_object_or_404(Sample.objects.select_related("image"), pk=sample_id)
    field = sample.image.thumbnail if variant == "thumb" else sample.image.preprocessed
    if not field:
        raise Http404("no file")
    response = FileResponse(
        field.open("rb"), content_type="image/jpeg" if variant == "thumb" else "image/png"
    )
    response["Cache-Control"] = "private, max-age=3600"
    return response


@require_GET
@login_required
@permission_required("generation.view_batch", raise_exception=True)
def batch_export(request, batch_id: int):
    """Every sample with its settings, scores and verdict; the report and provenance in JSON."""
    batch = get_object_or_404(Batch, pk=batch_id)
    uncalibrated = selectors.batch_uncalibrated(batch=batch)
    if request.GET.get("format") == "json":
        body = {
            "batch": batch.pk,
            "state": batch.state,
            "report": batch.report,
            "provenance": batch.provenance,
            "reproducibility": batch.reproducibility,
            "uncalibrated": uncalibrated,
            "samples": list(selectors.batch_export_rows(batch=batch)),
        }
        response = HttpResponse(
            json.dumps(body, indent=2, default=str), content_type="application/json"
        )
        response["Content-Disposition"] = f'attachment; filename="batch-{batch.pk}.json"'
        return response
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="batch-{batch.pk}.csv"'
    response.write(
        f"# batch {batch.pk}; uncalibrated (random weights): {', '.join(uncalibrated) or 'none'}\n"
    )
    writer = csv.DictWriter(response, fieldnames=selectors.EXPORT_FIELDS)
    writer.writeheader()
    for row in selectors.batch_export_rows(batch=batch):
        writer.writerow(safe_row(row))
    return response


@require_POST
@login_required
@permission_required("generation.launch_batch", raise_exception=True)
def batch_cancel(request, batch_id: int):
    batch = get_object_or_404(Batch, pk=batch_id)
    with refused_to_messages(request):
        services.batch_cancel(batch=batch, user=request.user)
        messages.success(request, f"Batch {batch.pk} cancelled; its stored images are kept.")
    return redirect("generation:batch", batch_id=batch.pk)


@require_POST
@login_required
@permission_required("generation.launch_batch", raise_exception=True)
def batch_resume(request, batch_id: int):
    batch = get_object_or_404(Batch, pk=batch_id)
    with refused_to_messages(request):
        services.batch_resume(batch=batch, user=request.user)
        messages.success(request, f"Batch {batch.pk} resumed; stored candidates are skipped.")
    return redirect("generation:batch", batch_id=batch.pk)


def _hard_example_data(query, classifier) -> dict:
    """The plan page's form values: the query's, else the defaults (the newest model run
    the classifier's diagnoses cover)."""
    model = query.get("model_run") or ""
    if not model:
        default = default_model_run(classifier)
        model = str(default.pk) if default else ""
    defaults = HardExampleForm.base_fields
    return {
        "model_run": model,
        "target": query.get("target") or defaults["target"].initial,
        "floor": query.get("floor") or defaults["floor"].initial,
        "cap_share": query.get("cap_share") or defaults["cap_share"].initial,
        "min_images": query.get("min_images") or defaults["min_images"].initial,
        "name": query.get("name") or f"hard examples from classifier run {classifier.pk}",
    }


@require_http_methods(["GET", "POST"])
@login_required
@permission_required("generation.launch_batch", raise_exception=True)
def hard_examples(request, run_id: int):
    """A classifier run's validation errors per stratum and the batch they plan, shown before
    launch (GET, or POST with action=plan for other settings); POST with action=launch
    launches that plan with the chosen model and target."""
    classifier = selectors.model_run_get(run_id=run_id)
    if classifier is None:
        raise Http404(f"no run {run_id}")
    posted = request.method == "POST"
    form = HardExampleForm(request.POST if posted else _hard_example_data(request.GET, classifier))
    launch = posted and request.POST.get("action") == "launch"
    plan, refusal = None, ""
    if form.is_valid():
        d = form.cleaned_data
        try:
            plan = hard_example_plan(
                classifier_run=classifier,
                model_run=d["model_run"],
                target=d["target"],
                settings=form.settings(),
            )
            if launch:
                batch = hard_example_batch_create(
                    classifier_run=classifier,
                    model_run=d["model_run"],
                    target=d["target"],
                    settings=form.settings(),
                    expected_quotas=sent_quotas(request.POST.get("quotas", "")),
                    name=d["name"],
                    user=request.user,
                )
                messages.success(
                    request,
                    f"Batch {batch.pk} of hard examples from classifier run {classifier.pk} "
                    "queued on the gpu queue.",
                )
                return redirect("generation:batch", batch_id=batch.pk)
        except ApplicationError as exc:
            refusal = str(exc)
    return render(
        request,
        "generation/hard_examples.html",
        {
            "classifier": classifier,
            "form": form,
            "plan": plan,
            "quotas_json": json.dumps(plan.quotas()) if plan else "",
            "refusal": refusal,
        },
        status=400 if posted and (launch or not form.is_valid()) else 200,
    )
