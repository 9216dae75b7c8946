from pathlib import Path

from django.contrib.auth.decorators import login_required, permission_required
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from fairskin.diffusion.reports import loss_svg
from training.models import Run

ARTIFACT_NAMES = ("pytorch_lora_weights.safetensors", "manifest.json", "README.md", "loss.csv",
                  "loss.svg")


def _loss_history(run_dir: Path) -> list[tuple[int, float]]:
    path = run_dir / "loss.csv"
    if not path.exists():
        return []
    rows = path.read_text().splitlines()[1:]
    return [(int(cells[0]), float(cells[1])) for cells in (r.split(",") for r in rows if r)]


def _latest_grid(run_dir: Path) -> Path | None:
    grids = sorted((run_dir / "validation").glob("step-*.png"))
    return grids[-1] if grids else None


def _run_context(run: Run) -> dict:
    run_dir = Path(run.artifacts_dir)
    grid = _latest_grid(run_dir)
    files = [run_dir / n for n in ARTIFACT_NAMES if (run_dir / n).exists()]
    files += sorted((run_dir / "embeddings").glob("*.safetensors"))
    return {"run": run, "job": run.job, "lineage": run.lineage(),
            "children": run.children.all(), "loss_svg": loss_svg(_loss_history(run_dir)),
            "grid_step": grid.stem.removeprefix("step-").lstrip("0") if grid else None,
            "files": [f.relative_to(run_dir) for f in files]}


@login_required
@permission_required("training.view_run", raise_exception=True)
def run_list(request):
    runs = Run.objects.select_related("job", "parent__parent")[:100]
    return render(request, "training/run_list.html", {"runs": runs})


@login_required
@permission_required("training.view_run", raise_exception=True)
def run_detail(request, run_id: int):
    run = get_object_or_404(Run.objects.select_related("job", "parent__parent"), pk=run_id)
    return render(request, "training/run_detail.html", _run_context(run))


@login_required
@permission_required("training.view_run", raise_exception=True)
def run_live(request, run_id: int):
    run = get_object_or_404(Run.objects.select_related("job", "parent__parent"), pk=run_id)
    return render(request, "training/_run_live.html", _run_context(run))


@require_GET
@login_required
@permission_required("training.view_run", raise_exception=True)
def run_grid(request, run_id: int):
    run = get_object_or_404(Run, pk=run_id)
    grid = _latest_grid(Path(run.artifacts_dir))
    if grid is None:
        raise Http404("no validation grid yet")
    response = FileResponse(grid.open("rb"), content_type="image/png")
    response["Cache-Control"] = "no-cache"
    return response
