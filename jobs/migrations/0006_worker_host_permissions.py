from django.db import migrations

from accounts.permissions import grant

ROLE_PERMISSIONS = {
    "engineer": ["jobs.view_workerhost", "jobs.delete_workerhost"],
}


def grant_roles(apps, schema_editor):
    grant(apps, ROLE_PERMISSIONS)


class Migration(migrations.Migration):
    dependencies = [("jobs", "0005_worker_hosts"), ("accounts", "0001_roles")]
    operations = [migrations.RunPython(grant_roles, migrations.RunPython.noop)]
