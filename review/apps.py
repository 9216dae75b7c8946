from django.apps import AppConfig


class ReviewConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "review"

    def ready(self) -> None:
        from accounts.panels import register_panel
        from accounts.roles import Role
        from review import job_kinds  # noqa: F401  (registers the job kinds)
        from review.selectors import (
            batches_awaiting_review,
            lead_releases,
            lead_studies,
            rater_studies,
        )

        register_panel(
            role=Role.DERMATOLOGIST,
            order=10,
            template="review/_home_assignments.html",
            context=lambda request: {"studies": rater_studies(user=request.user)},
        )
        # Before the synthetic-data panel (generation, 50) and the recent jobs (jobs, 90).
        register_panel(
            role=Role.LEAD,
            order=20,
            template="review/_home_lead.html",
            context=lambda request: {
                "studies": lead_studies(),
                "releases": lead_releases(),
                "awaiting": batches_awaiting_review(),
            },
        )
