from django.urls import path

from review import views

app_name = "review"
urlpatterns = [
    path("", views.study_list, name="studies"),
    path("studies/new/", views.study_new, name="study_new"),
    path("studies/<int:study_id>/", views.study_detail, name="study"),
    path("studies/<int:study_id>/live/", views.study_live, name="live"),
    path("studies/<int:study_id>/close/", views.study_close, name="close"),
    path(
        "studies/<int:study_id>/preparation/<str:action>/",
        views.study_preparation_control,
        name="preparation",
    ),
    path("studies/<int:study_id>/approve/", views.release_approve, name="approve"),
    path("studies/<int:study_id>/reject/", views.release_reject, name="reject"),
    path("studies/<int:study_id>/rate/", views.rate, name="rate"),
    path("i/<str:token>", views.blinded_image, name="image"),
    path("releases/<int:release_id>/", views.release_detail, name="release"),
    path("releases/<int:release_id>/live/", views.release_live, name="release_live"),
    path("releases/<int:release_id>/download/", views.release_download, name="download"),
    path(
        "releases/<int:release_id>/export/resume/",
        views.release_export_resume,
        name="export_resume",
    ),
]
