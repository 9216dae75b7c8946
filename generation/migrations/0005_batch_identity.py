"""Issue 15: a batch's artifacts folder is unique to the batch (batch-<id>-<token>).

Existing batches keep their folder: their identity is backfilled with the name of the folder
their row already points at, so nothing moves."""

from pathlib import PurePath

from django.db import migrations, models


def backfill(apps, schema_editor):
    Batch = apps.get_model("generation", "Batch")
    for batch in Batch.objects.filter(identity="").only("pk", "artifacts_dir"):
        name = PurePath(batch.artifacts_dir).name if batch.artifacts_dir else ""
        Batch.objects.filter(pk=batch.pk).update(identity=name or f"batch-{batch.pk}")


class Migration(migrations.Migration):
    dependencies = [("generation", "0004_foreground_moves_to_jobs")]

    operations = [
        migrations.AddField(
            model_name="batch",
            name="identity",
            field=models.CharField(
                blank=True,
                help_text="The artifacts folder's name (batch-<id>-<token>), set at creation; the "
                "scoring reference records it and shards refuse any other.",
                max_length=80,
            ),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
