"""Writes on training runs. A run is validated completely before anything is queued."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from catalog.models import AllowedUse, Dataset, Image
from fairskin.diffusion.base_models import BaseModelError, check_loadable, resolve_base_model
from fairskin.diffusion.config import ConfigError, TrainConfig
from fairskin.errors import ApplicationError
from fairskin.provenance import new_identity
from jobs import artifacts
from jobs.hosts import gpu_queue
from jobs.models import Job
from jobs.registry import LeaseHolder
from jobs.selectors import worker_hosts_for, worker_most_devices
from jobs.services import job_cancel, job_create, job_resume
from training.models import GENERATING_KINDS, PARENT_KIND, Run, RunKind
from training.selectors import (
    classifier_images,
    run_is_finished,
    selection_hash,
    selection_images,
    selection_normalise,
)


class RunConfigError(ApplicationError, ValueError):
    """The run cannot be launched as configured; nothing was created or queued."""


def run_artifacts_key(run: Run) -> str:
    """The run's store key, named by its identity (runs/run-<id>-<token>): a run that re-uses
    an earlier run's id (a database reset that kept the artifacts) never finds its files."""
    return f"runs/{run.identity or f'run-{run.pk}'}"


def _assign_folder(run: Run) -> None:
    """Give a new run its identity and key, one that no earlier run has left behind."""
    while True:
        run.identity = new_identity("run", run.pk)
        run.artifacts_dir = run_artifacts_key(run)
        if not artifacts.local_folder(run.artifacts_dir).exists():
            return


def _check_placement(processes: int) -> None:
    """A run on N processes waits on gpu-xN: refused unless some worker took that queue
    showing at least N devices when it last started (jobs.hosts)."""
    if processes == 1:
        return
    queue = gpu_queue(processes)
    if worker_hosts_for(queue=queue, devices=processes):
        return
    most = worker_most_devices()
    seen = (
        f"the most any worker showed is {most.devices} ({most.device_kind}, {most.name})"
        if most
        else "no GPU worker has started yet"
    )
    raise RunConfigError(
        f"the run asks for {processes} processes, but no worker has taken the {queue} queue "
        f"with {processes} devices: {seen}. Start a worker on a machine with at least "
        f"{processes} devices (README: multi-GPU workers), or train on fewer processes"
    )


def _check_parent(kind: str, parent: Run | None) -> None:
    expected = PARENT_KIND.get(kind)
    if expected is None:
        if parent is not None:
            raise RunConfigError(
                "a textual-inversion run starts from the base model; it takes no parent run"
            )
        return
    if parent is None:
        raise RunConfigError(
            f"a {RunKind(kind).label} run needs a parent {RunKind(expected).label} run"
        )
    if parent.kind != expected:
        raise RunConfigError(
            f"the parent of a {RunKind(kind).label} run must be a "
            f"{RunKind(expected).label} run; run {parent.pk} is "
            f"{parent.get_kind_display()}"
        )
    if not run_is_finished(run=parent):
        raise RunConfigError(
            f"parent run {parent.pk} has not succeeded; its artifacts are not ready"
        )


def run_create(
    *,
    kind: str,
    selection: dict[str, Any],
    base_model: str | None = None,
    config: dict[str, Any] | None = None,
    parent: Run | None = None,
    name: str = "",
    user: Any = None,
    enqueue: bool = True,
) -> Run:
    """Validate a run (config, parent, base model, images) and queue it on the gpu queue
    (gpu-xN for a run on N data-parallel processes, refused unless a worker takes it).

    Raises RunConfigError (or BrokerUnavailable) with the reason; then nothing is created.
    """
    if kind not in RunKind.values:
        raise RunConfigError(f"unknown run kind {kind!r}")
    if kind == RunKind.CLASSIFIER:
        return _classifier_run_create(
            selection=selection, config=config, parent=parent, name=name, user=user, enqueue=enqueue
        )
    try:
        train_config = TrainConfig.build(kind, config)
    except ConfigError as exc:
        raise RunConfigError(str(exc)) from exc
    _check_parent(kind, parent)
    if enqueue:  # a command's --wait checks its own machine (fairskin.diffusion.launch)
        _check_placement(train_config.processes)
    base_model = (
        base_model or (parent.base_model if parent else "") or settings.FAIRSKIN_BASE_MODEL
    ).strip()
    if parent is not None and base_model != parent.base_model:
        raise RunConfigError(
            f"run {parent.pk} was trained on {parent.base_model!r}; its child "
            f"must use the same base model, not {base_model!r}"
        )
    try:
        base = resolve_base_model(base_model, cache_dir=settings.FAIRSKIN_MODEL_CACHE, build=False)
        check_loadable(base)
        # Epsilon or v-prediction; any other (a sample model) is refused by name here and in
        # the worker, never trained on the wrong target.
        base.trainable_prediction_type()
        if train_config.image_prompt:  # refused by name, not first in the worker
            base.image_encoder_folder()
    except BaseModelError as exc:
        raise RunConfigError(str(exc)) from exc

    selection = selection_normalise(selection)
    unknown = set(selection["datasets"]) - set(
        Dataset.objects.filter(name__in=selection["datasets"]).values_list("name", flat=True)
    )
    if unknown:
        raise RunConfigError(f"no dataset named {', '.join(sorted(unknown))}")
    images = selection_images(selection=selection)
    if kind != RunKind.TEXTUAL_INVERSION:
        restricted = sorted(
            set(
                images.filter(dataset__allowed_use=AllowedUse.TEXTUAL_INVERSION_ONLY).values_list(
                    "dataset__name", flat=True
                )
            )
        )
        if restricted:
            raise RunConfigError(
                f"dataset {', '.join(restricted)} is marked 'textual inversion only' and "
                f"cannot train a {RunKind(kind).label} run; remove it from the selection"
            )
    count = images.count()
    if count == 0:
        raise RunConfigError(
            "the image selection is empty: no preprocessed images with an "
            "exact skin type match it (check the datasets, split and "
            "whether the datasets were preprocessed)"
        )

    with transaction.atomic():
        run = Run.objects.create(
            kind=kind,
            name=name,
            parent=parent,
            base_model=base_model,
            base_model_resolved=base.describe(),
            config=train_config.to_dict(),
            selection=selection,
            selection_hash=selection_hash(selection=selection, images=images),
            image_count=count,
            created_by=user if getattr(user, "pk", None) else None,
        )
        _assign_folder(run)
        run.job = job_create(
            kind="training.run",
            queue=gpu_queue(train_config.processes),
            params={"run_id": run.pk},
            title=f"{RunKind(kind).label} run {run.pk}" + (f" ({name})" if name else ""),
            launched_by=user,
            enqueue=enqueue,
        )
        run.save(update_fields=["identity", "artifacts_dir", "job"])
    return run


def _classifier_run_create(
    *,
    selection: dict[str, Any],
    config: dict[str, Any] | None,
    parent: Run | None,
    name: str,
    user: Any,
    enqueue: bool,
) -> Run:
    from fairskin.classifier.config import ClassifierConfig, ClassifierConfigError

    if parent is not None:
        raise RunConfigError("a classifier run takes no parent run")
    try:
        classifier_config = ClassifierConfig.build(config)
    except ClassifierConfigError as exc:
        raise RunConfigError(str(exc)) from exc
    selection = selection_normalise(selection)
    names = set(selection["datasets"]) | set(selection["synthetic_datasets"])
    unknown = names - set(Dataset.objects.filter(name__in=names).values_list("name", flat=True))
    if unknown:
        raise RunConfigError(f"no dataset named {', '.join(sorted(unknown))}")
    unreleased = sorted(
        Dataset.objects.filter(
            name__in=selection["synthetic_datasets"],
            batch__isnull=False,
            batch__releases__isnull=True,
        ).values_list("name", flat=True)
    )
    if unreleased:
        raise RunConfigError(
            f"{', '.join(unreleased)}: a generation batch's images train a "
            "classifier only once the batch is released through a passed "
            "review study"
        )
    real = classifier_images(selection=selection)
    synthetic = classifier_images(selection=selection, synthetic=True)
    test = classifier_images(selection=selection, split="test")
    if not real.exists():
        raise RunConfigError(
            "the image selection is empty: no preprocessed real images of the "
            "seven classes with an exact skin type match it"
        )
    if not test.exists():
        raise RunConfigError(
            "no held-out test images: split the datasets first "
            "(manage.py split_dataset) so the evaluation has a test split"
        )
    if selection["synthetic_datasets"] and not synthetic.exists():
        raise RunConfigError("the synthetic datasets hold no usable image")
    if classifier_config.on_the_fly:
        _check_on_the_fly(classifier_config, released=synthetic.exists())
    elif classifier_config.pretrain_epochs and not synthetic.exists():
        raise RunConfigError("synthetic pre-training needs synthetic images in the selection")
    with transaction.atomic():
        run = Run.objects.create(
            kind=RunKind.CLASSIFIER,
            name=name,
            base_model=classifier_config.arch,
            base_model_resolved=classifier_config.arch,
            config=classifier_config.to_dict(),
            selection=selection,
            selection_hash=selection_hash(
                selection=selection,
                images=Image.objects.filter(
                    Q(pk__in=real.values("pk")) | Q(pk__in=synthetic.values("pk"))
                ).order_by("id"),
            ),
            image_count=real.count() + synthetic.count(),
            created_by=user if getattr(user, "pk", None) else None,
        )
        _assign_folder(run)
        run.job = job_create(
            kind="training.run",
            queue="gpu",
            params={"run_id": run.pk},
            title=f"Classifier run {run.pk}" + (f" ({name})" if name else ""),
            launched_by=user,
            enqueue=enqueue,
        )
        run.save(update_fields=["identity", "artifacts_dir", "job"])
    return run


def _check_on_the_fly(config: Any, *, released: bool) -> None:
    """An on-the-fly classifier's generating model is a finished LoRA or joint run, and with
    no released synthetic images its whole synthetic share is generated."""
    model = Run.objects.filter(pk=config.on_the_fly_model).first()
    if model is None or model.kind not in GENERATING_KINDS or not run_is_finished(run=model):
        raise RunConfigError(
            f"on_the_fly_model: run {config.on_the_fly_model} is not a finished LoRA or joint "
            "run, so it cannot generate the on-the-fly images"
        )
    if not released and config.on_the_fly_share != 1:
        raise RunConfigError(
            "with no synthetic dataset selected every synthetic draw is an on-the-fly image: "
            f"set on_the_fly_share to 1 (it is {config.on_the_fly_share}) or select a "
            "released synthetic dataset"
        )


def run_mark_confidence_model(*, run: Run) -> Run:
    """Make a finished baseline classifier the one generation scores images with."""
    if run.kind != RunKind.CLASSIFIER:
        raise RunConfigError(f"run {run.pk} is not a classifier")
    if not run_is_finished(run=run):
        raise RunConfigError(f"classifier run {run.pk} has not succeeded")
    if run.uses_synthetic:
        raise RunConfigError(
            "the confidence model must be a baseline trained on real images "
            "only, or it would grade synthetic images by synthetic ones"
        )
    with transaction.atomic():
        Run.objects.filter(is_confidence_model=True).update(is_confidence_model=False)
        Run.objects.filter(pk=run.pk).update(is_confidence_model=True)
    run.refresh_from_db()
    return run


def _job_of(run: Run) -> Job:
    if run.job is None:  # every run is created with a job; it is gone if the job was deleted
        raise RunConfigError(f"run {run.pk} has no job")
    return run.job


def run_cancel(*, run: Run, user: Any = None) -> Job:
    return job_cancel(job=_job_of(run), by=user)


def run_resume(*, run: Run, user: Any = None) -> Job:
    """A new attempt; the engine continues from the run's last checkpoint."""
    return job_resume(job=_job_of(run), by=user)


def run_record_result(
    *, run: Run, tokens: list[str], final_loss: float, lease: LeaseHolder
) -> None:
    with lease.hold():
        Run.objects.filter(pk=run.pk).update(tokens=tokens, final_loss=final_loss)


def run_record_import(
    *, run: Run, lora: bool, tokens: list[str], config: dict[str, Any], lease: LeaseHolder
) -> None:
    """What an imported run turned out to be, once its artifacts are checked and copied."""
    kind = RunKind.LORA if lora else RunKind.TEXTUAL_INVERSION
    with lease.hold():
        Run.objects.filter(pk=run.pk).update(kind=kind, tokens=tokens, config=config)


def run_record_evaluation(*, run: Run, evaluation: dict[str, Any], lease: LeaseHolder) -> None:
    with lease.hold():
        Run.objects.filter(pk=run.pk).update(evaluation=evaluation)


def run_import_external(
    *,
    source: Path,
    base_model: str | None = None,
    parent: Run | None = None,
    name: str = "",
    user: Any = None,
    enqueue: bool = True,
) -> Run:
    """Import externally trained embeddings or LoRA weights as a run (converted by a job).

    The file is put into the artifact store first, so a worker on another machine reads the
    same bytes; the job detects the layout (diffusers, A1111, kohya, merged token dictionary)
    and converts it, or fails with the reason.
    """
    import uuid

    source = Path(source)
    if not source.is_file():
        raise RunConfigError(f"{source} is not a file")
    if parent is not None:
        _check_parent(RunKind.LORA, parent)
    base_model = (
        base_model or (parent.base_model if parent else "") or settings.FAIRSKIN_BASE_MODEL
    ).strip()
    try:
        base = resolve_base_model(base_model, cache_dir=settings.FAIRSKIN_MODEL_CACHE, build=False)
    except BaseModelError as exc:
        raise RunConfigError(str(exc)) from exc
    # Into the store: the job may run on a host that never sees this one's disk.
    staged = artifacts.put_file(f"imports/{uuid.uuid4().hex}/{source.name}", source)
    with transaction.atomic():
        # The kind is provisional until the job has looked inside the file.
        run = Run.objects.create(
            kind=RunKind.LORA if parent else RunKind.TEXTUAL_INVERSION,
            name=name,
            parent=parent,
            base_model=base_model,
            base_model_resolved=base.describe(),
            config={"imported_from": source.name},
            selection={},
            image_count=0,
            created_by=user if getattr(user, "pk", None) else None,
        )
        _assign_folder(run)
        run.job = job_create(
            kind="training.import_external",
            queue="cpu",
            params={"run_id": run.pk, "source": staged},
            title=f"Import {source.name} as run {run.pk}",
            launched_by=user,
            enqueue=enqueue,
        )
        run.save(update_fields=["identity", "artifacts_dir", "job"])
    return run


def runs_artifacts_upload(*, dry_run: bool = False) -> Iterator[tuple[str, bool]]:
    """Upload every finished run's folder into the artifact store and record its key
    (`manage.py upload_artifacts`). Runs still training are left alone: their job publishes
    them when it ends."""
    for run in Run.objects.select_related("job").order_by("pk"):
        if not run.artifacts_dir or (run.job is not None and not run.job.is_terminal):
            continue
        key, message, stored = artifacts.upload_reference(
            run.artifacts_dir, "runs", dry_run=dry_run
        )
        if stored and not dry_run and key != run.artifacts_dir:
            Run.objects.filter(pk=run.pk).update(artifacts_dir=key)
        yield f"run {run.pk}: {message}", stored
