"""Generation batches end to end in the foreground (`generate --wait`) on the tiny model: quotas,
shortfalls, reproducibility across shard sizes, stored candidates and their samples."""

import io

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from PIL import Image as PILImage

from catalog.models import Dataset, Image
from fairskin.generation.plan import candidate_cap, candidate_seed
from generation.models import Batch, BatchState, Sample, Verdict
from generation.services import BatchConfigError, batch_create
from jobs.models import Job

pytestmark = pytest.mark.django_db
FAST = ["--steps", "2", "--wait"]


def generate(capsys, lora_run, *args: str) -> Batch:
    call_command("generate", "--model", str(lora_run.pk), *FAST, *args)
    out = capsys.readouterr().out.strip().splitlines()
    return Batch.objects.get(pk=int(out[-1]))


def accepted_pixels(batch: Batch) -> dict[tuple, np.ndarray]:
    out = {}
    for s in Sample.objects.filter(batch=batch, verdict=Verdict.ACCEPTED).select_related("image"):
        with s.image.preprocessed.open("rb") as fh:
            out[(s.diagnosis, s.fst, s.index, s.seed)] = np.asarray(
                PILImage.open(fh).convert("RGB"), dtype=np.int16
            )
    return out


def test_a_batch_reaches_its_quotas_exactly_with_the_planned_distribution(capsys, lora_run):
    batch = generate(
        capsys,
        lora_run,
        "--count",
        "8",
        "--diagnosis",
        "MEL",
        "--diagnosis",
        "NV",
        "--fst-distribution",
        "2=0.25,6=0.75",
        "--shard-size",
        "3",
        "--device-batch",
        "2",
        "--seed",
        "7",
    )
    assert batch.state == BatchState.FINISHED
    assert batch.quotas == {"MEL:2": 1, "MEL:6": 3, "NV:2": 1, "NV:6": 3}
    accepted = Sample.objects.filter(batch=batch, verdict=Verdict.ACCEPTED)
    for key, quota in batch.quotas.items():
        dx, fst = key.split(":")
        assert accepted.filter(diagnosis=dx, fst=int(fst)).count() == quota
    fst6 = accepted.filter(fst=6).count() / accepted.count()
    assert fst6 == 0.75 and batch.report["shortfall"] == 0 and batch.report["accepted"] == 8

    # Every stored candidate is a synthetic catalog image with exactly one sample.
    images = Image.objects.filter(dataset=batch.dataset)
    assert images.count() == Sample.objects.filter(batch=batch).count() >= 8
    assert set(images.values_list("origin", flat=True)) == {"synthetic"}
    sample = accepted.select_related("image").first()
    assert sample.seed == candidate_seed(7, (sample.diagnosis, sample.fst), sample.index)
    assert sample.image.fst_low == sample.image.fst_high == sample.fst
    assert sample.image.diagnosis == sample.diagnosis
    assert sample.steps == 2 and sample.scheduler == "ddim" and sample.guidance == 7.5
    assert sample.model_runs == [lora_run.parent_id, lora_run.pk]
    assert "<dx-mel>" in sample.prompt or "<dx-nv>" in sample.prompt
    assert sample.negative_prompt == "blurry, low quality, text, watermark, duplicated"
    with sample.image.preprocessed.open("rb") as fh:
        data = fh.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"  # lossless
    assert PILImage.open(io.BytesIO(data)).size == (batch.size, batch.size)
    assert {c["name"] for c in sample.checks} >= {
        "resolution",
        "brightness",
        "fid",
        "lpips_real",
        "memorization",
    }
    assert len(np.frombuffer(bytes(sample.inception_features), dtype=np.float32)) == 2048

    # Random-weight extractors: labelled, never applied, never judged.
    assert batch.provenance["inception"]["calibrated"] is False
    fid_checks = [c for c in sample.checks if c["name"] == "fid"]
    assert fid_checks and not fid_checks[0]["applied"] and not fid_checks[0]["calibrated"]
    fid_rows = {r["fst"]: r for r in batch.report["fst"]}
    assert fid_rows[6]["n"] == 6 and fid_rows[6]["fid"] is not None
    fid_criteria = [c for c in batch.report["criteria"] if c["name"].startswith("FID")]
    assert fid_criteria and {c["status"] for c in fid_criteria} == {"not measurable"}
    assert all("uncalibrated" in c["why"] for c in fid_criteria if c["value"] is not None)
    # Only accepted images are usable as synthetic training data.
    from training.selectors import classifier_images

    usable = classifier_images(
        selection={"datasets": [], "synthetic_datasets": [batch.dataset.name], "split": "any"},
        synthetic=True,
    )
    assert set(usable.values_list("pk", flat=True)) == set(
        accepted.values_list("image_id", flat=True)
    )


def test_strict_thresholds_leave_a_reported_shortfall(capsys, lora_run):
    batch = generate(
        capsys,
        lora_run,
        "--count",
        "4",
        "--diagnosis",
        "MEL",
        "--fst-distribution",
        "5=0.5,6=0.5",
        "--overgeneration",
        "1.5",
        "--set",
        "brightness_low=0.98",
        "--set",
        "brightness_high=1",
    )
    assert batch.state == BatchState.FINISHED
    rows = {(r["diagnosis"], r["fst"]): r for r in batch.report["strata"]}
    for (dx, fst), quota in [(("MEL", 5), 2), (("MEL", 6), 2)]:
        row = rows[(dx, fst)]
        assert row["accepted"] == 0 and row["shortfall"] == quota
        assert row["generated"] == candidate_cap(quota, 1.5) == 3  # the cap was spent
    assert batch.report["shortfall"] == 4
    reasons = Sample.objects.filter(batch=batch).values_list("reasons", flat=True)
    assert all(
        r and r[0].startswith("brightness ") and "outside [0.98, 1.0]" in r[0] for r in reasons
    )


def test_the_same_seed_accepts_the_same_images_whatever_the_shard_size(capsys, lora_run):
    common = [
        "--count",
        "6",
        "--diagnosis",
        "MEL",
        "--fst-distribution",
        "3=0.5,6=0.5",
        "--seed",
        "11",
        "--overgeneration",
        "3",
    ]
    probe = generate(capsys, lora_run, *common, "--shard-size", "64")
    values = sorted(s.metrics["brightness"] for s in Sample.objects.filter(batch=probe))
    # A brightness floor between the probe's values rejects some candidates, so acceptance
    # has to walk past rejections; the two batches must still agree image for image.
    floor = str(round((values[len(values) // 3] + values[len(values) // 3 - 1]) / 2, 6))
    one = generate(
        capsys,
        lora_run,
        *common,
        "--shard-size",
        "1",
        "--device-batch",
        "1",
        "--set",
        f"brightness_low={floor}",
    )
    many = generate(
        capsys,
        lora_run,
        *common,
        "--shard-size",
        "50",
        "--device-batch",
        "4",
        "--set",
        f"brightness_low={floor}",
    )
    a, b = accepted_pixels(one), accepted_pixels(many)
    assert sorted(a) == sorted(b) and len(a) > 0
    assert Sample.objects.filter(batch=one, verdict=Verdict.REJECTED).exists()
    for key in a:
        assert np.abs(a[key] - b[key]).max() <= 1  # float rounding at most
    assert (
        Job.objects.filter(parent=one.job, kind="generation.shard").count()
        > Job.objects.filter(parent=many.job, kind="generation.shard").count()
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"target": 0}, "must be positive"),
        ({"diagnoses": ["XYZ"]}, "XYZ"),
        ({"diagnoses": ["OTHER"]}, "OTHER is not a class"),
        ({"fst_distribution": {"5": 0.7, "6": 0.7}}, "add up to 1"),
        ({"fst_distribution": {"9": 1.0}}, "types 1-6"),
        ({"overgeneration": 0.5}, "at least 1x"),
        ({"scheduler": "euler"}, "unknown scheduler"),
        ({"steps": 0}, "steps must be"),
        ({"size": 30}, "multiple of 8"),
        ({"seed": -1}, "seed"),
        ({"scoring": {"lpips": 0.2}}, "unknown scoring setting"),
        ({"scoring": {"fid": {"mode": "median"}}}, "unknown threshold mode"),
        ({"scoring": {"apply_uncalibrated": ["fid", "vibes"]}}, "vibes"),
        (
            {"scoring": {"brightness_low": 0.9, "brightness_high": 0.1}},
            "must be below brightness_high",
        ),
    ],
)
def test_bad_batch_requests_are_refused_and_nothing_is_created(lora_run, change, message):
    before = (Batch.objects.count(), Job.objects.count(), Dataset.objects.count())
    with pytest.raises(BatchConfigError, match=message):
        batch_create(**{"model_run": lora_run, "target": 4, "diagnoses": ["MEL"], **change})
    assert (Batch.objects.count(), Job.objects.count(), Dataset.objects.count()) == before


def test_only_finished_lora_or_joint_runs_can_generate(lora_run):
    with pytest.raises(BatchConfigError, match="LoRA or joint"):
        batch_create(model_run=lora_run.parent, target=4)
    Job.objects.filter(pk=lora_run.job_id).update(state="failed")
    lora_run.refresh_from_db()
    with pytest.raises(BatchConfigError, match="has not succeeded"):
        batch_create(model_run=lora_run, target=4)
    assert not Batch.objects.exists()


def test_generate_command_reports_bad_input_plainly(capsys, lora_run):
    with pytest.raises(CommandError, match="FST=SHARE"):
        call_command(
            "generate", "--model", str(lora_run.pk), "--count", "4", "--fst-distribution", "five=1"
        )
    with pytest.raises(CommandError, match="no run 999999"):
        call_command("generate", "--model", "999999", "--count", "4")
    with pytest.raises(CommandError, match="Nothing was queued"):
        call_command(
            "generate", "--model", str(lora_run.pk), "--count", "4", "--set", "sharpness=0.5"
        )
    assert not Batch.objects.exists()
