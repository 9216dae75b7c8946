from django.urls import path

from catalog import views

app_name = "catalog"
urlpatterns = [
    path("", views.dataset_list, name="datasets"),
    path("datasets/<slug:name>/", views.dataset_detail, name="dataset"),
    path("images/", views.image_browser, name="images"),
    path("images/<int:image_id>/thumbnail/", views.image_thumbnail, name="thumbnail"),
]
