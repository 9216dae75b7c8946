"""Generation jobs: reference features (gpu), shards (gpu) and the batch report (cpu).

A worker keeps the last model, extractors and reference it loaded, so consecutive shards of a
batch pay for loading once. Shards are idempotent: candidates already stored are skipped, and
a candidate's file name and catalog id are fixed by its place in the plan, so a re-run after a
killed worker cannot store it twice.
"""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.urls import reverse

from catalog.files import image_cache_dir, image_local_path
from catalog.selectors import images_real_of_type
from catalog.services import synthetic_image_create
from fairskin.generation.groups import micro_batches
from fairskin.generation.plan import candidate_seed
from fairskin.progress import JobCancelled
from generation import selectors, services
from generation.models import Batch, BatchState, Sample, Verdict, parse_stratum
from jobs.lease import JobLease
from jobs.models import Job
from jobs.registry import JobContext, Owner, register
from jobs.threads import set_torch_threads
from training.models import Run
from training.selectors import runs_finished, selection_images

logger = logging.getLogger(__name__)

REFERENCE_PER_FST = 2000  # real images per skin type in the reference statistics
_CACHE: dict[str, tuple[Any, Any]] = {}


def _cached(kind: str, key: Any, build):
    """One live object per kind per worker process, rebuilt when its key changes."""
    entry = _CACHE.get(kind)
    if entry is None or entry[0] != key:
        _CACHE.pop(kind, None)
        entry = (key, build())
        _CACHE[kind] = entry
    return entry[1]


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _confidence_run() -> Run | None:
    return runs_finished().filter(is_confidence_model=True).first()


def _extractors():
    from fairskin.generation.extractors import Extractors

    classifier = _confidence_run()
    key = (settings.FAIRSKIN_INCEPTION_WEIGHTS, settings.FAIRSKIN_LPIPS_WEIGHTS,
           settings.FAIRSKIN_CLIP_MODEL, settings.FAIRSKIN_CLIP_WEIGHTS,
           classifier.artifacts_dir if classifier else None)
    return _cached("extractors", key, lambda: Extractors.load(
        device=_device(), inception_weights=settings.FAIRSKIN_INCEPTION_WEIGHTS or None,
        lpips_weights=settings.FAIRSKIN_LPIPS_WEIGHTS or None,
        clip_model=settings.FAIRSKIN_CLIP_MODEL,
        clip_weights=settings.FAIRSKIN_CLIP_WEIGHTS or None,
        classifier_dir=Path(classifier.artifacts_dir) if classifier else None)), classifier


def _reference_images(batch: Batch) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
    """Real images of the model's datasets per skin type, and the images that trained it."""
    lineage = batch.model_run.lineage()
    datasets = sorted({name for r in lineage for name in r.selection.get("datasets", [])})
    fsts = sorted({fst for _, fst in (parse_stratum(k) for k in batch.quotas)})
    cache = image_cache_dir()
    real: list[tuple[str, int]] = []
    for fst in fsts:
        images = images_real_of_type(datasets=datasets, fst=fst, limit=REFERENCE_PER_FST)
        real += [(image_local_path(img, cache), fst) for img in images]
    training: dict[int, str] = {}
    for r in lineage:
        if r.selection.get("datasets"):
            for img in selection_images(selection=r.selection):
                training.setdefault(img.pk, image_local_path(img, cache))
    return real, [(str(pk), path) for pk, path in sorted(training.items())]


def _save_report_statistics(reference: Any, folder: Path) -> None:
    """The real images' Gaussians and feature sample per skin type, readable without torch."""
    arrays: dict[str, np.ndarray] = {}
    for fst, gaussian in reference.inception.items():
        stats = gaussian.to_dict()
        arrays[f"count_{fst}"] = np.array(stats["count"])
        arrays[f"mean_{fst}"] = np.asarray(stats["mean"])
        arrays[f"m2upper_{fst}"] = np.asarray(stats["m2_upper"])
        arrays[f"features_{fst}"] = np.asarray(reference.inception_sample[fst])
    np.savez(folder / "reference-stats.npz", **arrays)


def load_report_statistics(folder: Path) -> tuple[dict[int, Any], dict[int, np.ndarray]]:
    from fairskin.metrics.stats import StreamingGaussian

    gaussians, features = {}, {}
    with np.load(folder / "reference-stats.npz", allow_pickle=False) as data:
        for name in data.files:
            if name.startswith("count_"):
                fst = int(name.removeprefix("count_"))
                mean = data[f"mean_{fst}"]
                gaussians[fst] = StreamingGaussian.from_dict({
                    "format": 1, "dim": int(mean.shape[0]), "count": int(data[name]),
                    "mean": mean, "m2_upper": data[f"m2upper_{fst}"]})
                features[fst] = data[f"features_{fst}"]
    return gaussians, features


def _batch_of(job: Job) -> Batch | None:
    """The batch a generation job works for: its own (prepare) or its parent's (shard, report)."""
    return Batch.objects.filter(job_id=job.parent_id or job.pk).first()


def _batch_owner(job: Job) -> Owner | None:
    batch = _batch_of(job)
    if batch is None:
        return None
    return Owner(label=f"batch {batch.pk}", url=reverse("generation:batch", args=[batch.pk]),
                 cancel=lambda user: services.batch_cancel(batch=batch, user=user),
                 resume=lambda user: services.batch_resume(batch=batch, user=user))


def _prepare_failed(job: Job, error: str) -> None:
    services.batch_preparation_failed(job_id=job.pk, error=error)


@register("generation.prepare", queue="gpu", label="Generation: reference features",
          owner=_batch_owner, on_failed=_prepare_failed)
def prepare_batch(job: Job, progress: JobContext) -> dict[str, Any]:
    from fairskin.generation.reference import Reference
    from fairskin.generation.scoring_config import ScoringConfig

    batch = Batch.objects.select_related("model_run").get(pk=job.params["batch_id"])
    if batch.state != BatchState.PREPARING:
        return _not_needed(batch)
    set_torch_threads()
    # Each attempt builds into a folder of its own; the fenced hand-over publishes it, so an
    # attempt that stalled past its lease can never overwrite what shards are reading.
    staging = Path(batch.artifacts_dir) / f".prepare-attempt-{job.attempt}"
    shutil.rmtree(staging, ignore_errors=True)
    progress.phase("Loading feature extractors")
    extractors, classifier = _extractors()
    real, training = _reference_images(batch)
    progress.log(f"reference: {len(real)} real images over {len(batch.quotas)} strata, "
                 f"{len(training)} training images for the memorization index")
    config = ScoringConfig.build(batch.scoring)
    progress.phase("Reference features")
    reference = Reference.build(extractors, real=real, training=training, size=batch.size,
                                lpips_images=config.lpips_reference_images, seed=batch.seed,
                                progress=progress)
    staging.mkdir(parents=True, exist_ok=True)
    reference.save(staging / "reference")
    _save_report_statistics(reference, staging)
    provenance = extractors.provenance()
    if classifier is not None:
        provenance.setdefault("classifier", {})["run_id"] = classifier.pk
    progress.phase("Planning the first shards")
    result = services.batch_start(batch_id=batch.pk, provenance=provenance,
                                  lease=progress.lease,
                                  publish=lambda: _publish_reference(staging))
    return {"batch_id": batch.pk, "real_images": len(real), "training_images": len(training),
            **result}


def _not_needed(batch: Batch) -> dict[str, Any]:
    """A job whose batch moved on: done if the batch is past it, cancelled if it stopped."""
    if batch.state in (BatchState.CANCELLED, BatchState.FAILED):
        raise JobCancelled(f"batch {batch.pk} is {batch.state}")
    return {"batch_id": batch.pk, "skipped": f"batch is {batch.state}"}


def _publish_reference(staging: Path) -> None:
    """Move an attempt's reference into place (called inside the fenced hand-over)."""
    folder = staging.parent
    target = folder / "reference"
    if target.exists():  # left by an attempt that died between publishing and committing
        shutil.rmtree(target)
    (staging / "reference").rename(target)
    (staging / "reference-stats.npz").replace(folder / "reference-stats.npz")
    for leftover in folder.glob(".prepare-attempt-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _generator(batch: Batch):
    from fairskin.diffusion.base_models import resolve_base_model
    from fairskin.generation.sampler import BatchGenerator

    run_dirs = [r.artifacts_dir for r in batch.model_run.lineage()]
    key = (batch.model_run.base_model, tuple(run_dirs), batch.scheduler)

    def build():
        base = resolve_base_model(batch.model_run.base_model,
                                  cache_dir=settings.FAIRSKIN_MODEL_CACHE)
        return BatchGenerator(base, [Path(d) for d in run_dirs], scheduler=batch.scheduler,
                              device=_device())

    return _cached("generator", key, build)


def _scorer(batch: Batch):
    from fairskin.generation.reference import Reference
    from fairskin.generation.scoring import Scorer
    from fairskin.generation.scoring_config import ScoringConfig

    extractors, _ = _extractors()
    folder = Path(batch.artifacts_dir) / "reference"
    reference = _cached("reference", (batch.pk, str(folder)),
                        lambda: Reference.load(folder, device=_device()))
    return Scorer(extractors, reference, ScoringConfig.build(batch.scoring), size=batch.size)


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG", compress_level=4)
    return buffer.getvalue()


def _thumbnail(pixels: np.ndarray) -> bytes:
    from PIL import Image as PILImage

    from fairskin.imaging.preprocess import THUMBNAIL_SIZE

    image = PILImage.fromarray(pixels).resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE),
                                              PILImage.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _store(batch: Batch, job: Job, lease: JobLease, *, dx: str, fst: int, index: int, seed: int,
           prompt: str, pixels: np.ndarray, score: Any) -> bool:
    """One candidate as a catalog image and its sample; False if it was already stored.

    Fenced by the shard's lease: the files are written and the rows created only while this
    attempt holds the shard, so a stalled attempt that wakes cannot replace stored files.
    """
    with lease.hold():
        if Sample.objects.filter(batch=batch, diagnosis=dx, fst=fst, index=index).exists():
            return False
        source_id = f"{dx}-fst{fst}-{index:06d}"
        png = _png(pixels)
        thumbnail = _thumbnail(pixels)
        details = score.to_dict()
        try:
            with transaction.atomic():
                image = synthetic_image_create(
                    dataset=batch.dataset, source_id=source_id, diagnosis=dx, fst=fst,
                    png=png, thumbnail_jpeg=thumbnail, width=pixels.shape[1],
                    height=pixels.shape[0],
                    metadata={"batch": batch.pk, "seed": seed, "index": index})
                Sample.objects.create(
                    batch=batch, image=image, diagnosis=dx, fst=fst, index=index, seed=seed,
                    prompt=prompt, negative_prompt=batch.negative_prompt, steps=batch.steps,
                    guidance=batch.guidance, scheduler=batch.scheduler,
                    model_runs=[r.pk for r in batch.model_run.lineage()],
                    metrics=details["metrics"], checks=details["checks"],
                    failed_checks=list(score.reasons),
                    clip_embedding=np.asarray(score.clip_embedding, dtype=np.float32).tobytes(),
                    inception_features=np.asarray(score.inception_features,
                                                  dtype=np.float32).tobytes(),
                    verdict=Verdict.PENDING, shard_job=job)
        except IntegrityError:
            return False  # another shard stored this candidate first
    return True


@register("generation.shard", queue="gpu", label="Generation: shard", owner=_batch_owner)
def generate_shard(job: Job, progress: JobContext) -> dict[str, Any]:
    import torch
    from threadpoolctl import threadpool_limits

    from fairskin.diffusion.tokens import prompt_for

    batch = Batch.objects.select_related("model_run", "dataset").get(pk=job.params["batch_id"])
    if batch.state != BatchState.GENERATING:
        return _not_needed(batch)
    set_torch_threads()
    ranges = job.params["ranges"]
    wanted = [(dx, fst, i) for dx, fst, start, stop in ranges for i in range(start, stop)]
    have = set(Sample.objects.filter(batch=batch, diagnosis__in={w[0] for w in wanted})
               .values_list("diagnosis", "fst", "index"))
    todo = [w for w in wanted if w not in have and
            services.stratum_key(w[0], w[1]) not in batch.outcomes]
    progress.log(f"{len(wanted)} candidates, {len(wanted) - len(todo)} already stored or not "
                 "needed")
    progress.phase("Loading the model and the scoring reference")
    generator = _generator(batch)
    scorer = _scorer(batch)
    environment = generator.environment()
    if services.batch_record_environment(batch_id=batch.pk, environment=environment,
                                         lease=progress.lease):
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
        images = generator.generate([prompt] * group.size, seeds, steps=batch.steps,
                                    guidance=batch.guidance,
                                    negative_prompt=batch.negative_prompt, size=batch.size)
        # Scoring's numpy/scipy parts are small; one BLAS thread keeps OpenBLAS's spinning
        # workers from stealing the cores torch needs for the next generation call
        # (docs/benchmarks.md, "Generation": 0.24 s vs 0.14 s per image on 2 cores). The whole
        # group is scored too, so a candidate's scores do not depend on the shard either.
        with threadpool_limits(limits=1, user_api="blas"):
            scores = scorer.score(images, diagnoses=[dx] * group.size, fsts=[fst] * group.size)
        pixels = (images.mul(255).round().clamp(0, 255).to(torch.uint8)
                  .permute(0, 2, 3, 1).cpu().numpy())
        for index, position in zip(group.wanted, group.positions, strict=True):
            stored += _store(batch, job, progress.lease, dx=dx, fst=fst, index=index,
                             seed=seeds[position], prompt=prompt, pixels=pixels[position],
                             score=scores[position])
        done += len(group.wanted)
    progress.update(len(todo), len(todo), f"{stored} candidates stored")
    progress.phase("Deciding acceptance and planning", total=len(todo), done=len(todo))
    result = services.batch_advance(batch_id=batch.pk, current_job=job.pk, lease=progress.lease)
    return {"batch_id": batch.pk, "stored": stored, "skipped": len(wanted) - len(todo),
            **result}


@register("generation.report", queue="cpu", label="Generation: batch metrics",
          owner=_batch_owner)
def report_batch(job: Job, progress: JobContext) -> dict[str, Any]:
    from fairskin.generation.report import AcceptedImage, batch_report

    batch = Batch.objects.get(pk=job.params["batch_id"])
    if batch.state != BatchState.REPORTING:
        return _not_needed(batch)
    progress.phase("Batch metrics")
    gaussians, features = load_report_statistics(Path(batch.artifacts_dir))
    accepted = Sample.objects.filter(batch=batch, verdict=Verdict.ACCEPTED).order_by(
        "diagnosis", "fst", "index").only("diagnosis", "fst", "metrics", "clip_embedding",
                                          "inception_features")
    total = accepted.count()

    def rows():
        for n, s in enumerate(accepted.iterator(chunk_size=256)):
            if n % 256 == 0:
                progress.update(n, total, "streaming features")
            yield AcceptedImage(s.diagnosis, s.fst,
                                np.frombuffer(bytes(s.inception_features), dtype=np.float32),
                                np.frombuffer(bytes(s.clip_embedding), dtype=np.float32),
                                s.metrics)

    report = batch_report(rows(), reference=gaussians, reference_features=features,
                          provenance=batch.provenance, seed=batch.seed)
    report["strata"] = selectors.batch_strata(batch=batch)
    report["shortfall"] = sum(r["shortfall"] or 0 for r in report["strata"])
    report["accepted"] = total
    progress.update(total, total, "report written")
    services.batch_finish(batch_id=batch.pk, report=report, lease=progress.lease)
    return {"batch_id": batch.pk, "accepted": total, "shortfall": report["shortfall"]}
