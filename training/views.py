import csv
import json
from pathlib import Path, PurePosixPath
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.http import FileResponse, Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET, require_POST

from common.refusals import refused_to_messages
from fairskin.charts import Slots, ValueAxis
from fairskin.spreadsheet import safe_row
from fairskin.store.errors import StoreError
from jobs import artifacts
from training import fairness_verdicts, reports, run_display, selectors, services
from training.models import Run, RunKind


def _latest_grid(run_dir: Path | None) -> Path | None:
    grids = sorted((run_dir / "validation").glob("step-*.png")) if run_dir else []
    return grids[-1] if grids else None


def _run_context(request, run: Run) -> dict:
    return {
        "run": run,
        "job": run.job,
        "lineage": run.lineage(),
        "children": run.children.all(),
        "per_skin_type": run_display.per_skin_type(run.evaluation or {}),
        "next_steps": run_display.next_steps(run, request.user),
        **_artifact_context(run),
    }


def _artifact_context(run: Run) -> dict:
    """What the page shows from the run's folder, read from the store (fetched to this host
    on a host that did not train it). A store that cannot be read is said, not a 500."""
    try:
        run_dir = reports.page_folder(run)
        grid = _latest_grid(run_dir)
        return {
            "artifacts_location": artifacts.uri(run.artifacts_dir) if run.artifacts_dir else "",
            "loss_chart": run_display.loss_chart(run_dir) if run_dir else None,
            "grid_step": grid.stem.removeprefix("step-").lstrip("0") if grid else None,
            "files": run_display.artifact_links(run),
            "trainable_parameters": run_display.trainable_parameters(reports.training_report(run)),
            "on_the_fly": run_display.on_the_fly(run),
        }
    except StoreError as exc:
        return {
            "artifacts_location": run.artifacts_dir,
            "store_error": str(exc),
            "files": [],
            "on_the_fly": None,
        }


@login_required
@permission_required("training.view_run", raise_exception=True)
def run_list(request):
    runs = Run.objects.select_related("job", "parent__parent")[:100]
    return render(request, "training/run_list.html", {"runs": runs})


@login_required
@permission_required("training.view_run", raise_exception=True)
def run_detail(request, run_id: int):
    run = get_object_or_404(Run.objects.select_related("job", "parent__parent"), pk=run_id)
    # Settings as JSON, the form the launch form and `--set` take them in.
    as_json = {
        "config_json": json.dumps(run.config, indent=2, sort_keys=True),
        "selection_json": json.dumps(run.selection, indent=2, sort_keys=True),
    }
    return render(request, "training/run_detail.html", {**_run_context(request, run), **as_json})


@login_required
@permission_required("training.view_run", raise_exception=True)
def run_live(request, run_id: int):
    run = get_object_or_404(Run.objects.select_related("job", "parent__parent"), pk=run_id)
    response = render(request, "training/_run_live.html", _run_context(request, run))
    if request.headers.get("HX-Request") and run.job and run.job.is_terminal:
        # Artifacts, evaluation and the final grid sit outside this fragment: reload the page
        # once the run has ended.
        response["HX-Refresh"] = "true"
    return response


@require_GET
@login_required
@permission_required("training.view_run", raise_exception=True)
def run_grid(request, run_id: int):
    run = get_object_or_404(Run, pk=run_id)
    try:
        grid = _latest_grid(reports.page_folder(run))
    except StoreError as exc:
        raise Http404(f"the artifact store cannot be read: {exc}") from exc
    if grid is None:
        raise Http404("no validation grid yet")
    response = FileResponse(grid.open("rb"), content_type="image/png")
    response["Cache-Control"] = "no-cache"
    return response


# Served inline as what they are; anything else (weights, checkpoints) as a download.
ARTIFACT_TYPES = {
    ".json": "application/json",
    ".md": "text/plain; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


@require_GET
@login_required
@permission_required("training.view_run", raise_exception=True)
def run_artifact(request, run_id: int, name: str):
    """One of the run's listed artifact files. The name must be one the run page lists (no
    path is built from it), so nothing outside the run's folder can be asked for."""
    run = get_object_or_404(Run, pk=run_id)
    try:  # streamed from the store (or this host's folder), never a redirect to the bucket
        if name not in run_display.artifact_files(run.artifacts_dir):
            raise Http404("no such artifact")
        chunks = artifacts.open_member(run.artifacts_dir, name)
    except StoreError as exc:
        raise Http404(f"the artifact store cannot give it: {exc}") from exc
    content_type = ARTIFACT_TYPES.get(PurePosixPath(name).suffix)
    response = StreamingHttpResponse(
        chunks, content_type=content_type or "application/octet-stream"
    )
    disposition = content_disposition_header(content_type is None, PurePosixPath(name).name)
    response["Content-Disposition"] = disposition or "attachment"
    # A served SVG or text file runs no script and loads nothing, whatever it holds.
    response["Content-Security-Policy"] = "sandbox; default-src 'none'; style-src 'unsafe-inline'"
    return response


def _comparison_runs(request) -> tuple[Run | None, list[Run]]:
    return selectors.classifier_comparison_runs(
        baseline_id=request.GET.get("baseline"), run_ids=request.GET.getlist("runs")
    )


def _bars(comparison: dict, height: int = 160) -> dict:
    """Grouped bars (one per run within each FST group) with CI whiskers. The axis runs from
    0.5 (chance) to 1, or from 0 when any value or interval falls below chance: a model worse
    than chance must show as such, not as an empty chart."""
    summaries = [comparison["baseline"], *comparison["runs"]]
    colours = ["#9aa3b2", "#7a4b2a", "#2f6f9f", "#3cb44b"]
    width = 22
    groups = Slots(width=len(summaries) * width, gap=26)  # one slot per FST group
    bars = []
    values = [
        v
        for s in summaries
        for g in comparison["groups"]
        for v in [s["auroc_by_group"][g], *(s["auroc_ci_by_group"][g] or [])]
        if v is not None
    ]
    floor = 0.0 if any(v < 0.5 for v in values) else 0.5
    axis = ValueAxis(low=floor, high=1, height=height)

    def y(v):
        return round(axis.y(max(v, floor)), 1)

    for gi, group in enumerate(comparison["groups"]):
        for ri, s in enumerate(summaries):
            value = s["auroc_by_group"][group]
            if value is None:
                continue
            x = groups.x(gi) + ri * width
            ci = s["auroc_ci_by_group"][group]
            bars.append(
                {
                    "x": x,
                    "y": y(value),
                    "h": round(height - y(value), 1),
                    "value": value,
                    "colour": colours[ri % 4],
                    "label": f"run {s['run'].pk}",
                    "group": group,
                    "ci": [y(ci[0]), y(ci[1])] if ci else None,
                    "mid": x + width / 2,
                }
            )
    return {
        "bars": bars,
        "height": height,
        "floor": floor,
        "chance_y": y(0.5),
        "width": groups.extent(len(comparison["groups"])),
        "bar": width - 4,
        "labels": [{"x": groups.mid(gi), "text": g} for gi, g in enumerate(comparison["groups"])],
        "legend": [
            (f"run {s['run'].pk}" + (" (baseline)" if i == 0 else ""), colours[i % 4])
            for i, s in enumerate(summaries)
        ],
    }


@login_required
@permission_required("training.view_run", raise_exception=True)
def fairness_report(request):
    baseline, others = _comparison_runs(request)
    context: dict[str, Any] = {
        "baseline": baseline,
        "others": others,
        "classifiers": selectors.runs_finished().filter(kind=RunKind.CLASSIFIER),
    }
    if baseline is not None:
        comparison = fairness_verdicts.fairness_comparison(baseline=baseline, others=others)
        context.update(
            comparison=comparison, chart=_bars(comparison), query=request.GET.urlencode()
        )
    return render(request, "training/fairness.html", context)


@login_required
@permission_required("training.view_run", raise_exception=True)
def fairness_export(request):
    baseline, others = _comparison_runs(request)
    if baseline is None:
        raise Http404("no finished baseline classifier")
    rows = fairness_verdicts.comparison_rows(
        fairness_verdicts.fairness_comparison(baseline=baseline, others=others)
    )
    if request.GET.get("format") == "json":
        response: HttpResponse = JsonResponse(
            {"rows": rows, "definitions": fairness_verdicts.DEFINITIONS},
            json_dumps_params={"indent": 2},
        )
        response["Content-Disposition"] = 'attachment; filename="fairness.json"'
        return response
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="fairness.csv"'
    writer = csv.DictWriter(response, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(safe_row(r) for r in rows)
    return response


@require_POST
@login_required
@permission_required("training.launch_run", raise_exception=True)
def mark_confidence_model(request, run_id: int):
    run = get_object_or_404(Run.objects.select_related("job"), pk=run_id)
    with refused_to_messages(request):
        services.run_mark_confidence_model(run=run)
        messages.success(request, f"Run {run.pk} is now the confidence model generation uses.")
    return redirect("training:run", run_id=run.pk)
