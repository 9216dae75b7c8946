from django.db import migrations

from accounts.permissions import grant

ROLE_PERMISSIONS = {
    "lead": ["training.view_run"],
    "engineer": ["training.view_run", "training.add_run", "training.launch_run"],
}


def grant_roles(apps, schema_editor):
    grant(apps, ROLE_PERMISSIONS)


class Migration(migrations.Migration):
    dependencies = [("training", "0001_initial"), ("accounts", "0001_roles")]
    operations = [migrations.RunPython(grant_roles, migrations.RunPython.noop)]
