from django.apps import AppConfig


class GenerationConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "generation"

    def ready(self) -> None:
        from accounts.panels import register_panel
        from accounts.roles import Role
        from generation import job_kinds  # noqa: F401  (registers the job kinds)

        # The engineers' start links name training too: generation is the app that sees it.
        register_panel(role=Role.ENGINEER, order=10, template="generation/_home_start.html")
        register_panel(role=Role.LEAD, order=50, template="generation/_home_synthetic.html")
