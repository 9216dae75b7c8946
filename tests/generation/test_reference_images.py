"""Batches generated img2img from catalog reference images (issue 17, part 2): references are
resolved and checked at creation, each stratum draws its own from the seed, every sample records
its reference and strength, and the memorization check rejects an output too close to its own
reference. Real batches run on the tiny model, their jobs executed one by one."""

import io

import pytest
import torch
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.urls import reverse
from PIL import Image as PILImage

from catalog.models import Image
from fairskin.generation.reference_images import (
    ReferenceCandidate,
    ReferenceImageError,
    assign_references,
    load_reference,
)
from fairskin.generation.scoring import Scorer
from fairskin.generation.scoring_config import ScoringConfig
from generation.conditioning import reference_rows
from generation.models import Batch, BatchState, Sample
from generation.services import BatchConfigError, batch_create
from generation.work import _scorer
from jobs.models import Job, JobState
from jobs.runner import execute_job
from tests.factories import make_user

pytestmark = pytest.mark.django_db
SIZE = 32


def create(lora_run, **kwargs) -> Batch:
    settings = {
        "target": 2,
        "diagnoses": ["MEL"],
        "fst_distribution": {6: 1.0},
        "seed": 1,
        "steps": 4,
        "size": SIZE,
        "device_batch": 2,
        "enqueue": False,
    }
    return batch_create(model_run=lora_run, **(settings | kwargs))


def run_queued(batch: Batch) -> Batch:
    while (
        job := Job.objects.filter(pk=batch.job_id, state=JobState.QUEUED).first()
        or Job.objects.filter(parent_id=batch.job_id, state=JobState.QUEUED).order_by("id").first()
    ) is not None:
        assert execute_job(job_id=job.pk) == "succeeded", (
            job.title,
            Job.objects.get(pk=job.pk).error,
        )
    batch.refresh_from_db()
    assert batch.state == BatchState.FINISHED, batch.error
    return batch


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (width, height), (180, 120, 90)).save(out, format="PNG")
    return out.getvalue()


def crafted(demo, name: str, content: bytes, *, split: str = "train") -> Image:
    image = Image.objects.create(
        dataset=demo,
        source_id=name,
        file_name=f"{name}.png",
        diagnosis="MEL",
        fst_low=6,
        fst_high=6,
        split=split,
    )
    image.preprocessed.save(f"{name}.png", ContentFile(content))
    return image


def mel(demo, split: str) -> Image:
    image = Image.objects.filter(dataset=demo, diagnosis="MEL", split=split).order_by("pk").first()
    assert image is not None and image.preprocessed, f"the demo has no MEL image in {split}"
    return image


def test_a_stratum_draws_its_reference_by_the_written_rule():
    refs = [
        ReferenceCandidate(1, "MEL", 6),
        ReferenceCandidate(2, "MEL", 6),
        ReferenceCandidate(3, "MEL", 4),
        ReferenceCandidate(4, "MEL", 2),
        ReferenceCandidate(5, "MEL", None),
        ReferenceCandidate(6, "NV", 3),
    ]
    strata = [("MEL", 6), ("MEL", 3), ("MEL", 5), ("NV", 1)]
    chosen = assign_references(strata, refs, seed=0)
    assert chosen["MEL:6"] in (1, 2)  # its own type
    assert chosen["MEL:3"] == 3  # types 2 and 4 are as near: the darker
    assert chosen["MEL:5"] in (1, 2)  # types 4 and 6 are as near: the darker
    assert chosen["NV:1"] == 6  # the only NV, however far
    # Deterministic from the seed and the stratum alone: other strata or order do not matter.
    assert assign_references([("MEL", 6)], refs[::-1], seed=0)["MEL:6"] == chosen["MEL:6"]
    draws = {assign_references([("MEL", 6)], refs, seed=s)["MEL:6"] for s in range(20)}
    assert draws == {1, 2}  # the seed picks among equals
    assert assign_references([("MEL", 1)], [ReferenceCandidate(5, "MEL", None)], 0) == {"MEL:1": 5}
    with pytest.raises(ReferenceImageError, match="no reference image for BCC FST 2, DF FST 6"):
        assign_references([("BCC", 2), ("MEL", 6), ("DF", 6)], refs, seed=0)


def test_bad_references_are_refused_before_anything_is_created(lora_run, demo):
    before = (Batch.objects.count(), Job.objects.count())
    test_image = mel(demo, "test")
    cases = [
        ({"image_ids": [10**9]}, {}, f"reference images not found: [{10**9}]"),
        (
            {"image_ids": [test_image.pk]},
            {},
            f"reference image {test_image.pk} is in the test split of demo: generating from it "
            "would leak it into evaluation",
        ),
        ({"dataset": "demo", "diagnosis": "MEL", "split": "test"}, {}, "leak it into evaluation"),
        ({"dataset": "demo", "diagnosis": "NV"}, {}, "no reference image for MEL FST 6"),
        ({"dataset": "nowhere"}, {}, "matches no real image"),
        ({"image_ids": [1], "dataset": "demo"}, {}, "give either"),
        ({"images": [1]}, {}, "unknown keys ['images']"),
        ({"image_ids": "1"}, {}, "must be a list of image ids"),
        ({"dataset": "demo"}, {"reference_strength": 0}, "must be in (0, 1], got 0"),
        ({"dataset": "demo"}, {"reference_strength": 1.5}, "must be in (0, 1], got 1.5"),
        ({"dataset": "demo"}, {"reference_strength": 0.2}, "with 4 steps runs no denoising step"),
    ]
    for reference, extra, message in cases:
        with pytest.raises(BatchConfigError) as caught:
            create(lora_run, reference=reference, **extra)
        assert message in str(caught.value), (reference, str(caught.value))

    corrupt = crafted(demo, "corrupt", b"not a png at all")
    oblong = crafted(demo, "oblong", png(64, 48))
    small = crafted(demo, "small", png(16, 16))
    with pytest.raises(BatchConfigError) as caught:
        create(lora_run, reference={"image_ids": [corrupt.pk, oblong.pk, small.pk]})
    message = str(caught.value)
    assert f"reference image {corrupt.pk}: its preprocessed file" in message
    assert "cannot be read (UnidentifiedImageError" in message
    assert f"reference image {oblong.pk} is 64x48; references must be square" in message
    assert f"reference image {small.pk} is 16x16, smaller than the batch's 32x32" in message
    assert (Batch.objects.count(), Job.objects.count()) == before


def test_a_batch_without_references_is_text_to_image_as_before(lora_run, demo):
    batch = run_queued(create(lora_run))
    assert batch.reference == {} and batch.reference_strength is None
    samples = list(Sample.objects.filter(batch=batch).select_related("image"))
    assert samples and all(s.reference_image_id is None for s in samples)
    assert all(s.reference_strength is None for s in samples)
    assert all("reference_image" not in s.image.metadata for s in samples)
    assert all(c["name"] != "reference_copy" for s in samples for c in s.checks)


def test_every_sample_records_its_reference_and_shows_it(lora_run, demo, client, admin_user):
    selection = {"dataset": "demo", "diagnosis": "MEL"}  # the test split is left out
    train = mel(demo, "train")
    batch = run_queued(create(lora_run, reference=selection, reference_strength=0.5))
    assert batch.reference["strata"] == {"MEL:6": train.pk}
    assert batch.reference["image_ids"] == [train.pk]
    assert batch.reference["request"] == selection and batch.reference_strength == 0.5
    samples = list(Sample.objects.filter(batch=batch).select_related("image"))
    assert len(samples) >= 2
    for s in samples:
        assert (s.reference_image_id, s.reference_strength) == (train.pk, 0.5)
        assert s.image.metadata["reference_image"] == train.pk
        copy = next(c for c in s.checks if c["name"] == "reference_copy")
        assert copy["value"] == pytest.approx(s.metrics["reference_lpips"])
    client.force_login(admin_user)
    page = client.get(f"/generation/samples/{samples[0].pk}/").content.decode()
    assert "Reference image" in page and f"/catalog/images/{train.pk}/thumbnail/" in page
    assert "strength 0.5" in page
    batch_page = client.get(reverse("generation:batch", args=[batch.pk])).content.decode()
    assert "img2img from 1 reference image at strength 0.5" in batch_page
    own = f"FST {train.fst_low}" + (" (nearest with one)" if train.fst_low != 6 else "")
    assert f"catalog image {train.pk}</a></td><td>demo</td><td>{own}</td>" in batch_page


def test_an_output_too_close_to_its_reference_is_rejected_as_a_copy(lora_run, demo):
    # The tiny model's LPIPS has random weights: every output is about 0.09-0.11 from its
    # reference whatever the strength (docs/validation/reference-images.md), so a limit of 0.5
    # makes every candidate a copy, and the verdict follows the check.
    scoring = {"memorization": 0.5, "apply_uncalibrated": ["memorization"]}
    reference = {"dataset": "demo", "diagnosis": "MEL"}
    batch = run_queued(create(lora_run, reference=reference, scoring=scoring))
    train = mel(demo, "train")
    samples = list(Sample.objects.filter(batch=batch))
    assert samples and all(s.verdict == "rejected" for s in samples)
    for s in samples:
        expected = f"too close to its reference image {train.pk}: memorization "
        assert any(r.startswith(expected) for r in s.reasons), s.reasons

    # Through the batch's own scorer at a limit of 0.01: an exact copy of the reference is
    # rejected, another real image (NV) at the same distance as any output passes.
    loaded = _scorer(batch)
    config = ScoringConfig.build({"memorization": 0.01, "apply_uncalibrated": ["memorization"]})
    scorer = Scorer(loaded.extractors, loaded.reference, config, size=SIZE)
    _, rows = reference_rows(batch, "MEL:6", 2)
    other = Image.objects.filter(dataset=demo, diagnosis="NV").exclude(preprocessed="").first()
    other_pixels = load_reference(other.preprocessed.path, SIZE)
    other_rows = torch.from_numpy(other_pixels).permute(2, 0, 1).float().div(255)
    images = torch.stack([rows[0], other_rows])
    copy, different = scorer.score(
        images, diagnoses=["MEL", "MEL"], fsts=[6, 6], references=rows,
        reference_ids=[train.pk, train.pk],
    )  # fmt: skip
    print({"copy": copy.metrics["reference_lpips"], "other": different.metrics["reference_lpips"]})
    assert copy.metrics["reference_lpips"] == pytest.approx(0.0, abs=1e-6)
    reason = f"too close to its reference image {train.pk}: memorization 0.000 < 0.010"
    assert reason + " (uncalibrated)" in copy.reasons
    check = next(c for c in different.checks if c.name == "reference_copy")
    assert check.passed and check.value > 0.01
    assert not any("too close to its reference" in r for r in different.reasons)


def test_the_generate_command_takes_references(lora_run, demo, capsys):
    common = ["--model", str(lora_run.pk), "--count", "2", "--diagnosis", "MEL"]
    common += ["--fst-distribution", "6=1", "--steps", "4", "--size", str(SIZE), "--seed", "1"]
    test_image = mel(demo, "test")
    refusals = [
        (["--reference-image", str(test_image.pk)], "would leak it into evaluation"),
        (["--reference-selection", "[1]"], "must be a JSON object"),
        (["--reference-selection", "{dataset"], "is not JSON"),
        (["--reference-selection", '{"dataset": "demo"}', "--reference-image", "1"], "either"),
        (["--reference-image", str(mel(demo, "train").pk), "--reference-strength", "0"], "(0, 1]"),
    ]
    for args, message in refusals:
        with pytest.raises(CommandError) as caught:
            call_command("generate", *common, *args)
        assert message in str(caught.value), (args, str(caught.value))
    assert not Batch.objects.exists()

    selection = '{"dataset": "demo", "diagnosis": "MEL"}'
    args = ["--reference-selection", selection, "--reference-strength", "0.75", "--wait"]
    call_command("generate", *common, *args)
    batch = Batch.objects.get(pk=int(capsys.readouterr().out.strip().splitlines()[-1]))
    assert batch.state == BatchState.FINISHED, batch.error
    assert batch.reference["strength"] == 0.75
    assert batch.reference["strata"] == {"MEL:6": mel(demo, "train").pk}
    strengths = set(Sample.objects.filter(batch=batch).values_list("reference_strength", flat=True))
    assert strengths == {0.75}


def test_the_admin_launch_form_takes_references(client, lora_run, demo):
    client.force_login(make_user("engineer", username="eng-refs"))
    url = reverse("admin:generation_batch_launch")
    assert 'name="reference_strength"' in client.get(url).content.decode()
    base = {
        "model_run": lora_run.pk,
        "target": 2,
        "diagnoses": ["MEL"],
        "overgeneration": 1.5,
        "scheduler": "ddim",
        "steps": 4,
        "guidance": 7.5,
        "negative_prompt": "blurry",
        "size": SIZE,
        "seed": 3,
        "shard_size": 64,
        "device_batch": 8,
        "scoring": "{}",
        "filter_percentile": 95,
        **{f"fst_{f}": 1.0 if f == 6 else 0 for f in range(1, 7)},
    }
    test_image = mel(demo, "test")
    bad = client.post(url, {**base, "reference": f'{{"image_ids": [{test_image.pk}]}}'})
    assert "would leak it into evaluation" in bad.content.decode()
    assert (
        "the reference must be a JSON object"
        in client.post(url, {**base, "reference": "[1]"}).content.decode()
    )
    assert not Batch.objects.exists()
    plain = client.post(url, base)
    assert plain.status_code == 302 and Batch.objects.get().reference == {}
    chosen = client.post(
        url,
        {**base, "reference": '{"dataset": "demo", "diagnosis": "MEL"}', "reference_strength": 0.8},
    )
    batch = Batch.objects.exclude(reference={}).get()
    assert chosen.status_code == 302 and batch.reference_strength == 0.8
    assert batch.reference["strata"] == {"MEL:6": mel(demo, "train").pk}
