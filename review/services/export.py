"""Writing an approved release to disk: its images, metadata.csv, manifest, gate record and
datasheet, checked against the manifest and published as a folder and a zip (the worker side
of the review.export job kind)."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

from django.conf import settings

from fairskin.labels import Diagnosis
from generation.models import Sample
from jobs import artifacts
from jobs.registry import JobContext
from review.models import Release
from training.models import Run
from training.reports import run_file

METADATA_FIELDS = [
    "file_name",
    "label",
    "diagnosis",
    "diagnosis_name",
    "fst",
    "seed",
    "prompt",
    "sha256",
    "batch",
    "release",
    "reference_image",
    "class_label",
]


def release_folder(release: Release) -> Path:
    """The release's own folder, named by its identity (release-<id>-<token>)."""
    name = release.identity or f"release-{release.pk}"
    return Path(settings.FAIRSKIN_ARTIFACTS_ROOT) / "releases" / name


def verify_release(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """Problems found comparing an exported folder with its manifest (empty: it verifies)."""
    problems = []
    listed = set()
    for entry in manifest["images"]:
        path = folder / entry["file_name"]
        listed.add(entry["file_name"])
        if not path.is_file():
            problems.append(f"{entry['file_name']}: missing")
            continue
        if hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            problems.append(f"{entry['file_name']}: sha256 differs from the manifest")
    on_disk = (
        {p.relative_to(folder).as_posix() for p in (folder / "train").rglob("*") if p.is_file()}
        if (folder / "train").is_dir()
        else set()
    )
    problems += [f"{name}: not in the manifest" for name in sorted(on_disk - listed)]
    return problems


def _run_history(run: Run) -> str:
    """One run's attempts (its job's) and where training started in each (its manifest)."""
    attempts = list(run.job.attempts.all()) if run.job is not None else []
    jobs = (
        "job attempts: " + ", ".join(f"{a.number} {a.outcome or 'running'}" for a in attempts)
        if attempts
        else "no job attempt recorded"
    )
    try:
        manifest = json.loads((run_file(run, "manifest.json") or Path("/nonexistent")).read_text())
    except (OSError, ValueError):
        return f"{jobs}; no training manifest in its folder"
    recorded = (manifest.get("identity") or {}).get("identity")
    if recorded and recorded != run.identity:
        return f"{jobs}; its folder's manifest belongs to {recorded}, not to this run"
    starts = manifest.get("attempts")
    if starts is None:  # a manifest written before attempts were recorded: the last one only
        last = manifest.get("resumed_from")
        starts = [{"attempt": "last", "resumed_from": last}] if "resumed_from" in manifest else []
    training = "; ".join(
        f"training start {s['attempt']}: "
        + (
            "fresh from step 0"
            if s.get("resumed_from") is None
            else f"resumed from its checkpoint at step {s['resumed_from']}"
        )
        for s in starts
    )
    steps = manifest.get("steps")
    return f"{jobs}; {training or 'imported, not trained here'}" + (
        f" ({steps} steps in all)" if steps and starts else ""
    )


def _lineage_lines(lineage: list[Run]) -> list[str]:
    """The DATASHEET's lineage: each run of the model, its folder (identity), its attempts
    and any resume, read from the run's job attempts and its folder's manifest."""
    return ["## Lineage (oldest run first)"] + [
        f"- Run {r.pk} ({r.get_kind_display()}, folder {r.identity or '—'}): {_run_history(r)}."
        for r in lineage
    ]


def _gate_lines(gate: dict[str, Any]) -> list[str]:
    """One line per criterion the gate judged: passed or not, the value against its limit, and
    why (the gate dict holds each criterion as a dict with "passed")."""
    lines = []
    for name, c in gate.items():
        if not isinstance(c, dict) or "passed" not in c:
            continue
        line = f"- {name}: {'passed' if c['passed'] else 'failed'}"
        if c.get("estimate") is not None and c.get("limit") is not None:
            line += f" (value {c['estimate']:.3f} {c.get('comparison', 'vs')} {c['limit']:g})"
        if c.get("why"):
            line += f"; {c['why']}"
        lines.append(line)
    lines += [
        f"- failing: {f.get('label') or f.get('criterion')}: {f.get('reason')}"
        for f in gate.get("failing") or []
    ]
    lines += [
        f"- caveat: {c.get('label') or c.get('criterion')}: {c.get('reason')}"
        for c in gate.get("caveats") or []
    ]
    return lines


def _served_encoding(study: Any, gate: dict[str, Any]) -> list[str]:
    from fairskin.review.blinding import served_encoding_lines

    lengths = list(study.items.values_list("derivative_bytes", flat=True))
    return [
        f"- {line}" for line in served_encoding_lines(gate.get("blinding_audit") or {}, lengths)
    ]


def _datasheet(release: Release, counts: dict[tuple[str, int], int]) -> str:
    batch, study, gate = release.batch, release.study, release.gate
    lineage = batch.model_run.lineage()
    lines = [
        f"# Datasheet: FairSkin release {release.pk}",
        "",
        "## What this is",
        f"{release.image_count} synthetic dermatology images generated by FairSkin batch "
        f"{batch.pk}, approved by {release.approved_by.username} on "
        f"{release.approved_at:%Y-%m-%d} after blinded review study {study.pk}.",
        "",
        "## Provenance",
        "- Model runs (oldest first): "
        + ", ".join(
            f"run {r.pk} ({r.get_kind_display()}, base {r.base_model}, data selection hash "
            f"{r.selection_hash[:12] or '—'})"
            for r in lineage
        ),
        f"- Sampling: {batch.scheduler}, {batch.steps} steps, guidance {batch.guidance}, "
        f"{batch.size} px, batch seed {batch.seed}, negative prompt “{batch.negative_prompt}”"
        + (f"; class-label guidance {batch.label_scale:g}" if batch.label_scale else "")
        + (
            f"; img2img from {len(batch.reference['image_ids'])} reference image(s) at strength "
            f"{batch.reference_strength:g} (metadata.csv names each image's reference)"
            if batch.reference
            else ""
        )
        + ".",
        "- Training data and licences: "
        + "; ".join(
            sorted({f"{name}" for r in lineage for name in r.selection.get("datasets", [])})
        )
        + ".",
        "",
        *_lineage_lines(lineage),
        "",
        "## Images per diagnosis × Fitzpatrick type",
        "",
        "| diagnosis | " + " | ".join(f"FST {f}" for f in range(1, 7)) + " |",
        "|---|" + "---|" * 6,
    ]
    for dx in sorted({dx for dx, _ in counts}):
        lines.append(
            f"| {dx} | " + " | ".join(str(counts.get((dx, f), 0)) for f in range(1, 7)) + " |"
        )
    g = gate.get("gate", {})
    lines += ["", "## Quality metrics (generation report)"]
    for c in batch.report.get("criteria", []):
        value = "—" if c.get("value") is None else f"{c['value']:.3f}"
        lines.append(
            f"- {c['name']} {c['comparison']} {c['limit']}: {c['status']}"
            f" (value {value}){' — ' + c['why'] if c.get('why') else ''}"
        )
    extractors = batch.provenance or {}
    lines += [
        "- Feature extractors: "
        + "; ".join(f"{name}: {p.get('label')}" for name, p in extractors.items())
    ]
    lines += ["", "## What the raters saw", *_served_encoding(study, gate)]
    lines += [
        "",
        f"## Blinded review gate (criteria version {release.criteria_version})",
        f"Passed: {'yes' if g.get('passed') else 'no'}.",
    ]
    lines += _gate_lines(g)
    lines += [
        "",
        "## Intended use",
        "Augmenting training data for skin lesion classifiers where dark skin types (FST "
        "V–VI) are under-represented, and research on dataset fairness.",
        "",
        "## Limitations",
        "- Synthetic images are not clinical records: never use them for diagnosis, and "
        "evaluate models only on real held-out images.",
        "- The images inherit the biases and label noise of the training data listed "
        "above; skin type labels are the intended type of the prompt, not a measurement.",
        "- Realism was judged by three dermatologists on a sample, not on every image.",
        "- Metrics marked uncalibrated were computed with random-weight networks and say "
        "nothing about quality.",
        "",
    ]
    return "\n".join(lines)


def release_export_write(*, release_id: int, attempt: int, progress: JobContext) -> dict[str, Any]:
    """Write the release into a staging folder of this attempt's own, verify it against the
    manifest, and publish folder and zip under the lease."""
    release = Release.objects.select_related("batch__model_run", "study", "approved_by").get(
        pk=release_id
    )
    folder = release_folder(release)
    # Each attempt writes a folder and zip of its own; the fenced hand-over below publishes
    # them, so an attempt that stalled past its lease cannot replace a finished export.
    staging = folder.with_name(f"{folder.name}.attempt-{attempt}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "train").mkdir(parents=True)
    samples = {
        s.pk: s
        for s in Sample.objects.filter(
            pk__in=[e["sample_id"] for e in release.manifest["images"]]
        ).select_related("image")
    }
    counts: dict[tuple[str, int], int] = {}
    rows = []
    total = len(release.manifest["images"])
    for n, entry in enumerate(release.manifest["images"]):
        if n % 20 == 0:
            progress.update(n, total, "copying images")
        target = staging / entry["file_name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        with (
            samples[entry["sample_id"]].image.preprocessed.open("rb") as src,
            target.open("wb") as dst,
        ):
            shutil.copyfileobj(src, dst)
        counts[(entry["diagnosis"], entry["fst"])] = (
            counts.get((entry["diagnosis"], entry["fst"]), 0) + 1
        )
        rows.append(
            {
                "file_name": entry["file_name"],
                "label": entry["diagnosis"],
                "diagnosis": entry["diagnosis"],
                "diagnosis_name": Diagnosis(entry["diagnosis"]).long_name,
                "fst": entry["fst"],
                "seed": entry["seed"],
                "prompt": entry["prompt"],
                "sha256": entry["sha256"],
                "batch": release.batch_id,
                "release": release.pk,
                "reference_image": entry.get("reference_image", ""),
                "class_label": entry.get("class_label", ""),
            }
        )
    with (staging / "metadata.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=METADATA_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    (staging / "manifest.json").write_text(
        json.dumps({**release.manifest, "manifest_sha256": release.manifest_sha256}, indent=2)
    )
    (staging / "gate.json").write_text(json.dumps(release.gate, indent=2, default=str))
    (staging / "DATASHEET.md").write_text(_datasheet(release, counts))
    problems = verify_release(staging, release.manifest)
    if problems:
        raise ValueError("the export does not match its manifest: " + "; ".join(problems[:5]))
    staged_zip = staging.with_suffix(".zip")
    with zipfile.ZipFile(staged_zip, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                zf.write(path, f"release-{release.pk}/{path.relative_to(staging).as_posix()}")
    archive = folder.with_suffix(".zip")
    with progress.lease.hold():
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
        staged_zip.replace(archive)
    # Into the store before the row names it (locally it is there already): any web host
    # streams it from there.
    key = artifacts.put_file(f"releases/{archive.name}", archive)
    with progress.lease.hold():
        Release.objects.filter(pk=release.pk).update(export_path=key)
    for leftover in folder.parent.glob(f"{folder.name}.attempt-*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    progress.update(total, total, "exported")
    return {"release_id": release.pk, "images": total, "zip": artifacts.uri(key)}
