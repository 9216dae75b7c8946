from django.apps import AppConfig


class JobsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "jobs"

    def ready(self) -> None:
        from celery.signals import beat_init, worker_ready

        from accounts.panels import register_panel
        from accounts.roles import Role
        from jobs import job_kinds  # noqa: F401  (registers the job kinds)
        from jobs.hosts import on_worker_ready
        from jobs.selectors import job_list_recent
        from jobs.sweeper import start_sweeper

        # Last on the page, after the panels that show what the jobs are for.
        register_panel(
            role=Role.LEAD,
            order=90,
            template="jobs/_home_recent.html",
            context=lambda request: {"jobs": job_list_recent(limit=10), "all_jobs_link": True},
        )
        register_panel(
            role=Role.ENGINEER,
            order=90,
            template="jobs/_home_recent.html",
            context=lambda request: {"jobs": job_list_recent(limit=10)},
        )

        # The sweep lives in the beat process, outside every queue (jobs.sweeper).
        beat_init.connect(start_sweeper, weak=False, dispatch_uid="fairskin-job-sweep")
        # Each worker records its queues and devices as it starts (jobs.hosts).
        worker_ready.connect(on_worker_ready, weak=False, dispatch_uid="fairskin-worker-host")
