from django.db import migrations

from accounts.permissions import grant

ROLE_PERMISSIONS = {
    "lead": ["catalog.view_dataset", "catalog.view_image", "catalog.view_datasetimport"],
    "engineer": [
        "catalog.view_dataset",
        "catalog.change_dataset",
        "catalog.import_dataset",
        "catalog.process_dataset",
        "catalog.view_image",
        "catalog.view_datasetimport",
    ],
}


def grant_roles(apps, schema_editor):
    grant(apps, ROLE_PERMISSIONS)


class Migration(migrations.Migration):
    dependencies = [("catalog", "0001_initial"), ("accounts", "0001_roles")]
    operations = [migrations.RunPython(grant_roles, migrations.RunPython.noop)]
