"""Issue 15: studies and releases get folders of their own (study-<id>-<token>,
release-<id>-<token>), and a study keeps the lead's instructions text apart from the text
raters read, which preparation renders with the share of real images actually drawn.

Existing rows keep their folders (identity backfilled with the old name, study-<id> and
release-<id>, so nothing moves) and their instructions as written (empty template)."""

from django.db import migrations, models


def backfill(apps, schema_editor):
    Study = apps.get_model("review", "Study")
    Release = apps.get_model("review", "Release")
    for pk in Study.objects.filter(identity="").values_list("pk", flat=True):
        Study.objects.filter(pk=pk).update(identity=f"study-{pk}")
    for pk in Release.objects.filter(identity="").values_list("pk", flat=True):
        Release.objects.filter(pk=pk).update(identity=f"release-{pk}")


class Migration(migrations.Migration):
    dependencies = [("review", "0003_studyitem_origin_shares_catalog_origin")]

    operations = [
        migrations.AddField(
            model_name="release",
            name="identity",
            field=models.CharField(
                blank=True,
                help_text="Its export folder's name (release-<id>-<token>), set at creation.",
                max_length=80,
            ),
        ),
        migrations.AddField(
            model_name="study",
            name="identity",
            field=models.CharField(
                blank=True,
                help_text="Its blinded files' folder (study-<id>-<token>).",
                max_length=80,
            ),
        ),
        migrations.AddField(
            model_name="study",
            name="instructions_template",
            field=models.TextField(
                blank=True,
                help_text="The lead's text; preparation renders it into the instructions with the "
                "share of real images actually drawn. Empty: the instructions are final as "
                "written.",
            ),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
