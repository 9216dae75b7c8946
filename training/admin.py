from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.html import format_html

from fairskin.errors import ApplicationError
from training.forms import RunLaunchForm
from training.models import Run, RunKind
from training.services import run_create


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "kind",
        "name",
        "lineage_display",
        "base_model",
        "image_count",
        "state",
        "final_loss",
        "created_at",
        "page",
    ]
    list_filter = ["kind", "base_model", "job__state", "is_confidence_model"]
    search_fields = ["name", "base_model"]
    readonly_fields = [f.name for f in Run._meta.fields]
    list_select_related = ["job", "parent__parent"]

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="state")
    def state(self, run):
        return run.job.state if run.job else "—"

    @admin.display(description="lineage")
    def lineage_display(self, run):
        return " → ".join(f"{r.get_kind_display()} {r.pk}" for r in run.lineage())

    @admin.display(description="run page")
    def page(self, run):
        return format_html('<a href="{}">open</a>', reverse("training:run", args=[run.pk]))

    def get_urls(self):
        return [
            path(
                "launch/", self.admin_site.admin_view(self.launch_view), name="training_run_launch"
            ),
            *super().get_urls(),
        ]

    def add_view(self, request, form_url="", extra_context=None):
        return redirect("admin:training_run_launch")

    def launch_view(self, request):
        if not request.user.has_perm("training.launch_run"):
            raise PermissionDenied
        kind = request.POST.get("kind") or request.GET.get("kind") or RunKind.TEXTUAL_INVERSION
        if kind not in RunKind.values:
            kind = RunKind.TEXTUAL_INVERSION
        form = RunLaunchForm(request.POST or None, kind=kind, query=request.GET)
        if request.method == "POST" and form.is_valid():
            try:
                run = run_create(**form.run_create_kwargs(), user=request.user)
            except ApplicationError as exc:
                form.add_error(None, str(exc))
            else:
                queue = run.job.queue if run.job else "gpu"  # gpu-xN on N processes
                messages.success(request, f"Run {run.pk} queued on the {queue} queue.")
                return redirect("training:run", run_id=run.pk)
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "kind": kind,
            "kinds": RunKind.choices,
            "title": "Launch a training run",
            "opts": self.model._meta,
        }
        return render(request, "admin/training/run/launch.html", context)
