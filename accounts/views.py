from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from accounts.panels import panels_render
from accounts.roles import Role, user_role

# The page frame of each role; what fills it comes from the apps' panels (accounts.panels).
HOME_TEMPLATES = {
    Role.DERMATOLOGIST: "accounts/home_dermatologist.html",
    Role.LEAD: "accounts/home_lead.html",
    Role.ENGINEER: "accounts/home_engineer.html",
}


class LoginView(auth_views.LoginView):
    redirect_authenticated_user = True


def home_role(user) -> Role | None:
    """The role whose home page the user sees; a superuser without a role sees the engineers'."""
    role = user_role(user)
    if role is None and user.is_superuser:
        return Role.ENGINEER
    return role


@login_required
def home(request):
    """Each role lands on the page its work starts from."""
    role = home_role(request.user)
    if role is None:
        return render(request, "accounts/home_norole.html", status=403)
    return render(
        request, HOME_TEMPLATES[role], {"panels": panels_render(role=role, request=request)}
    )
