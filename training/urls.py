from django.urls import path

from training import views

app_name = "training"
urlpatterns = [
    path("", views.run_list, name="runs"),
    path("runs/<int:run_id>/", views.run_detail, name="run"),
    path("runs/<int:run_id>/live/", views.run_live, name="live"),
    path("runs/<int:run_id>/grid.png", views.run_grid, name="grid"),
    path("runs/<int:run_id>/files/<path:name>", views.run_artifact, name="artifact"),
    path(
        "runs/<int:run_id>/confidence-model/", views.mark_confidence_model, name="confidence_model"
    ),
    path("fairness/", views.fairness_report, name="fairness"),
    path("fairness/export/", views.fairness_export, name="fairness_export"),
]
