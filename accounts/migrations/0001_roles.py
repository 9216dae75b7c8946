from django.db import migrations

from accounts.permissions import grant

ROLE_PERMISSIONS = {
    "dermatologist": [],
    "lead": ["jobs.view_job"],
    "engineer": [
        "jobs.view_job",
        "jobs.launch_job",
        "jobs.control_job",
        "jobs.view_jobattempt",
        "jobs.view_joblogentry",
    ],
}


def create_roles(apps, schema_editor):
    grant(apps, ROLE_PERMISSIONS)


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLE_PERMISSIONS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("jobs", "0001_initial"),
    ]
    operations = [migrations.RunPython(create_roles, remove_roles)]
