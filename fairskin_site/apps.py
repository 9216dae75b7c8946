from django.contrib.admin.apps import AdminConfig


class FairSkinAdminConfig(AdminConfig):
    default_site = "fairskin_site.admin.FairSkinAdminSite"
