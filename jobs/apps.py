from django.apps import AppConfig


class JobsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "jobs"

    def ready(self) -> None:
        from celery.signals import beat_init

        from jobs import handlers  # noqa: F401  (registers the job kinds)
        from jobs.sweeper import start_sweeper

        # The sweep lives in the beat process, outside every queue (jobs.sweeper).
        beat_init.connect(start_sweeper, weak=False, dispatch_uid="fairskin-job-sweep")
