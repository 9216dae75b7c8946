"""A batch's filter thresholds calibrated on held-out real images, end to end on the tiny model:
the held-out images are in neither the reference nor the training images, the percentile is a
validated batch setting, and the batch stores, reports and shows per check its threshold, how
it was set and the share of held-out real images it would reject."""

import json

import pytest
from django.core.management import call_command
from django.urls import reverse

from catalog.models import Dataset, Image
from fairskin.generation.calibration import MIN_HELD_OUT_PER_TYPE
from generation.models import Batch, BatchState
from generation.services import BatchConfigError, batch_create
from generation.work import reference_folder, reference_images
from tests.factories import make_user
from training.selectors import selection_images

pytestmark = pytest.mark.django_db
CHECKS = ("lpips_real", "memorization", "confidence", "fid")


@pytest.fixture
def demo(capsys):
    """Overrides the conftest's: 12 demo images per class (14 per skin type), so that besides
    the MEL and NV images that trained the model there are real images to hold out."""
    call_command("seed_demo", "--per-class", "12", "--seed", "3")
    capsys.readouterr()
    return Dataset.objects.get(name="demo")


def test_the_filter_percentile_is_a_validated_batch_setting(lora_run):
    before = Batch.objects.count()
    for bad, message in [
        (40, "the filter percentile must be from 50 to 100, got 40"),
        (100.5, "the filter percentile must be from 50 to 100, got 100.5"),
        (float("nan"), "the filter percentile must be a number, got nan"),
    ]:
        with pytest.raises(BatchConfigError, match=message):
            batch_create(model_run=lora_run, target=4, diagnoses=["MEL"], filter_percentile=bad)
    assert Batch.objects.count() == before
    batch = batch_create(
        model_run=lora_run,
        target=4,
        diagnoses=["MEL"],
        filter_percentile=90,
        scoring={"lpips_real": 0.3, "memorization": {"mode": "calibrated", "percentile": 99}},
        enqueue=False,
    )
    assert batch.filter_percentile == 90
    assert batch.scoring["fid"] == {"value": None, "mode": "calibrated", "percentile": 90.0}
    assert batch.scoring["memorization"]["percentile"] == 99.0  # its own percentile wins
    assert (batch.scoring["lpips_real"]["value"], batch.scoring["lpips_real"]["mode"]) == (
        0.3,
        "absolute",
    )
    assert batch.scoring["confidence"]["mode"] == "absolute"


def test_held_out_images_are_in_neither_the_reference_nor_the_training_images(lora_run):
    batch = batch_create(
        model_run=lora_run,
        target=4,
        diagnoses=["MEL"],
        fst_distribution={5: 0.5, 6: 0.5},
        enqueue=False,
    )
    real, training, held_out = reference_images(batch)
    held_paths = {path for path, _, _ in held_out}
    assert held_out and not held_paths & {path for path, _ in real}
    assert not held_paths & {path for _, path in training}
    trained = set(selection_images(selection=lora_run.selection).values_list("pk", flat=True))
    assert {int(pk) for pk, _ in training} == trained
    # 14 images per type, 4 of them MEL or NV (training): 7 held out per type (at most half;
    # the reference keeps the rest). V and VI together hold 14, fewer than the minimum of 20,
    # so IV, the type they pool with next, is drawn too.
    assert MIN_HELD_OUT_PER_TYPE == 20
    assert sorted({f for _, f, _ in held_out}) == sorted({f for _, f in real}) == [4, 5, 6]
    for fst in (4, 5, 6):
        of_type = Image.objects.filter(dataset__name="demo", fst_low=fst, fst_high=fst).count()
        held = sum(1 for _, f, _ in held_out if f == fst)
        assert (of_type, held) == (14, 7)
        assert sum(1 for _, f in real if f == fst) == of_type - held
    # Seeded: the same batch settings hold out the same images.
    assert reference_images(batch)[2] == held_out


def test_a_batch_stores_reports_and_shows_its_filter_calibration(capsys, client, lora_run):
    call_command(
        "generate",
        "--model",
        str(lora_run.pk),
        "--count",
        "4",
        "--diagnosis",
        "MEL",
        "--fst-distribution",
        "5=0.5,6=0.5",
        "--steps",
        "2",
        "--filter-percentile",
        "90",
        "--set",
        "confidence=0.5",
        "--wait",
    )
    batch = Batch.objects.get(pk=int(capsys.readouterr().out.strip().splitlines()[-1]))
    assert batch.state == BatchState.FINISHED, batch.error
    calibration = batch.filter_calibration
    assert calibration["percentile"] == 90 and calibration["min_per_type"] == MIN_HELD_OUT_PER_TYPE
    per_type = {int(k): n for k, n in calibration["held_out_per_type"].items()}
    assert calibration["held_out_total"] == sum(per_type.values())
    rows = {(r["check"], r["fst"]): r for r in calibration["checks"]}
    assert set(rows) == {(c, f) for c in CHECKS for f in (5, 6)}
    assert per_type == {4: 7, 5: 7, 6: 7} and calibration["too_few"] == []
    for fst in (5, 6):
        fid = rows[("fid", fst)]
        assert fid["mode"] == "calibrated" and fid["percentile"] == 90
        assert fid["pool"] == [4, 5, 6] and fid["held_out"] == 21 and fid["status"] == "ok"
        assert fid["source"] == "percentile 90 of 21 held-out real images of FST IV-VI (pooled)"
        assert fid["threshold"] > 0 and 0 <= fid["rejects_held_out"] <= 1
        # Random-weight Inception: a threshold is set and reported but never applied.
        assert fid["calibrated"] is False and fid["applied"] is False
        confidence = rows[("confidence", fst)]
        assert confidence["mode"] == "absolute" and confidence["threshold"] == 0.5
    # The stored reference holds the held-out values the thresholds came from.
    meta = json.loads((reference_folder(batch) / "reference.json").read_text())
    assert {int(k): n for k, n in meta["held_out_counts"].items()} == per_type
    assert set(meta["held_out"]) >= {"fid", "lpips_real", "memorization"}
    # Type IV is in the reference for calibration only: the batch metrics leave it out.
    assert {row["fst"] for row in batch.report["fst"]} == {5, 6}
    # The report carries the same figures, and the batch page shows them.
    assert batch.report["filter_calibration"] == calibration
    client.force_login(make_user("lead"))
    page = client.get(reverse("generation:batch", args=[batch.pk])).content.decode()
    assert "Filter thresholds and held-out real images" in page
    assert f"{calibration['held_out_total']} held-out real images" in page
    assert 'data-testid="calibration-table"' in page
    assert page.count('<tr class="calibration-') == len(CHECKS) * 2
    assert "absolute value 0.5 (set explicitly)" in page
