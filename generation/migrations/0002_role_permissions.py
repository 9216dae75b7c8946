from django.db import migrations

from accounts.permissions import grant

# Dermatologists get nothing here: they rate images blind, so they must not see which images
# are synthetic or how a batch scored them.
ROLE_PERMISSIONS = {
    "lead": ["generation.view_batch", "generation.view_sample"],
    "engineer": [
        "generation.view_batch",
        "generation.view_sample",
        "generation.add_batch",
        "generation.launch_batch",
    ],
}


def grant_roles(apps, schema_editor):
    grant(apps, ROLE_PERMISSIONS)


class Migration(migrations.Migration):
    dependencies = [("generation", "0001_initial"), ("accounts", "0001_roles")]
    operations = [migrations.RunPython(grant_roles, migrations.RunPython.noop)]
