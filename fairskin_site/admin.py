"""The admin site, closed to dermatologists even if someone made them staff."""

from functools import update_wrapper

from django.contrib import admin
from django.core.exceptions import PermissionDenied

from accounts.roles import Role, user_role


class FairSkinAdminSite(admin.AdminSite):
    site_header = "FairSkin administration"
    site_title = "FairSkin admin"
    index_title = "Datasets, runs, batches and jobs"

    def has_permission(self, request):
        if user_role(request.user) is Role.DERMATOLOGIST:
            return False
        return super().has_permission(request)

    def _refuse_signed_in_outsiders(self, view):
        # A signed-in user without admin rights gets a plain 403, not the admin login form.
        def guarded(request, *args, **kwargs):
            if request.user.is_authenticated and not self.has_permission(request):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return update_wrapper(guarded, view)

    def admin_view(self, view, cacheable=False):
        return self._refuse_signed_in_outsiders(super().admin_view(view, cacheable))

    def login(self, request, extra_context=None):
        if request.user.is_authenticated and not self.has_permission(request):
            raise PermissionDenied
        return super().login(request, extra_context)
