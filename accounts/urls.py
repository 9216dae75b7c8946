from django.contrib.auth import views as auth_views
from django.urls import path

from accounts import views

app_name = "accounts"
urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/", views.account, name="account"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
]
