from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.html import format_html

from catalog import services
from catalog.forms import DatasetUploadForm, SplitForm, upload_launch_kwargs
from catalog.models import Dataset, DatasetImport, Image
from common.refusals import refused_to_messages


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "source_format", "allowed_use", "licence", "image_count", "overview"]
    list_filter = ["source_format", "allowed_use"]
    readonly_fields = [
        "source_format",
        "mapping_tier",
        "split_seed",
        "split_fractions",
        "created_by",
        "created_at",
    ]
    fields = ["name", "description", "licence", "allowed_use", *readonly_fields]
    actions = ["preprocess", "preprocess_with_hair_removal", "split"]
    change_list_template = "admin/catalog/dataset/change_list.html"

    def has_add_permission(self, request):
        return False  # datasets come from imports: see "Import a dataset"

    @admin.display(description="images")
    def image_count(self, dataset):
        return dataset.images.count()

    @admin.display(description="overview")
    def overview(self, dataset):
        return format_html(
            '<a href="{}">open</a>', reverse("catalog:dataset", kwargs={"name": dataset.name})
        )

    def get_urls(self):
        return [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="catalog_dataset_import",
            ),
            path(
                "split/", self.admin_site.admin_view(self.split_view), name="catalog_dataset_split"
            ),
            *super().get_urls(),
        ]

    def import_view(self, request):
        if not request.user.has_perm("catalog.import_dataset"):
            raise PermissionDenied
        form = DatasetUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            with refused_to_messages(request):
                job = services.dataset_upload_launch(
                    **upload_launch_kwargs(form.cleaned_data), user=request.user
                )
                messages.success(request, f"Import queued as job {job.pk}.")
                return redirect("jobs:detail", job_id=job.pk)
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "title": "Import a dataset",
            "opts": self.model._meta,
        }
        return render(request, "admin/catalog/dataset/import.html", context)

    def _launch_preprocess(self, request, queryset, hair_removal):
        if not request.user.has_perm("catalog.process_dataset"):
            raise PermissionDenied
        for dataset in queryset:
            with refused_to_messages(request):
                job = services.dataset_preprocess_launch(
                    dataset=dataset, hair_removal=hair_removal, user=request.user
                )
                self.message_user(request, f"{dataset.name}: preprocessing queued as job {job.pk}.")

    @admin.action(description="Preprocess images (512 px, ITA)")
    def preprocess(self, request, queryset):
        self._launch_preprocess(request, queryset, hair_removal=False)

    @admin.action(description="Preprocess images with DullRazor hair removal")
    def preprocess_with_hair_removal(self, request, queryset):
        self._launch_preprocess(request, queryset, hair_removal=True)

    @admin.action(description="Create train/val/test splits")
    def split(self, request, queryset):
        ids = ",".join(str(pk) for pk in queryset.values_list("pk", flat=True))
        return redirect(f"{reverse('admin:catalog_dataset_split')}?ids={ids}")

    def split_view(self, request):
        if not request.user.has_perm("catalog.process_dataset"):
            raise PermissionDenied
        ids = [int(i) for i in request.GET.get("ids", "").split(",") if i.isdigit()]
        datasets = list(Dataset.objects.filter(pk__in=ids))
        form = SplitForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            d = form.cleaned_data
            for dataset in datasets:
                counts = services.dataset_split(
                    dataset=dataset, seed=d["seed"], fractions=(d["train"], d["val"], d["test"])
                )
                self.message_user(
                    request, f"{dataset.name}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
                )
            return redirect("admin:catalog_dataset_changelist")
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "datasets": datasets,
            "title": "Create splits",
            "opts": self.model._meta,
        }
        return render(request, "admin/catalog/dataset/split.html", context)


@admin.register(DatasetImport)
class DatasetImportAdmin(admin.ModelAdmin):
    list_display = [
        "dataset",
        "metadata_name",
        "variant",
        "rows",
        "created",
        "updated",
        "unchanged",
        "missing_files",
        "seconds",
        "created_at",
    ]
    list_filter = ["source_format", "dataset"]
    readonly_fields = [f.name for f in DatasetImport._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class FstListFilter(admin.SimpleListFilter):
    title = "Fitzpatrick type"
    parameter_name = "fst"

    def lookups(self, request, model_admin):
        return [(str(i), f"type {i} (incl. ranges)") for i in range(1, 7)] + [("none", "unknown")]

    def queryset(self, request, queryset):
        if self.value() == "none":
            return queryset.filter(fst_low__isnull=True)
        value = self.value()
        if value:
            fst = int(value)
            return queryset.filter(fst_low__lte=fst, fst_high__gte=fst)
        return queryset


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = [
        "source_id",
        "dataset",
        "origin",
        "diagnosis",
        "fst_display",
        "fst_source",
        "split",
        "missing_file",
    ]
    list_filter = [
        "dataset",
        "origin",
        "diagnosis",
        FstListFilter,
        "fst_source",
        "split",
        "missing_file",
        "hair_removed",
    ]
    search_fields = ["source_id", "file_name", "source_label", "group_id", "sha256"]
    list_select_related = ["dataset"]
    readonly_fields = [f.name for f in Image._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
