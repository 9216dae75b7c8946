from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.html import format_html

from fairskin.errors import ApplicationError
from generation.forms import BatchLaunchForm
from generation.models import Batch, Sample
from generation.services import batch_create


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "name",
        "model_run",
        "target",
        "state",
        "scheduler",
        "steps",
        "size",
        "created_at",
        "page",
    ]
    list_filter = ["state", "scheduler"]
    search_fields = ["name"]
    readonly_fields = [f.name for f in Batch._meta.fields]
    list_select_related = ["model_run"]

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="batch page")
    def page(self, batch):
        return format_html('<a href="{}">open</a>', reverse("generation:batch", args=[batch.pk]))

    def get_urls(self):
        return [
            path(
                "launch/",
                self.admin_site.admin_view(self.launch_view),
                name="generation_batch_launch",
            ),
            *super().get_urls(),
        ]

    def add_view(self, request, form_url="", extra_context=None):
        return redirect("admin:generation_batch_launch")

    def launch_view(self, request):
        if not request.user.has_perm("generation.launch_batch"):
            raise PermissionDenied
        form = BatchLaunchForm(request.POST or None, query=request.GET)
        for problem in form.preselect_problems:
            messages.warning(request, problem)
        if request.method == "POST" and form.is_valid():
            d = form.cleaned_data
            try:
                batch = batch_create(
                    model_run=d["model_run"],
                    target=d["target"],
                    diagnoses=d["diagnoses"] or None,
                    fst_distribution=form.distribution(),
                    overgeneration=d["overgeneration"],
                    scheduler=d["scheduler"],
                    steps=d["steps"],
                    guidance=d["guidance"],
                    negative_prompt=d["negative_prompt"],
                    size=d["size"],
                    seed=d["seed"],
                    shard_size=d["shard_size"],
                    device_batch=d["device_batch"],
                    scoring=d["scoring"],
                    filter_percentile=d["filter_percentile"],
                    name=d["name"],
                    reference=d["reference"],
                    reference_strength=d["reference_strength"],
                    reference_mode=d["reference_mode"],
                    image_prompt_scale=d["image_prompt_scale"],
                    label_scale=d["label_scale"],
                    user=request.user,
                )
            except ApplicationError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Batch {batch.pk} queued on the gpu queue.")
                return redirect("generation:batch", batch_id=batch.pk)
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "title": "Launch a generation batch",
            "opts": self.model._meta,
        }
        return render(request, "admin/generation/batch/launch.html", context)


@admin.register(Sample)
class SampleAdmin(admin.ModelAdmin):
    list_display = ["id", "batch", "diagnosis", "fst", "index", "seed", "verdict"]
    list_filter = ["verdict", "diagnosis", "fst"]
    readonly_fields = [
        f.name
        for f in Sample._meta.fields
        if f.name not in ("clip_embedding", "inception_features")
    ]
    exclude = ["clip_embedding", "inception_features"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False
