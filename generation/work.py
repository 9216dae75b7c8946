"""Worker-side generation services: a batch's reference features (gpu), its shards (gpu) and
its report (cpu), called by generation.job_kinds.

A worker keeps the last model, extractors and reference it loaded, so consecutive shards of a
batch pay for loading once. Shards are idempotent: candidates already stored are skipped, and
a candidate's file name and catalog id are fixed by its place in the plan, so a re-run after a
killed worker cannot store it twice.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction

from catalog.files import image_cache_dir, image_local_path
from catalog.selectors import images_real_of_type
from catalog.services import synthetic_image_create
from fairskin.generation.groups import micro_batches
from fairskin.generation.plan import CandidateRange, Stratum, candidate_seed
from fairskin.generation.reference_stats import read_statistics
from fairskin.imaging.encode import encode_for_storage
from fairskin.labels import FST_TYPES
from fairskin.live_objects import LiveObjects
from fairskin.progress import JobCancelled
from fairskin.provenance import check_identity, write_identity
from generation import advance, conditioning, selectors, services
from generation.models import Batch, BatchState, Sample, Verdict
from jobs import artifacts
from jobs.registry import JobContext, LeaseHolder
from jobs.threads import set_torch_threads
from training.models import Run
from training.selectors import run_model_folder, runs_finished, selection_images

logger = logging.getLogger(__name__)

REFERENCE_PER_FST = 2000  # real images per skin type in the reference statistics
# The model, the extractors and the reference this worker process loaded last.
LIVE = LiveObjects()


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _confidence_run() -> Run | None:
    return runs_finished().filter(is_confidence_model=True).first()


def _extractors():
    from fairskin.generation.extractors import Extractors

    classifier = _confidence_run()
    key = (
        settings.FAIRSKIN_INCEPTION_WEIGHTS,
        settings.FAIRSKIN_LPIPS_WEIGHTS,
        settings.FAIRSKIN_CLIP_MODEL,
        settings.FAIRSKIN_CLIP_WEIGHTS,
        classifier.artifacts_dir if classifier else None,
    )
    return LIVE.get(
        "extractors",
        key,
        lambda: Extractors.load(
            device=_device(),
            inception_weights=settings.FAIRSKIN_INCEPTION_WEIGHTS or None,
            lpips_weights=settings.FAIRSKIN_LPIPS_WEIGHTS or None,
            clip_model=settings.FAIRSKIN_CLIP_MODEL,
            clip_weights=settings.FAIRSKIN_CLIP_WEIGHTS or None,
            classifier_dir=run_model_folder(classifier) if classifier else None,
        ),
    ), classifier


def reference_images(
    batch: Batch,
) -> tuple[list[tuple[str, int]], list[tuple[str, str]], list[tuple[str, int, str]]]:
    """Per skin type, real images of the model's datasets (the reference); the images that
    trained it; and held-out real images in neither, for calibrated thresholds (drawn by
    `fairskin.generation.calibration.split_held_out`). Besides the batch's skin types, the
    types its scarce ones are pooled with (`calibration_pool`) get a reference and held-out
    images too: a held-out image is measured against its own type's reference. A pool that
    cannot reach the minimum even so holds nothing out."""
    from fairskin.generation.calibration import HELD_OUT_PER_TYPE, calibration_pool, split_held_out
    from fairskin.generation.calibration import MIN_HELD_OUT_PER_TYPE as MIN_HELD_OUT

    lineage = batch.model_run.lineage()
    datasets = sorted({name for r in lineage for name in r.selection.get("datasets", [])})
    cache = image_cache_dir()
    training: dict[int, str] = {}
    for r in lineage:
        if r.selection.get("datasets"):
            for img in selection_images(selection=r.selection):
                training.setdefault(img.pk, image_local_path(img, cache))
    window = REFERENCE_PER_FST + HELD_OUT_PER_TYPE + len(training)
    drawn = {}
    for fst in FST_TYPES:
        images = {i.pk: i for i in images_real_of_type(datasets=datasets, fst=fst, limit=window)}
        drawn[fst] = (
            images,
            *split_held_out(list(images), set(training), seed=batch.seed, fst=fst),
        )
    counts = {fst: len(held) for fst, (_, _, held) in drawn.items()}
    wanted = {entry.stratum.fst for entry in batch.plan()}
    pools = [calibration_pool(f, counts) for f in wanted]
    # A pool that cannot reach the minimum holds nothing out: its reference keeps the images.
    useful = set().union(*(p for p in pools if sum(counts[g] for g in p) >= MIN_HELD_OUT))
    real: list[tuple[str, int]] = []
    held_out: list[tuple[str, int, str]] = []
    for fst in sorted(wanted | useful):
        images, kept, held = drawn[fst] if fst in useful else (drawn[fst][0], drawn[fst][0], [])
        real += [
            (image_local_path(images[pk], cache), fst) for pk in list(kept)[:REFERENCE_PER_FST]
        ]
        held_out += [
            (image_local_path(images[pk], cache), fst, images[pk].diagnosis) for pk in held
        ]
    return real, [(str(pk), path) for pk, path in sorted(training.items())], held_out


def batch_prepare(*, batch_id: int, attempt: int, progress: JobContext) -> dict[str, Any]:
    """Build the batch's scoring reference, then hand on to the first shards (fenced)."""
    from fairskin.generation.held_out import filter_calibration, measure_held_out
    from fairskin.generation.reference import Reference
    from fairskin.generation.scoring import Scorer
    from fairskin.generation.scoring_config import ScoringConfig

    batch = Batch.objects.select_related("model_run").get(pk=batch_id)
    if batch.state != BatchState.PREPARING:
        return _not_needed(batch)
    set_torch_threads()
    # Each attempt builds into a folder of its own; the fenced hand-over publishes it, so an
    # attempt that stalled past its lease can never overwrite what shards are reading.
    staging = batch.folder / f".prepare-attempt-{attempt}"
    shutil.rmtree(staging, ignore_errors=True)
    progress.phase("Loading feature extractors")
    extractors, classifier = _extractors()
    real, training, held_out = reference_images(batch)
    progress.log(
        f"reference: {len(real)} real images over {len(batch.quotas)} strata, "
        f"{len(training)} training images for the memorization index, {len(held_out)} "
        "held-out real images for calibrated thresholds"
    )
    config = ScoringConfig.build(batch.scoring)
    progress.phase("Reference features")
    reference = Reference.build(
        extractors,
        real=real,
        training=training,
        size=batch.size,
        lpips_images=config.lpips_reference_images,
        seed=batch.seed,
        progress=progress,
    )
    scorer = Scorer(extractors, reference, config, size=batch.size)
    reference.held_out, reference.held_out_counts = measure_held_out(
        scorer, held_out, progress=progress
    )
    fsts = sorted({entry.stratum.fst for entry in batch.plan()})
    calibration = filter_calibration(scorer, fsts, batch.filter_percentile)
    staging.mkdir(parents=True, exist_ok=True)
    reference.save(staging / "reference")
    write_identity(staging / "reference", reference_identity(batch))
    provenance = extractors.provenance()
    if classifier is not None:
        provenance.setdefault("classifier", {})["run_id"] = classifier.pk
    progress.phase("Planning the first shards")
    result = advance.batch_start(
        batch_id=batch.pk,
        provenance=provenance,
        calibration=calibration,
        lease=progress.lease,
        publish=lambda: services.publish_reference(batch, staging),
    )
    return {
        "batch_id": batch.pk,
        "real_images": len(real),
        "training_images": len(training),
        "held_out_images": len(held_out),
        **result,
    }


def _not_needed(batch: Batch) -> dict[str, Any]:
    """A job whose batch moved on: done if the batch is past it, cancelled if it stopped."""
    if batch.state in (BatchState.CANCELLED, BatchState.FAILED):
        raise JobCancelled(f"batch {batch.pk} is {batch.state}")
    return {"batch_id": batch.pk, "skipped": f"batch is {batch.state}"}


def reference_identity(batch: Batch) -> dict[str, Any]:
    return {"batch": batch.identity or f"batch-{batch.pk}"}


def reference_folder(batch: Batch) -> Path:
    """The batch's published scoring reference, refused (`IdentityMismatch`) unless it records
    this batch's identity. References published before records existed are accepted only in a
    folder named the old way (batch-<id>), which the issue-15 migration kept on its own row."""
    # Fetched from the store once per host (checked against its manifest's hashes).
    folder = artifacts.fetch(batch.artifacts_dir, include=lambda rel: rel.startswith("reference/"))
    folder = folder / "reference"
    legacy = batch.identity == f"batch-{batch.pk}"
    check_identity(
        folder, reference_identity(batch), what="the scoring reference", accept_unrecorded=legacy
    )
    return folder


def _generator(batch: Batch):
    from fairskin.generation.sampler import BatchGenerator

    lineage = batch.model_run.lineage()
    key = (batch.model_run.base_model, tuple(r.artifacts_dir for r in lineage), batch.scheduler)

    def build():
        base = artifacts.base_model(batch.model_run.base_model)
        folders = [run_model_folder(r) for r in lineage]  # from the store, once per host
        return BatchGenerator(base, folders, scheduler=batch.scheduler, device=_device())

    return LIVE.get("generator", key, build)


def _scorer(batch: Batch):
    from fairskin.generation.reference import Reference
    from fairskin.generation.scoring import Scorer
    from fairskin.generation.scoring_config import ScoringConfig

    folder = reference_folder(batch)  # refused before any model loads if not this batch's
    extractors, _ = _extractors()
    reference = LIVE.get(
        "reference", (batch.pk, str(folder)), lambda: Reference.load(folder, device=_device())
    )
    return Scorer(extractors, reference, ScoringConfig.build(batch.scoring), size=batch.size)


def _store(
    batch: Batch,
    shard_job_id: int,
    lease: LeaseHolder,
    *,
    dx: str,
    fst: int,
    index: int,
    seed: int,
    prompt: str,
    pixels: np.ndarray,
    score: Any,
    candidate: dict[str, Any],
) -> bool:
    """One candidate as a catalog image and its sample (``candidate``: its conditioning);
    False if it was already stored.

    Fenced by the shard's lease: the files are written and the rows created only while this
    attempt holds the shard, so a stalled attempt that wakes cannot replace stored files.
    """
    with lease.hold():
        if Sample.objects.filter(batch=batch, diagnosis=dx, fst=fst, index=index).exists():
            return False
        source_id = f"{dx}-fst{fst}-{index:06d}"
        encoded = encode_for_storage(pixels)
        details = score.to_dict()
        if batch.dataset is None:  # batch_create always makes one
            raise ValueError(f"batch {batch.pk} has no dataset to store its images in")
        try:
            with transaction.atomic():
                image = synthetic_image_create(
                    dataset=batch.dataset,
                    source_id=source_id,
                    diagnosis=dx,
                    fst=fst,
                    png=encoded.png,
                    thumbnail_jpeg=encoded.thumbnail_jpeg,
                    width=encoded.width,
                    height=encoded.height,
                    metadata={"batch": batch.pk, "seed": seed, "index": index}
                    | conditioning.image_metadata(candidate),
                )
                Sample.objects.create(
                    batch=batch,
                    image=image,
                    diagnosis=dx,
                    fst=fst,
                    index=index,
                    seed=seed,
                    prompt=prompt,
                    negative_prompt=batch.negative_prompt,
                    steps=batch.steps,
                    guidance=batch.guidance,
                    scheduler=batch.scheduler,
                    model_runs=[r.pk for r in batch.model_run.lineage()],
                    **candidate,
                    metrics=details["metrics"],
                    checks=details["checks"],
                    failed_checks=list(score.reasons),
                    clip_embedding=np.asarray(score.clip_embedding, dtype=np.float32).tobytes(),
                    inception_features=np.asarray(
                        score.inception_features, dtype=np.float32
                    ).tobytes(),
                    verdict=Verdict.PENDING,
                    shard_job_id=shard_job_id,
                )
        except IntegrityError:
            return False  # another shard stored this candidate first
    return True


def batch_shard_generate(
    *, batch_id: int, shard_job_id: int, ranges: list[CandidateRange], progress: JobContext
) -> dict[str, Any]:
    """Generate, score and store a shard's candidates (idempotent), then decide and plan on."""
    import torch
    from threadpoolctl import threadpool_limits

    from fairskin.diffusion.tokens import prompt_for

    batch = Batch.objects.select_related("model_run", "dataset").get(pk=batch_id)
    if batch.state != BatchState.GENERATING:
        return _not_needed(batch)
    set_torch_threads()
    wanted = [(r.diagnosis, r.fst, i) for r in ranges for i in range(r.start, r.stop)]
    have = set(
        Sample.objects.filter(batch=batch, diagnosis__in={w[0] for w in wanted}).values_list(
            "diagnosis", "fst", "index"
        )
    )
    todo = [w for w in wanted if w not in have and Stratum(w[0], w[1]).key not in batch.outcomes]
    progress.log(
        f"{len(wanted)} candidates, {len(wanted) - len(todo)} already stored or not needed"
    )
    progress.phase("Loading the model and the scoring reference")
    generator = _generator(batch)
    scorer = _scorer(batch)
    environment = generator.environment()
    if advance.batch_record_environment(
        batch_id=batch.pk, environment=environment, lease=progress.lease
    ):
        progress.log(f"recorded this machine for the batch's pixels: {environment}")
    # A device pass always computes one whole fixed micro-batch (fairskin.generation.groups):
    # a candidate's pixels depend on its group, never on the shard's boundaries or on what a
    # resumed shard already stored. Members not wanted here are computed and dropped.
    stored = done = 0
    progress.phase("Generating and scoring candidates", total=len(todo))
    for group in micro_batches(todo, batch.micro_batch):
        progress.update(done, len(todo), f"{stored} candidates stored")
        dx, fst = group.stratum
        prompt = prompt_for(dx, fst, available=generator.tokens)
        seeds = [candidate_seed(batch.seed, group.stratum, i) for i in group.indices]
        reference, init = conditioning.reference_rows(batch, Stratum(dx, fst).key, group.size)
        candidate = conditioning.sample_conditioning(batch, dx, fst, reference)
        images = generator.generate(
            [prompt] * group.size,
            seeds,
            steps=batch.steps,
            guidance=batch.guidance,
            negative_prompt=batch.negative_prompt,
            size=batch.size,
            **conditioning.generation_inputs(batch, dx, fst, init, group.size),
        )
        # Scoring's numpy/scipy parts are small; one BLAS thread keeps OpenBLAS's spinning
        # workers from stealing the cores torch needs for generation (docs/benchmarks.md,
        # "Generation"). The whole group is scored, so scores do not depend on the shard.
        with threadpool_limits(limits=1, user_api="blas"):
            scores = scorer.score(
                images, diagnoses=[dx] * group.size, fsts=[fst] * group.size, references=init,
                reference_ids=[reference] * group.size,
            )  # fmt: skip
        pixels = (
            images.mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        )
        for index, position in zip(group.wanted, group.positions, strict=True):
            stored += _store(
                batch,
                shard_job_id,
                progress.lease,
                dx=dx,
                fst=fst,
                index=index,
                seed=seeds[position],
                prompt=prompt,
                pixels=pixels[position],
                score=scores[position],
                candidate=candidate,
            )
        done += len(group.wanted)
    progress.update(len(todo), len(todo), f"{stored} candidates stored")
    progress.phase("Deciding acceptance and planning", total=len(todo), done=len(todo))
    result = advance.batch_advance(
        batch_id=batch.pk, current_job=shard_job_id, lease=progress.lease
    )
    return {"batch_id": batch.pk, "stored": stored, "skipped": len(wanted) - len(todo), **result}


def batch_report_write(*, batch_id: int, progress: JobContext) -> dict[str, Any]:
    """The batch's metrics over its accepted images, streamed from the database."""
    from fairskin.generation.report import AcceptedImage, batch_report

    batch = Batch.objects.get(pk=batch_id)
    if batch.state != BatchState.REPORTING:
        return _not_needed(batch)
    progress.phase("Batch metrics")
    gaussians, features = read_statistics(reference_folder(batch))
    # The reference may hold types the batch does not generate (pooled for calibration).
    fsts = {entry.stratum.fst for entry in batch.plan()}
    gaussians = {f: g for f, g in gaussians.items() if f in fsts}
    features = {f: v for f, v in features.items() if f in fsts}
    accepted = (
        Sample.objects.filter(batch=batch, verdict=Verdict.ACCEPTED)
        .order_by("diagnosis", "fst", "index")
        .only("diagnosis", "fst", "metrics", "clip_embedding", "inception_features")
    )
    total = accepted.count()

    def rows():
        for n, s in enumerate(accepted.iterator(chunk_size=256)):
            if n % 256 == 0:
                progress.update(n, total, "streaming features")
            yield AcceptedImage(
                s.diagnosis,
                s.fst,
                np.frombuffer(bytes(s.inception_features), dtype=np.float32),
                np.frombuffer(bytes(s.clip_embedding), dtype=np.float32),
                s.metrics,
            )

    report = batch_report(
        rows(),
        reference=gaussians,
        reference_features=features,
        provenance=batch.provenance,
        seed=batch.seed,
    )
    report["strata"] = selectors.batch_strata(batch=batch)
    report["shortfall"] = sum(r["shortfall"] or 0 for r in report["strata"])
    report["accepted"] = total
    report["filter_calibration"] = batch.filter_calibration
    progress.update(total, total, "report written")
    advance.batch_finish(batch_id=batch.pk, report=report, lease=progress.lease)
    return {"batch_id": batch.pk, "accepted": total, "shortfall": report["shortfall"]}
