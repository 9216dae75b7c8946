"""The API under /api/: each app's operations (their own api modules), the schema and its
browsable documentation."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import IsAuthenticated
from rest_framework.routers import DefaultRouter

from catalog.api import DatasetViewSet
from generation.api import BatchViewSet
from jobs.api import JobViewSet
from review import api as review_api
from training.api import FairnessView, RunViewSet

app_name = "api"
router = DefaultRouter()
router.register("datasets", DatasetViewSet, basename="dataset")
router.register("runs", RunViewSet, basename="run")
router.register("batches", BatchViewSet, basename="batch")
router.register("jobs", JobViewSet, basename="job")
router.register("studies", review_api.StudyViewSet, basename="study")
router.register("releases", review_api.ReleaseViewSet, basename="release")

urlpatterns = [
    path("", include(router.urls)),
    path("fairness/", FairnessView.as_view(), name="fairness"),
    path("rater/studies/<int:study_id>/queue/", review_api.RaterQueueView.as_view(), name="queue"),
    path("ratings/", review_api.RatingView.as_view(), name="ratings"),
    # drf-spectacular serves the schema to anyone by default; like every page here, not public.
    path(
        "schema/", SpectacularAPIView.as_view(permission_classes=[IsAuthenticated]), name="schema"
    ),
    path(
        "docs/",
        SpectacularSwaggerView.as_view(url_name="api:schema", permission_classes=[IsAuthenticated]),
        name="docs",
    ),
]
