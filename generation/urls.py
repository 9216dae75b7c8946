from django.urls import path

from generation import views

app_name = "generation"
urlpatterns = [
    path("", views.batch_list, name="batches"),
    path("batches/<int:batch_id>/", views.batch_detail, name="batch"),
    path("batches/<int:batch_id>/live/", views.batch_live, name="live"),
    path("batches/<int:batch_id>/export/", views.batch_export, name="export"),
    path("batches/<int:batch_id>/cancel/", views.batch_cancel, name="cancel"),
    path("batches/<int:batch_id>/resume/", views.batch_resume, name="resume"),
    path("hard-examples/<int:run_id>/", views.hard_examples, name="hard_examples"),
    path("samples/<int:sample_id>/", views.sample_detail, name="sample"),
    path(
        "samples/<int:sample_id>/image.png", views.sample_image, {"variant": "full"}, name="image"
    ),
    path(
        "samples/<int:sample_id>/thumb.jpg", views.sample_image, {"variant": "thumb"}, name="thumb"
    ),
]
