from django.contrib.auth.decorators import login_required, permission_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from catalog import selectors
from catalog.models import DIAGNOSIS_CHOICES, Dataset, Image, Origin, Split
from fairskin.charts import Slots, ValueAxis

# Colours for the chart's stacked bars, one per diagnosis.
DX_COLOURS = {
    "MEL": "#5b2a86",
    "NV": "#9a6324",
    "BCC": "#e6194b",
    "AK": "#f58231",
    "BKL": "#bfa100",
    "DF": "#3cb44b",
    "VASC": "#4363d8",
    "OTHER": "#a9a9a9",
}


def _chart(summary: dict, height: int = 180, bar: int = 46, gap: int = 18) -> dict:
    """Geometry of a stacked bar chart (one bar per FST column) for the template's SVG."""
    columns = summary["columns"]
    axis = ValueAxis(low=0, high=max(summary["column_totals"] or [0]) or 1, height=height)
    slots = Slots(width=bar, gap=gap)
    bars = []
    for i, column in enumerate(columns):
        below = 0  # images already stacked under the next segment
        segments = []
        for row in summary["rows"]:
            n = row["counts"][i]
            if not n:
                continue
            below += n
            segments.append(
                {
                    "y": round(axis.y(below), 1),
                    "h": round(axis.length(n), 1),
                    "n": n,
                    "dx": row["diagnosis"],
                    "colour": DX_COLOURS[row["diagnosis"]],
                }
            )
        bars.append(
            {
                "x": slots.x(i),
                "label": column,
                "segments": segments,
                "total": summary["column_totals"][i],
            }
        )
    return {
        "bars": bars,
        "width": slots.extent(len(columns)),
        "height": height,
        "bar": bar,
        "mid": slots.mid(0),
        "legend": [(r["diagnosis"], DX_COLOURS[r["diagnosis"]]) for r in summary["rows"]],
    }


@login_required
@permission_required("catalog.view_dataset", raise_exception=True)
def dataset_list(request):
    datasets = Dataset.objects.all()
    return render(
        request,
        "catalog/dataset_list.html",
        {"datasets": [(d, selectors.dataset_summary(dataset=d)) for d in datasets]},
    )


@login_required
@permission_required("catalog.view_dataset", raise_exception=True)
def dataset_detail(request, name: str):
    dataset = get_object_or_404(Dataset, name=name)
    summary = selectors.dataset_summary(dataset=dataset)
    last_import = dataset.imports.first()
    return render(
        request,
        "catalog/dataset_detail.html",
        {
            "dataset": dataset,
            "summary": summary,
            "chart": _chart(summary),
            "last_import": last_import,
            "imports": dataset.imports.all()[:10],
            "splits": selectors.dataset_split_counts(dataset=dataset),
        },
    )


@login_required
@permission_required("catalog.view_image", raise_exception=True)
def image_browser(request):
    params = request.GET
    fst = params.get("fst")
    filters = {
        "dataset": params.get("dataset") or None,
        "diagnosis": params.get("diagnosis") or None,
        "fst": int(fst) if fst in {"1", "2", "3", "4", "5", "6"} else None,
        "origin": params.get("origin") or None,
        "split": params.get("split", "any"),
    }
    page = Paginator(selectors.image_browse(**filters), 48).get_page(params.get("page"))
    query = params.copy()
    query.pop("page", None)
    return render(
        request,
        "catalog/image_browser.html",
        {
            "page": page,
            "filters": filters,
            "query": query.urlencode(),
            "datasets": Dataset.objects.values_list("name", flat=True),
            "diagnoses": DIAGNOSIS_CHOICES,
            "origins": Origin.choices,
            "splits": [("", "unassigned"), *[c for c in Split.choices if c[0]]],
            "fsts": range(1, 7),
        },
    )


@require_GET
@login_required
@permission_required("catalog.view_image", raise_exception=True)
def image_thumbnail(request, image_id: int):
    image = get_object_or_404(Image, pk=image_id)
    if not image.thumbnail:
        raise Http404("no thumbnail yet: preprocess the dataset")
    response = FileResponse(image.thumbnail.open("rb"), content_type="image/jpeg")
    response["Cache-Control"] = "private, max-age=3600"
    return response
