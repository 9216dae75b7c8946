"""Studies from design to release: validation, preparation, rating rules, the gate, approval
only through a passed gate, and an export that verifies against its manifest."""

import json
import zipfile
from pathlib import Path

import pytest
from django.urls import reverse

from jobs import artifacts
from jobs.models import Job
from jobs.runner import execute_job
from review.models import (
    Assignment,
    BatchRejection,
    Kind,
    Rating,
    RatingAudit,
    Release,
    Study,
    StudyItem,
    StudyState,
)
from review.services.errors import InvalidRating, RatingRefused, ReleaseRefused, StudyError
from review.services.export import release_folder, verify_release
from review.services.gate import study_close
from review.services.rating import rater_queue, rating_submit
from review.services.release import release_approve, release_reject
from review.services.study import study_create
from tests.factories import make_user
from tests.review.conftest import open_study

pytestmark = pytest.mark.django_db


def rate_all(study, rater, score=6):
    while (current := rater_queue(study=study, rater=rater)["current"]) is not None:
        rating_submit(token=current.token, rater=rater, score=score, seconds=3.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"raters": "two"}, "three dermatologists"),
        ({"raters": "duplicate"}, "distinct"),
        ({"raters": "lead"}, "not an active dermatologist"),
        ({"sample_size": 0}, "sample size"),
        ({"control_ratio": 2}, "control ratio"),
        ({"retest_share": 0.9}, "repeated share"),
        ({"criteria": {"mean_min": 9}}, "mean_min"),
        ({"criteria": {"vibes": 1}}, "unknown gate criteria"),
    ],
)
def test_bad_study_designs_are_refused_and_nothing_is_created(batch, raters, lead, change, message):
    chosen = {
        "two": raters[:2],
        "duplicate": [raters[0], raters[0], raters[1]],
        "lead": [raters[0], raters[1], lead],
    }.get(change.pop("raters", None), raters)
    before = (Study.objects.count(), Job.objects.count())
    with pytest.raises(StudyError, match=message):
        study_create(batch=batch, raters=chosen, enqueue=False, **change)
    assert (Study.objects.count(), Job.objects.count()) == before


def test_an_unfinished_batch_cannot_be_studied(batch, raters):
    batch.state = "generating"
    batch.save()
    with pytest.raises(StudyError, match="finished batches"):
        study_create(batch=batch, raters=raters, enqueue=False)


def test_preparation_draws_a_frozen_stratified_sample_with_matched_controls(batch, raters):
    study = open_study(
        batch, raters, sample_size=8, control_ratio=0.25, warmup_count=1, retest_share=0.2
    )
    assert study.state == StudyState.OPEN and study.plan["seed"] == 5
    synthetic = study.items.filter(origin="synthetic")
    real = study.items.filter(origin="real")
    # 12 accepted images in 3 equal strata -> 8 drawn as 3/3/2 (largest remainder); the
    # rejected candidate is never drawn. One warm-up image comes on top.
    assert synthetic.count() == 8 + 1
    assert not synthetic.filter(image__source_id="MEL-fst5-9").exists()
    assert real.count() == 2 and study.plan["controls"] == 2
    # NV x V has one real image of its own; MEL x VI has none and borrows a substitute.
    assert study.plan["substitutions"], study.plan
    assert any(i.substituted_from for i in real) or study.plan["strata"]["MEL:6"]["controls"] == 0
    # Raters are told the share actually drawn: 2 real among 8 + 2 + 1 warm-up images.
    assert "about 18 % of the images you will see are real" in study.instructions
    for rater in raters:
        mine = Assignment.objects.filter(study=study, rater=rater).order_by("position")
        kinds = list(mine.values_list("kind", flat=True))
        assert kinds[0] == Kind.WARMUP and kinds.count(Kind.WARMUP) == 1
        assert kinds.count(Kind.SCORED) == 10 and kinds.count(Kind.RETEST) == 2
    orders = [
        list(
            Assignment.objects.filter(study=study, rater=r, kind=Kind.SCORED)
            .order_by("position")
            .values_list("item_id", flat=True)
        )
        for r in raters
    ]
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1])
    # The same design drawn again (another study, same seed) gives the same sample.
    again = open_study(
        batch, raters, sample_size=8, control_ratio=0.25, warmup_count=1, retest_share=0.2
    )
    assert set(again.items.filter(origin="synthetic").values_list("image_id", flat=True)) == set(
        synthetic.values_list("image_id", flat=True)
    )
    # Every served file is a derivative: the stored PNG, under a random name.
    for item in StudyItem.objects.filter(study=study):
        assert (
            item.derivative.name.endswith(".png")
            and item.image.source_id not in item.derivative.name
        )


def test_ratings_follow_the_order_are_unique_locked_and_audited(batch, raters):
    study = open_study(batch, raters)
    a, b = raters[0], raters[1]
    first = rater_queue(study=study, rater=a)
    current, following = first["current"], first["next"]
    assert first["done"] == 0 and current.position == 0 and following.position == 1
    with pytest.raises(RatingRefused, match="in the order"):
        rating_submit(token=following.token, rater=a, score=5, seconds=1)
    with pytest.raises(RatingRefused, match="not in your assignments"):
        rating_submit(token=current.token, rater=b, score=5, seconds=1)
    with pytest.raises(InvalidRating, match="1 to 7"):
        rating_submit(token=current.token, rater=a, score=8, seconds=1)
    rating, created = rating_submit(token=current.token, rater=a, score=5, seconds=2.5)
    assert created and rating.seconds == 2.5 and rating.kind == Kind.SCORED
    again, created = rating_submit(token=current.token, rater=a, score=5, seconds=9)
    assert not created and again.pk == rating.pk and again.seconds == 2.5  # harmless repeat
    with pytest.raises(RatingRefused, match="locked"):
        rating_submit(token=current.token, rater=a, score=2, seconds=1)
    assert Rating.objects.get(pk=rating.pk).score == 5
    # Leaving and coming back resumes at the first unrated item.
    assert rater_queue(study=study, rater=a)["current"].pk == following.pk
    actions = list(RatingAudit.objects.filter(study=study).values_list("action", flat=True))
    assert actions == ["refused", "refused", "created", "repeated", "refused"]


def test_changes_are_allowed_only_when_the_study_says_so(batch, raters):
    study = open_study(batch, raters, allow_changes=True)
    current = rater_queue(study=study, rater=raters[0])["current"]
    rating_submit(token=current.token, rater=raters[0], score=3, seconds=1)
    changed, created = rating_submit(token=current.token, rater=raters[0], score=6, seconds=1)
    assert not created and changed.score == 6
    audit = RatingAudit.objects.filter(study=study, action="changed").get()
    assert (audit.previous, audit.score) == (3, 6)


def test_leads_see_progress_only_while_open_then_the_gate(client, batch, raters, lead):
    study = open_study(batch, raters)
    rate_all(study, raters[0], score=7)
    client.force_login(lead)
    page = client.get(reverse("review:study", args=[study.pk])).content.decode()
    assert "Scores stay hidden" in page and 'data-testid="gate"' not in page
    assert client.get(reverse("api:study-gate", args=[study.pk])).status_code == 404
    progress = client.get(reverse("api:study-progress", args=[study.pk])).json()
    assert [p["done"] for p in progress] == [10, 0, 0] and "score" not in json.dumps(progress)

    for rater in raters[1:]:
        rate_all(study, rater, score=6)
    client.post(reverse("review:close", args=[study.pk]), {"confirm": "yes"})
    study.refresh_from_db()
    assert study.state == StudyState.CLOSED
    gate = client.get(reverse("api:study-gate", args=[study.pk])).json()
    assert gate["gate"]["passed"] is True
    assert gate["gate"]["mean"]["estimate"] == pytest.approx((7 + 6 + 6) / 3)
    page = client.get(reverse("review:study", args=[study.pk])).content.decode()
    assert 'Gate: <span class="ok">passed' in page
    with pytest.raises(RatingRefused, match="closed"):
        rating_submit(
            token=Assignment.objects.filter(study=study).first().token,
            rater=raters[0],
            score=1,
            seconds=1,
        )


def test_a_failed_gate_cannot_be_approved_but_can_be_rejected(client, batch, raters, lead):
    study = open_study(batch, raters)
    for rater in raters:
        rate_all(study, rater, score=2)
    study_close(study=study, user=lead)
    study.refresh_from_db()
    assert study.gate["gate"]["passed"] is False
    with pytest.raises(ReleaseRefused, match="did not pass"):
        release_approve(study=study, user=lead, enqueue=False)
    client.force_login(lead)
    response = client.post(
        reverse("review:approve", args=[study.pk]), {"confirm": "yes"}, follow=True
    )
    assert "did not pass" in response.content.decode() and not Release.objects.exists()
    with pytest.raises(ReleaseRefused, match="reason"):
        release_reject(batch=batch, study=study, user=lead, reason="  ")
    release_reject(batch=batch, study=study, user=lead, reason="images look smeared")
    assert BatchRejection.objects.get(batch=batch).reason == "images look smeared"
    with pytest.raises(StudyError, match="rejected"):
        study_create(batch=batch, raters=raters, enqueue=False)


def test_an_open_study_cannot_be_approved_and_only_leads_decide(client, batch, raters):
    study = open_study(batch, raters)
    with pytest.raises(ReleaseRefused, match="closed study"):
        release_approve(study=study, user=make_user("lead"), enqueue=False)
    client.force_login(make_user("engineer"))
    assert client.post(reverse("review:approve", args=[study.pk])).status_code == 403
    client.force_login(raters[0])
    assert client.post(reverse("review:close", args=[study.pk])).status_code == 403


def test_approval_creates_an_immutable_release_whose_export_verifies(batch, raters, lead):
    study = open_study(batch, raters)
    for rater in raters:
        rate_all(study, rater, score=7)
    study_close(study=study, user=lead)
    release = release_approve(
        study=Study.objects.get(pk=study.pk), user=lead, note="ok", enqueue=False
    )
    assert release.image_count == 12  # every accepted image of the batch, not the sample
    names = [e["file_name"] for e in release.manifest["images"]]
    assert all(n.startswith("train/MEL/") or n.startswith("train/NV/") for n in names)
    assert release.criteria_version == 2 and release.gate["gate"]["passed"]
    release.note = "edited later"
    with pytest.raises(ValueError, match="immutable"):
        release.save()
    with pytest.raises(ReleaseRefused, match="already released"):
        release_approve(study=Study.objects.get(pk=study.pk), user=lead, enqueue=False)

    outcome = execute_job(job_id=release.export_job_id)
    assert outcome == "succeeded", Job.objects.get(pk=release.export_job_id).error
    release.refresh_from_db()
    folder = release_folder(release)
    assert verify_release(folder, release.manifest) == []
    metadata = (folder / "metadata.csv").read_text().splitlines()
    assert metadata[0].startswith("file_name,label,diagnosis") and len(metadata) == 13
    sheet = (folder / "DATASHEET.md").read_text()
    assert "Intended use" in sheet
    # Every criterion the gate judged is listed with its outcome (none was before issue 15).
    for criterion in ("mean", "median_share", "low_share", "rater_quality", "blinding"):
        assert f"- {criterion}: passed" in sheet
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["manifest_sha256"] == release.manifest_sha256
    with zipfile.ZipFile(artifacts.local_folder(release.export_path)) as zf:
        assert f"release-{release.pk}/metadata.csv" in zf.namelist()
        assert len([n for n in zf.namelist() if n.endswith(".png")]) == 12
    # Tampering with an exported image is caught.
    victim = folder / names[0]
    victim.write_bytes(victim.read_bytes() + b"x")
    assert verify_release(folder, release.manifest) == [
        f"{names[0]}: sha256 differs from the manifest"
    ]
    (folder / "train" / "MEL" / "extra.png").write_bytes(b"x")
    assert "train/MEL/extra.png: not in the manifest" in verify_release(
        Path(folder), release.manifest
    )


def test_only_a_released_batch_trains_a_classifier(batch, raters, lead, capsys):
    from django.core.management import call_command

    from training.services import RunConfigError, run_create

    call_command("seed_demo", "--per-class", "2", "--seed", "1")
    selection = {"datasets": ["demo"], "synthetic_datasets": [batch.dataset.name]}
    with pytest.raises(RunConfigError, match="only once the batch is released"):
        run_create(kind="classifier", selection=selection, enqueue=False)
    study = open_study(batch, raters)
    for rater in raters:
        rate_all(study, rater, score=7)
    study_close(study=study, user=lead)
    release_approve(study=Study.objects.get(pk=study.pk), user=lead, enqueue=False)
    run = run_create(
        kind="classifier",
        selection=selection,
        enqueue=False,
        config={"arch": "resnet18", "image_size": 32, "epochs": 1},
    )
    assert run.image_count > 12
