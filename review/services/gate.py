"""Closing a study and judging it: the gate report and the blinding audit."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from fairskin.review.gate import GateCriteria
from review.models import Assignment, Kind, Rating, Study, StudyState
from review.selectors import study_progress
from review.services.errors import StudyError

GATE_BOOTSTRAP = 2000


def study_gate(*, study: Study, n_boot: int = GATE_BOOTSTRAP) -> dict[str, Any]:
    from fairskin.review.gate import gate_report

    # Warm-up items are never scored: one query for the items that are, not one per item.
    scored_ids = set(
        Assignment.objects.filter(study=study)
        .exclude(kind=Kind.WARMUP)
        .values_list("item_id", flat=True)
    )
    items = [
        {"item_id": str(i.pk), "origin": i.origin, "diagnosis": i.diagnosis, "fst": i.fst}
        for i in study.items.all()
        if i.pk in scored_ids
    ]
    ratings = [
        {
            "rater_id": str(r.rater_id),
            "item_id": str(r.item_id),
            "score": r.score,
            "seconds": r.seconds,
            "position": r.assignment.position,
            "kind": r.kind,
        }
        for r in Rating.objects.filter(study=study).select_related("assignment")
    ]
    progress = study_progress(study=study)
    names = {sr.rater_id: sr.rater.username for sr in study.raters.select_related("rater")}
    finished = {
        str(rid): next(p["finished"] for p in progress if p["rater"] == name)
        for rid, name in names.items()
    }
    # The audit goes into the report and, from criteria version 2, into the gate itself.
    audit = _blinding_audit(study)
    rater_names = {str(rid): name for rid, name in names.items()}
    report = gate_report(
        items,
        ratings,
        GateCriteria.from_dict(study.criteria),
        raters=finished,
        n_boot=n_boot,
        seed=study.seed % (2**32),
        blinding=audit,
        rater_names=rater_names,
    )
    report["rater_names"] = rater_names
    report["blinding_audit"] = audit
    return report


def _blinding_audit(study: Study) -> dict[str, Any]:
    """The audit of the stored derivatives (the exact bytes served): their lengths, layout and
    the encoding-chain and content statistics of the pixels a rater receives."""
    from fairskin.review.audit import blinding_audit
    from fairskin.review.blinding import DEFAULT_QUALITY, SERVED_CONTENT_TYPE, inspect_served
    from fairskin.review.signals import decode_pixels, pixel_signals

    files = []
    for item in study.items.all():
        with item.derivative.open("rb") as fh:
            data = fh.read()
        info = inspect_served(data)
        files.append(
            {
                "origin": item.origin,
                "bytes": len(data),
                "payload_bytes": info["payload_bytes"],
                "width": info["size"][0],
                "height": info["size"][1],
                "format": info["format"],
                "headers": {
                    "layout": info["header_sha256"],
                    "subsampling": str(info["subsampling"]),
                    "quantization": str(info["quantization_sha256"]),
                    "metadata_markers": ",".join(info["metadata_markers"]),
                    "trailing_bytes": str(info["trailing_bytes"]),
                    "content-type": SERVED_CONTENT_TYPE,  # what review:blinded sends for each
                },
                "signals": pixel_signals(decode_pixels(data), DEFAULT_QUALITY),
            }
        )
    return blinding_audit(files, seed=study.seed % (2**32))


def study_close(*, study: Study, user: Any) -> Study:
    with transaction.atomic():
        # The assignments first (ratings lock theirs, then take a key-share lock on the study
        # when they insert), then the study: no rating is in flight or can start until this
        # commits, so the gate sees every rating and none comes after it.
        list(
            Assignment.objects.select_for_update()
            .filter(study_id=study.pk)
            .values_list("pk", flat=True)
        )
        study = Study.objects.select_for_update().get(pk=study.pk)
        if study.state != StudyState.OPEN:
            raise StudyError(
                f"study {study.pk} is {study.get_state_display().lower()}; only an "
                "open study can be closed"
            )
        study.state = StudyState.CLOSED
        study.closed_at = timezone.now()
        study.closed_by = user
        study.gate = study_gate(study=study)
        study.save(update_fields=["state", "closed_at", "closed_by", "gate"])
    return study
