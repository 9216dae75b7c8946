import csv
import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from catalog.models import DIAGNOSIS_CHOICES
from common.refusals import refused_to_messages
from fairskin.labels import fst_roman
from fairskin.spreadsheet import safe_row
from generation import selectors, services
from generation.models import Batch, Sample, Verdict

GALLERY_PAGE = 48


def _fid_chart(report: dict, height: int = 150) -> dict | None:
    """Bars of FID per skin type (at equal counts where available), limits drawn as lines."""
    rows = [r for r in report.get("fst", []) if r.get("fid") is not None]
    if not rows:
        return None
    values = [r["fid_equal_n"] if r.get("fid_equal_n") is not None else r["fid"] for r in rows]
    top = max(max(values), 25.0) * 1.1
    bar, gap = 34, 16
    bars = []
    for i, (row, value) in enumerate(zip(rows, values, strict=True)):
        h = round(value / top * height, 1)
        bars.append({"x": i * (bar + gap), "y": round(height - h, 1), "h": h, "value": value,
                     "label": fst_roman(row["fst"]), "mid": i * (bar + gap) + bar / 2,
                     "limit_y": round(height - (25.0 if row["fst"] == 6 else 20.0) / top
                                      * height, 1)})
    return {"bars": bars, "bar": bar, "height": height,
            "width": len(rows) * (bar + gap)}


def _batch_context(batch: Batch) -> dict:
    strata = services.batch_strata(batch)
    job_states = selectors.batch_job_states(batch=batch)
    running_jobs = selectors.batch_running_jobs(batch=batch)
    calibrated = {name: bool(p.get("calibrated")) for name, p in batch.provenance.items()}
    return {"batch": batch, "strata": strata,
            "job_states": job_states, "running_jobs": running_jobs,
            "running_more": max(0, job_states.get("running", 0) - len(running_jobs)),
            "failed_jobs": list(services.batch_failed_jobs(batch).filter(state="failed"))
            if batch.job else [],
            "totals": {k: sum(r[k] for r in strata) for k in ("quota", "generated",
                                                              "accepted", "rejected")},
            "calibrated": calibrated, "report": batch.report,
            "chart": _fid_chart(batch.report) if batch.report else None,
            "uncalibrated_fid": not calibrated.get("inception", False)}


@login_required
@permission_required("generation.view_batch", raise_exception=True)
def batch_list(request):
    batches = Batch.objects.select_related("model_run", "job")[:100]
    return render(request, "generation/batch_list.html", {"batches": batches})


@login_required
@permission_required("generation.view_batch", raise_exception=True)
def batch_detail(request, batch_id: int):
    batch = get_object_or_404(Batch.objects.select_related("model_run", "job", "dataset"),
                              pk=batch_id)
    params = request.GET
    samples = Sample.objects.filter(batch=batch).select_related("image")
    dx = params.get("diagnosis") or ""
    fst = params.get("fst") or ""
    verdict = params.get("verdict") or ""
    if dx:
        samples = samples.filter(diagnosis=dx)
    if fst in {"1", "2", "3", "4", "5", "6"}:
        samples = samples.filter(fst=int(fst))
    if verdict in Verdict.values:
        samples = samples.filter(verdict=verdict)
    page = Paginator(samples.order_by("diagnosis", "fst", "index"), GALLERY_PAGE).get_page(
        params.get("page"))
    query = params.copy()
    query.pop("page", None)
    reasons = (Sample.objects.filter(batch=batch, verdict=Verdict.REJECTED)
               .values_list("reasons", flat=True))
    reason_counts: dict[str, int] = {}
    for listed in reasons.iterator(chunk_size=1000):
        for reason in listed:
            kind = reason.split(" ")[0] if reason else "?"
            reason_counts[kind] = reason_counts.get(kind, 0) + 1
    return render(request, "generation/batch_detail.html", {
        **_batch_context(batch), "page": page, "query": query.urlencode(),
        "filters": {"diagnosis": dx, "fst": fst, "verdict": verdict},
        "diagnoses": [c for c in DIAGNOSIS_CHOICES if c[0] in batch.diagnoses],
        "verdicts": Verdict.choices, "fsts": range(1, 7),
        "reason_counts": sorted(reason_counts.items(), key=lambda kv: -kv[1])})


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
    return render(request, "generation/sample_detail.html", {
        "sample": sample, "batch": sample.batch,
        "calibrated": {n: bool(p.get("calibrated")) for n, p in sample.batch.provenance.items()}})


@require_GET
@login_required
@permission_required("generation.view_batch", raise_exception=True)
def sample_image(request, sample_id: int, variant: str):
    sample = get_object_or_404(Sample.objects.select_related("image"), pk=sample_id)
    field = sample.image.thumbnail if variant == "thumb" else sample.image.preprocessed
    if not field:
        raise Http404("no file")
    response = FileResponse(field.open("rb"),
                            content_type="image/jpeg" if variant == "thumb" else "image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response


EXPORT_FIELDS = ["sample_id", "image_id", "diagnosis", "fst", "index", "seed", "verdict",
                 "reasons", "prompt", "negative_prompt", "steps", "guidance", "scheduler",
                 "model_runs", "brightness", "lpips_real", "memorization_lpips", "confidence",
                 "fid", "sha256", "file"]


@require_GET
@login_required
@permission_required("generation.view_batch", raise_exception=True)
def batch_export(request, batch_id: int):
    """Every sample with its settings, scores and verdict; the report and provenance in JSON."""
    batch = get_object_or_404(Batch, pk=batch_id)
    samples = Sample.objects.filter(batch=batch).select_related("image").order_by(
        "diagnosis", "fst", "index")

    def row(s: Sample) -> dict:
        return {"sample_id": s.pk, "image_id": s.image_id, "diagnosis": s.diagnosis,
                "fst": s.fst, "index": s.index, "seed": s.seed, "verdict": s.verdict,
                "reasons": "; ".join(s.reasons), "prompt": s.prompt,
                "negative_prompt": s.negative_prompt, "steps": s.steps,
                "guidance": s.guidance, "scheduler": s.scheduler,
                "model_runs": " ".join(str(r) for r in s.model_runs),
                **{k: s.metrics.get(k) for k in ("brightness", "lpips_real",
                                                 "memorization_lpips", "confidence", "fid")},
                "sha256": s.image.sha256, "file": s.image.preprocessed.name}

    if request.GET.get("format") == "json":
        body = {"batch": batch.pk, "state": batch.state, "report": batch.report,
                "provenance": batch.provenance,
                "reproducibility": batch.reproducibility,
                "uncalibrated": sorted(n for n, p in batch.provenance.items()
                                       if not p.get("calibrated")),
                "samples": [row(s) for s in samples.iterator(chunk_size=500)]}
        response = HttpResponse(json.dumps(body, indent=2, default=str),
                                content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="batch-{batch.pk}.json"'
        return response
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="batch-{batch.pk}.csv"'
    uncalibrated = sorted(n for n, p in batch.provenance.items() if not p.get("calibrated"))
    response.write(f"# batch {batch.pk}; uncalibrated (random weights): "
                   f"{', '.join(uncalibrated) or 'none'}\n")
    writer = csv.DictWriter(response, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    for s in samples.iterator(chunk_size=500):
        writer.writerow(safe_row(row(s)))
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
