from django.urls import path

from jobs import views

app_name = "jobs"
urlpatterns = [
    path("", views.job_list, name="list"),
    path("worker-check/", views.worker_check_launch, name="worker_check"),
    path("<int:job_id>/", views.job_detail, name="detail"),
    path("<int:job_id>/live/", views.job_progress, name="live"),
    path("<int:job_id>/cancel/", views.job_cancel, name="cancel"),
    path("<int:job_id>/resume/", views.job_resume, name="resume"),
]
