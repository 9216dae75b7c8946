from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from common.refusals import refused_to_messages
from jobs import services
from jobs.models import Job, JobAttempt, JobLogEntry, WorkerHost


class JobAttemptInline(admin.TabularInline):
    model = JobAttempt
    extra = 0
    can_delete = False
    readonly_fields = ["number", "worker", "started_at", "finished_at", "outcome", "error"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "title",
        "kind",
        "queue",
        "state",
        "attempt",
        "progress",
        "created_at",
        "launched_by",
        "page",
    ]
    list_filter = ["state", "kind", "queue"]
    search_fields = ["title", "kind", "error"]
    readonly_fields = [f.name for f in Job._meta.fields]
    inlines = [JobAttemptInline]
    actions = ["cancel_jobs", "resume_jobs"]

    def has_add_permission(self, request):
        return False  # jobs are created by the things they run (imports, runs, batches)

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="progress")
    def progress(self, job):
        return f"{job.progress_done}/{job.progress_total}"

    @admin.display(description="live page")
    def page(self, job):
        return format_html('<a href="{}">open</a>', reverse("jobs:detail", args=[job.pk]))

    def _apply(self, request, queryset, action, verb):
        if not request.user.has_perm("jobs.control_job"):
            self.message_user(request, "You may not control jobs.", messages.ERROR)
            return
        done = 0
        for job in queryset:
            with refused_to_messages(request, prefix=f"Job {job.pk}: ", level=messages.WARNING):
                self.message_user(request, action(job=job, by=request.user))
                done += 1
        self.message_user(request, f"{verb} {done} job(s).")

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request, queryset):
        self._apply(request, queryset, services.job_user_cancel, "Cancelled")

    @admin.action(description="Resume selected failed or cancelled jobs")
    def resume_jobs(self, request, queryset):
        self._apply(request, queryset, services.job_user_resume, "Resumed")


@admin.register(JobLogEntry)
class JobLogEntryAdmin(admin.ModelAdmin):
    list_display = ["job", "attempt", "created_at", "level", "message"]
    list_filter = ["level"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(WorkerHost)
class WorkerHostAdmin(admin.ModelAdmin):
    """What each worker said when it last started: its queues and devices (issue 19). Written
    by the workers themselves; a row for a machine that is gone can be deleted."""

    list_display = ["name", "devices", "device_kind", "queue_list", "started_at"]
    readonly_fields = ["name", "queues", "devices", "device_kind", "started_at"]

    @admin.display(description="queues")
    def queue_list(self, obj: WorkerHost) -> str:
        return ", ".join(obj.queues)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
