from django.contrib import admin
from django.urls import include, path

from fairskin_site.health import health

urlpatterns = [
    path("", include("accounts.urls")),
    path("jobs/", include("jobs.urls")),
    path("catalog/", include("catalog.urls")),
    path("training/", include("training.urls")),
    path("generation/", include("generation.urls")),
    path("review/", include("review.urls")),
    path("api/", include("fairskin_site.api_urls")),
    path("notifications/", include("notifications.urls")),
    path("admin/", admin.site.urls),
    path("health/", health, name="health"),
]
