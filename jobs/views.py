from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from common.refusals import refused_to_messages
from jobs import registry, selectors, services
from jobs.forms import WorkerCheckForm
from jobs.models import Job, JobState


def _job_or_404(job_id: int) -> Job:
    try:
        return selectors.job_get(job_id=job_id)
    except Job.DoesNotExist:
        raise Http404("No such job") from None


@login_required
@permission_required("jobs.view_job", raise_exception=True)
def job_list(request):
    state = request.GET.get("state") or None
    if state not in {None, *JobState.values}:
        state = None
    return render(
        request,
        "jobs/job_list.html",
        {
            "jobs": selectors.job_list_recent(limit=100, state=state),
            "states": JobState.choices,
            "state": state,
            "form": WorkerCheckForm(),
        },
    )


@login_required
@permission_required("jobs.view_job", raise_exception=True)
def job_detail(request, job_id: int):
    job = _job_or_404(job_id)
    return render(request, "jobs/job_detail.html", _job_context(job))


@login_required
@permission_required("jobs.view_job", raise_exception=True)
def job_progress(request, job_id: int):
    """The live part of the job page, polled by htmx until the job ends."""
    job = _job_or_404(job_id)
    return render(request, "jobs/_job_live.html", _job_context(job))


def _job_context(job: Job) -> dict:
    return {
        "job": job,
        "attempts": job.attempts.all(),
        "log": selectors.job_log_tail(job=job),
        "owner": registry.job_owner(job),
    }


@require_POST
@login_required
@permission_required("jobs.control_job", raise_exception=True)
def job_cancel(request, job_id: int):
    job = _job_or_404(job_id)
    with refused_to_messages(request, prefix=f"Job {job.pk} was not cancelled: "):
        messages.success(request, services.job_user_cancel(job=job, by=request.user))
    return redirect("jobs:detail", job_id=job.pk)


@require_POST
@login_required
@permission_required("jobs.control_job", raise_exception=True)
def job_resume(request, job_id: int):
    job = _job_or_404(job_id)
    with refused_to_messages(request, prefix=f"Job {job.pk} was not resumed: "):
        messages.success(request, services.job_user_resume(job=job, by=request.user))
    return redirect("jobs:detail", job_id=job.pk)


@require_POST
@login_required
@permission_required("jobs.launch_job", raise_exception=True)
def worker_check_launch(request):
    form = WorkerCheckForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Worker check not launched: {form.errors.as_text()}")
        return redirect("jobs:list")
    data = form.cleaned_data
    with refused_to_messages(request) as attempt:
        job = services.job_create(
            kind="worker_check",
            queue=data["queue"],
            params={"steps": data["steps"], "pause_s": data["pause_s"]},
            title=f"Worker check on the {data['queue']} queue",
            launched_by=request.user,
        )
    if attempt.refused:
        return redirect("jobs:list")
    return redirect("jobs:detail", job_id=job.pk)
