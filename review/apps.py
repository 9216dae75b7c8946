from django.apps import AppConfig


class ReviewConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "review"

    def ready(self) -> None:
        from accounts.panels import register_panel
        from accounts.roles import Role
        from review import job_kinds  # noqa: F401  (registers the job kinds)
        from review.selectors import rater_studies

        register_panel(
            role=Role.DERMATOLOGIST,
            order=10,
            template="review/_home_assignments.html",
            context=lambda request: {"studies": rater_studies(user=request.user)},
        )
