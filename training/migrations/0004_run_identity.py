"""Issue 15: a run's artifacts folder is unique to the run (run-<id>-<token>), not its id alone.

Existing runs keep their folder: their identity is backfilled with the name of the folder their
row already points at, so nothing moves."""

from pathlib import PurePath

from django.db import migrations, models


def backfill(apps, schema_editor):
    Run = apps.get_model("training", "Run")
    for run in Run.objects.filter(identity="").only("pk", "artifacts_dir"):
        name = PurePath(run.artifacts_dir).name if run.artifacts_dir else ""
        Run.objects.filter(pk=run.pk).update(identity=name or f"run-{run.pk}")


class Migration(migrations.Migration):
    dependencies = [("training", "0003_classifier_runs")]

    operations = [
        migrations.AddField(
            model_name="run",
            name="identity",
            field=models.CharField(
                blank=True,
                help_text="The artifacts folder's name (run-<id>-<token>), set at creation; its "
                "checkpoints carry it, and a resume needs it to match.",
                max_length=80,
            ),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
