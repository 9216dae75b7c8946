from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "notifications"

    def ready(self) -> None:
        from accounts.panels import register_panel
        from accounts.roles import Role
        from jobs.signals import job_finished
        from notifications import receivers
        from notifications.views import home_panel_context
        from review.signals import study_fully_rated, study_opened

        # The other apps send these inside their work's transaction and know nothing of us.
        job_finished.connect(receivers.on_job_finished, dispatch_uid="notify-job-finished")
        study_opened.connect(receivers.on_study_opened, dispatch_uid="notify-study-opened")
        study_fully_rated.connect(
            receivers.on_study_fully_rated, dispatch_uid="notify-study-fully-rated"
        )
        # First on every role's home page: what waits for this user.
        for role in Role:
            register_panel(
                role=role,
                order=5,
                template="notifications/_home_panel.html",
                context=home_panel_context,
            )
