from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils import timezone

from accounts import tokens
from accounts.panels import panels_render
from accounts.roles import Role, user_role
from common.refusals import refused_to_messages

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


@login_required
def account(request):
    """The user's account page: their personal API tokens (engineers and leads)."""
    new_token = None
    if request.method == "POST" and "revoke" in request.POST:
        with refused_to_messages(request) as attempt:
            token = tokens.token_revoke(user=request.user, token_id=_int(request.POST["revoke"]))
        if not attempt.refused:
            messages.success(request, f"The token {token.name!r} is revoked.")
        return redirect("accounts:account")
    if request.method == "POST":
        with refused_to_messages(request, prefix="No token made: "):
            _, new_token = tokens.token_create(
                user=request.user,
                name=request.POST.get("name", ""),
                expires_in_days=_int(request.POST.get("expires_in_days", "")),
            )
    response = render(
        request,
        "accounts/account.html",
        {
            "may_hold_tokens": tokens.token_may_hold(request.user),
            "refusal": tokens.RATERS_REFUSED,
            "tokens": tokens.tokens_of(user=request.user),
            "expiry_days": tokens.EXPIRY_DAYS,
            "new_token": new_token,
            "now": timezone.now(),
        },
    )
    # The new token is in this page only: no cache may keep a copy.
    response["Cache-Control"] = "no-store"
    return response


def _int(value: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1
