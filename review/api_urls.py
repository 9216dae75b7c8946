from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import IsAuthenticated
from rest_framework.routers import DefaultRouter

from review import api

app_name = "api"
router = DefaultRouter()
router.register("studies", api.StudyViewSet, basename="study")
router.register("releases", api.ReleaseViewSet, basename="release")

urlpatterns = [
    path("", include(router.urls)),
    path("rater/studies/<int:study_id>/queue/", api.RaterQueueView.as_view(), name="queue"),
    path("ratings/", api.RatingView.as_view(), name="ratings"),
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
