"""Worker-side training services: a run's training (diffusion or classifier) and the import
of external artifacts, each turning a Run into an engine call (called by training.job_kinds)."""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

from django.conf import settings

from catalog.files import image_cache_dir, image_local_path
from fairskin.diffusion.config import TrainConfig
from jobs import artifacts
from jobs.registry import JobContext
from jobs.threads import set_torch_threads
from training import services
from training.models import GENERATING_KINDS, Run
from training.selectors import (
    classifier_images,
    run_is_finished,
    run_model_folder,
    selection_images,
)


def run_train(*, run_id: int, progress: JobContext) -> dict[str, Any]:
    """Train a run (its lineage's artifacts first), resuming from its last checkpoint."""
    # Imported here: web processes never need torch and diffusers.
    from fairskin.diffusion.checkpoints import run_identity
    from fairskin.diffusion.launch import train_on_ranks
    from fairskin.diffusion.training import TrainItem, train

    run = Run.objects.select_related("parent__parent").get(pk=run_id)
    set_torch_threads()
    # Copying images out of storage can take a while before the engine reports anything.
    progress.phase("Gathering the training images")
    if run.kind == "classifier":
        return _train_classifier(run, progress)
    run_dir = artifacts.local_folder(run.artifacts_dir)
    # Another host may have trained this run before it was killed: its last uploaded
    # checkpoint comes here first. What the lineage trained is fetched (once per host).
    uploaded = artifacts.fetch_for_resume(run.artifacts_dir)
    parents = [run_model_folder(r) for r in run.lineage()[:-1]]
    cache = image_cache_dir()
    images = list(selection_images(selection=run.selection))
    # selection_images holds only images with an exact skin type: fst_low is never None.
    items = [
        TrainItem(
            path=image_local_path(img, cache), diagnosis=img.diagnosis, fst=cast(int, img.fst_low)
        )
        for img in images
    ]
    datasets = Counter(img.dataset for img in images)
    base = artifacts.base_model(run.base_model)
    config = TrainConfig.build(run.kind, {k: v for k, v in run.config.items() if k != "kind"})
    # What a checkpoint must carry to be resumed from; a folder named the old way (run-<id>,
    # kept by the issue-15 migration) may hold checkpoints written before records existed.
    identity = {
        **run_identity(
            identity=run.identity,
            config=config.to_dict(),
            base_model=run.base_model_resolved or run.base_model,
            selection_hash=run.selection_hash,
            parents=[r.identity for r in run.lineage()[:-1]],
        ),
        "accept_unrecorded": run.identity == f"run-{run.pk}",
    }
    progress.log(
        f"{len(items)} images, base model {base.describe()}, "
        f"{'resuming' if (run_dir / 'checkpoints').exists() else 'starting'}"
        + (f", on {config.processes} processes" if config.processes > 1 else "")
        + (f", the store's last checkpoint is step {uploaded}" if uploaded is not None else "")
    )
    arguments: dict[str, Any] = dict(
        config=config,
        base=base,
        items=items,
        run_dir=run_dir,
        progress=progress,
        parents=parents,
        identity=identity,
        run_info={
            "run_id": run.pk,
            "parent_run_ids": [r.pk for r in run.lineage()[:-1]],
            "selection": run.selection,
            "selection_hash": run.selection_hash,
            "datasets": [
                {"name": d.name, "licence": d.licence, "images": n} for d, n in datasets.items()
            ],
        },
    )
    # Checkpoints and logs reach the store while the run trains (a bucket only).
    with artifacts.ArtifactSync(run.artifacts_dir, every=settings.FAIRSKIN_ARTIFACTS_SYNC_SECONDS):
        if config.processes > 1:
            # The ranks run as a subprocess (launch); this process keeps the job's lease and
            # heartbeat and passes rank 0's progress on. A stalled worker's ranks end well
            # before its lease runs out and another worker takes the job over.
            stale_after = settings.FAIRSKIN_JOB_LEASE_SECONDS / 2
            result = train_on_ranks(**arguments, stale_after=stale_after)
        else:
            result = train(**arguments)
    if artifacts.is_remote():  # the count stays at the last step: publishing is not a phase
        progress.log(f"publishing to {artifacts.uri(run.artifacts_dir)}")
    artifacts.publish(run.artifacts_dir)  # complete: the manifest goes last
    services.run_record_result(
        run=run, tokens=result.tokens, final_loss=result.final_loss, lease=progress.lease
    )
    return {
        "run_id": run.pk,
        "artifacts": artifacts.uri(run.artifacts_dir),
        "final_loss": round(result.final_loss, 5),
        "tokens": len(result.tokens),
        "resumed_from": result.resumed_from,
    }


def run_artifacts_import(*, run_id: int, source: str, progress: JobContext) -> dict[str, Any]:
    """Check and copy artifacts trained elsewhere into an imported run (the upload saved by
    run_import_external, a store key, is removed afterwards)."""
    from fairskin.diffusion.external import import_external

    run = Run.objects.get(pk=run_id)
    base = artifacts.base_model(run.base_model)
    path = artifacts.fetch_file(source)
    result = import_external(
        path,
        dest=artifacts.local_folder(run.artifacts_dir),
        expected_dim=base.text_encoder_width(),
        base_path=base.path,
    )
    artifacts.publish(run.artifacts_dir)
    artifacts.remove(source)  # kept after a failure: a retry reads it again
    services.run_record_import(
        run=run,
        lora=result.has_lora,
        tokens=result.tokens,
        config={"imported_from": path.name, "layout": result.layout},
        lease=progress.lease,
    )
    progress.log(
        f"{path.name}: {result.layout}, {len(result.tokens)} token(s), "
        f"LoRA: {'yes' if result.has_lora else 'no'}"
    )
    return {
        "run_id": run.pk,
        "layout": result.layout,
        "tokens": result.tokens,
        "lora": result.has_lora,
        "artifacts": artifacts.uri(run.artifacts_dir),
    }


def _train_classifier(run: Run, progress: JobContext) -> dict[str, Any]:
    from fairskin.classifier.config import ClassifierConfig
    from fairskin.classifier.data import ClassifierItem
    from fairskin.classifier.model import CLASS_NAMES
    from fairskin.classifier.train import train_classifier
    from fairskin.provenance import settings_hash

    cache = image_cache_dir()

    def items(images, *, synthetic: bool) -> list[ClassifierItem]:
        return [
            ClassifierItem(
                path=image_local_path(img, cache),
                label=CLASS_NAMES.index(img.diagnosis),
                fst=img.fst_low,
                synthetic=synthetic,
                malignant=img.metadata.get("malignant"),
                key=str(img.pk),
            )
            for img in images
        ]

    real = items(classifier_images(selection=run.selection), synthetic=False)
    synthetic = items(classifier_images(selection=run.selection, synthetic=True), synthetic=True)
    test = items(classifier_images(selection=run.selection, split="test"), synthetic=False)
    # Predicted after training and stored per image, for hard-example planning; never trained on.
    val = items(classifier_images(selection=run.selection, split="val"), synthetic=False)
    progress.log(
        f"{len(real)} real + {len(synthetic)} synthetic training images, {len(test)} test "
        f"images, {len(val)} validation images"
    )
    config = ClassifierConfig.build({k: v for k, v in run.config.items()})
    on_the_fly = _on_the_fly_cache(run, config, real, progress) if config.on_the_fly else None
    artifacts.fetch_for_resume(run.artifacts_dir)  # a checkpoint uploaded by another host
    with artifacts.ArtifactSync(run.artifacts_dir, every=settings.FAIRSKIN_ARTIFACTS_SYNC_SECONDS):
        result = train_classifier(
            config=config,
            train_items=real + synthetic,
            test_items=test,
            val_items=val,
            run_dir=artifacts.local_folder(run.artifacts_dir),
            progress=progress,
            run_info={
                "run_id": run.pk,
                "selection": run.selection,
                "selection_hash": run.selection_hash,
                "on_the_fly_model": _model_record(config.on_the_fly_model) if on_the_fly else None,
            },
            on_the_fly=on_the_fly,
            identity={
                "identity": run.identity,
                "settings_hash": settings_hash(config.to_dict()),
                "selection_hash": run.selection_hash,
                "accept_unrecorded": run.identity == f"run-{run.pk}",  # a pre-issue-15 folder
            },
        )
    artifacts.publish(run.artifacts_dir)
    services.run_record_evaluation(
        run=run,
        lease=progress.lease,
        evaluation={**result.evaluation, "weights_source": result.weights_source},
    )
    by_fst = result.evaluation.get("by_fst", {})
    return {
        "run_id": run.pk,
        "artifacts": artifacts.uri(run.artifacts_dir),
        "accuracy": round(by_fst.get("accuracy") or 0, 4),
        "auroc": round(by_fst.get("auroc") or 0, 4),
        "weights": result.weights_source,
    }


def _model_run(run_id: int | None) -> Run:
    model = Run.objects.filter(pk=run_id).first() if run_id else None
    if model is None or not run_is_finished(run=model) or model.kind not in GENERATING_KINDS:
        raise services.RunConfigError(
            f"on_the_fly_model {run_id} is not a finished LoRA or joint run"
        )
    return model


def _model_record(run_id: int | None) -> dict[str, Any]:
    model = _model_run(run_id)
    return {
        "run_id": model.pk,
        "identity": model.identity,
        "base_model": model.base_model_resolved or model.base_model,
        "lineage": [r.pk for r in model.lineage()],
    }


def _on_the_fly_cache(run: Run, config: Any, real: list[Any], progress: JobContext) -> Any:
    """The run's cache of images generated as it trains, with the model of run
    ``on_the_fly_model`` (loaded only when an image is missing), balanced over the
    diagnoses of its real training images and the skin types it mixes synthetic images into."""
    from fairskin.classifier.model import CLASS_NAMES
    from fairskin.classifier.on_the_fly import (
        OnTheFlyCache,
        OnTheFlyPlan,
        generator_draw,
        interleaved_strata,
    )

    model = _model_run(config.on_the_fly_model)
    diagnoses = sorted({CLASS_NAMES[i.label] for i in real})
    fsts = sorted({i.fst for i in real if i.fst and config.synthetic_shares.get(i.fst, 0) > 0})
    plan = OnTheFlyPlan(
        seed=config.seed,
        per_epoch=config.on_the_fly_per_epoch,
        cache=config.on_the_fly_cache,
        strata=interleaved_strata(diagnoses, fsts),
        micro_batch=config.on_the_fly_micro_batch,
    )

    def draw_factory():
        base = artifacts.base_model(model.base_model)
        return generator_draw(
            base,
            [run_model_folder(r) for r in model.lineage()],
            steps=config.on_the_fly_steps,
            guidance=config.on_the_fly_guidance,
        )

    progress.log(
        f"on-the-fly images from run {model.pk}: {plan.per_epoch} per epoch, at most "
        f"{plan.cache} held, over {len(plan.strata)} diagnosis x skin type strata"
    )
    return OnTheFlyCache(
        artifacts.local_folder(run.artifacts_dir),
        plan,
        draw_factory,
        label_of=CLASS_NAMES.index,
        log=progress.log,
    )
