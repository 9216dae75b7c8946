from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from accounts.roles import Role, user_role
from jobs.selectors import job_list_recent


class LoginView(auth_views.LoginView):
    redirect_authenticated_user = True


@login_required
def home(request):
    """Each role lands on the page its work starts from."""
    role = user_role(request.user)
    if role is Role.DERMATOLOGIST:
        from review.selectors import rater_studies

        return render(request, "accounts/home_dermatologist.html",
                      {"studies": rater_studies(user=request.user)})
    if role is Role.LEAD:
        return render(request, "accounts/home_lead.html", {"jobs": job_list_recent(limit=10)})
    if role is Role.ENGINEER or request.user.is_superuser:
        return render(request, "accounts/home_engineer.html", {"jobs": job_list_recent(limit=10)})
    return render(request, "accounts/home_norole.html", status=403)
