from django.db import migrations

from accounts.permissions import grant

# Dermatologists rate only what is assigned to them (checked per request); they get no view
# permission on studies, items or releases, so no page can show them origins or scores.
ROLE_PERMISSIONS = {
    "dermatologist": ["review.rate_study"],
    "lead": [
        "review.view_study",
        "review.add_study",
        "review.manage_study",
        "review.view_release",
        "review.view_batchrejection",
    ],
    "engineer": ["review.view_study", "review.view_release", "review.view_batchrejection"],
}


def grant_roles(apps, schema_editor):
    grant(apps, ROLE_PERMISSIONS)


class Migration(migrations.Migration):
    dependencies = [("review", "0001_initial"), ("accounts", "0001_roles")]
    operations = [migrations.RunPython(grant_roles, migrations.RunPython.noop)]
