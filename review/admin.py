from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from review.models import BatchRejection, Release, Study


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Study)
class StudyAdmin(ReadOnly):
    list_display = ["id", "name", "batch", "state", "sample_size", "created_at", "page"]
    list_filter = ["state"]
    exclude = ["plan", "gate"]

    @admin.display(description="study page")
    def page(self, study):
        return format_html('<a href="{}">open</a>', reverse("review:study", args=[study.pk]))


@admin.register(Release)
class ReleaseAdmin(ReadOnly):
    list_display = ["id", "batch", "study", "approved_by", "approved_at", "image_count"]
    exclude = ["manifest", "gate"]


@admin.register(BatchRejection)
class BatchRejectionAdmin(ReadOnly):
    list_display = ["id", "batch", "study", "rejected_by", "rejected_at"]
