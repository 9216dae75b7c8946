# A batch run by `generate --wait` is now marked on its jobs (Job.runs_here, inherited by the
# follow-up jobs), not on the batch.

from django.db import migrations


def mark_jobs(apps, schema_editor):
    Batch = apps.get_model("generation", "Batch")
    Job = apps.get_model("jobs", "Job")
    roots = list(
        Batch.objects.filter(foreground=True).exclude(job=None).values_list("job_id", flat=True)
    )
    Job.objects.filter(pk__in=roots).update(runs_here=True)
    Job.objects.filter(parent_id__in=roots).update(runs_here=True)


class Migration(migrations.Migration):
    dependencies = [
        ("generation", "0003_batch_reproducibility"),
        ("jobs", "0004_job_runs_here"),
    ]

    operations = [
        migrations.RunPython(mark_jobs, migrations.RunPython.noop),
        migrations.RemoveField(
            model_name="batch",
            name="foreground",
        ),
    ]
