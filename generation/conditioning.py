"""A batch's conditioning beyond the prompt: reference images (img2img) and class labels.

Checked at launch (`resolve_reference`, `check_label_guidance`), so a batch that cannot run is
refused before anything is created; read back by the shards (`reference_rows`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from django.conf import settings

from catalog.files import image_cache_dir, image_local_path
from catalog.models import Image, Split
from fairskin.diffusion.base_models import BaseModel, BaseModelError
from fairskin.generation.reference_images import (
    ReferenceCandidate,
    ReferenceImageError,
    assign_references,
    check_strength,
    load_reference,
)
from fairskin.labels import SEVEN_CLASSES
from generation.errors import BatchConfigError
from generation.models import Batch
from jobs import artifacts
from training.models import Run

# The diagnoses with a label vector of their own (labels_conditioning.DX_CLASSES); OTHER has none.
LABEL_DIAGNOSES = frozenset(d.value for d in SEVEN_CLASSES)

MAX_REFERENCES = 500
SELECTION_KEYS = ("dataset", "diagnosis", "fst", "split")


def reference_images_named(reference: dict[str, Any]) -> list[Image]:
    """The catalog images a batch's reference request names: {"image_ids": [...]}, or a
    selection of real images by dataset, diagnosis, FST (one type, fst_low = fst_high) and
    split; a selection without a split leaves the test split out."""
    unknown = sorted(set(reference) - {"image_ids", *SELECTION_KEYS})
    if unknown or ("image_ids" in reference) == bool(set(reference) & set(SELECTION_KEYS)):
        raise BatchConfigError(
            'reference: give either {"image_ids": [...]} or a catalog selection with keys '
            f"{', '.join(SELECTION_KEYS)}" + (f"; unknown keys {unknown}" if unknown else "")
        )
    if "image_ids" in reference:
        ids = reference["image_ids"]
        if not isinstance(ids, list) or not ids or not all(is_whole_id(i) for i in ids):
            raise BatchConfigError(f"reference image_ids must be a list of image ids, got {ids!r}")
        found = {i.pk: i for i in Image.objects.filter(pk__in=ids)}
        absent = [i for i in ids if i not in found]
        if absent:
            raise BatchConfigError(f"reference images not found: {absent}")
        return [found[i] for i in dict.fromkeys(ids)]
    images = Image.objects.filter(origin="real")
    as_list = {k: v if isinstance(v, list) else [v] for k, v in reference.items()}
    if "dataset" in as_list:
        images = images.filter(dataset__name__in=as_list["dataset"])
    if "diagnosis" in as_list:
        images = images.filter(diagnosis__in=as_list["diagnosis"])
    if "fst" in as_list:
        images = images.filter(fst_low__in=as_list["fst"], fst_high__in=as_list["fst"])
    if "split" in as_list:
        images = images.filter(split__in=as_list["split"])
    else:
        images = images.exclude(split=Split.TEST)
    chosen = list(images.order_by("pk")[: MAX_REFERENCES + 1])
    if not chosen:
        raise BatchConfigError(f"the reference selection {reference} matches no real image")
    if len(chosen) > MAX_REFERENCES:
        raise BatchConfigError(
            f"the reference selection {reference} matches more than {MAX_REFERENCES} images; "
            "narrow it"
        )
    return chosen


def is_whole_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def resolve_reference(
    reference: dict[str, Any],
    *,
    strength: float,
    mode: str = "img2img",
    strata: list[tuple[str, int]],
    size: int,
    steps: int,
    seed: int,
) -> dict[str, Any]:
    """A batch's ``reference`` record: the request, the image ids it resolved to, the strength
    and each stratum's image (`assign_references`). Refused with every bad image named: not
    found, of a test split (a leak into evaluation), without a readable square preprocessed
    file at least ``size`` wide, or no reference of a stratum's diagnosis. ``mode`` is how the
    references condition the batch: "img2img" at ``strength``, or "image_prompt" (the strength
    is not used; `check_image_prompt` adds the adapter)."""
    if not isinstance(reference, dict):
        raise BatchConfigError(f"reference must be a mapping, got {reference!r}")
    problem = check_strength(strength, steps) if mode == "img2img" else None
    if problem:
        raise BatchConfigError(problem)
    images = reference_images_named(reference)
    problems = []
    cache = image_cache_dir()
    for image in images:
        if image.split == Split.TEST:
            problems.append(
                f"reference image {image.pk} is in the test split of {image.dataset.name}: "
                "generating from it would leak it into evaluation"
            )
        elif not image.preprocessed or image.missing_file:
            problems.append(f"reference image {image.pk} has no preprocessed file")
        else:
            try:
                load_reference(image_local_path(image, cache), size, image_id=image.pk)
            except (ReferenceImageError, OSError) as exc:
                problems.append(str(exc))
    if problems:
        raise BatchConfigError("; ".join(problems[:10]) + (" ..." if len(problems) > 10 else ""))
    known = [
        ReferenceCandidate(i.pk, i.diagnosis, i.fst_low if i.fst_low == i.fst_high else None)
        for i in images
    ]
    try:
        by_stratum = assign_references(strata, known, seed)
    except ReferenceImageError as exc:
        raise BatchConfigError(str(exc)) from exc
    return {
        "request": reference,
        "image_ids": [i.pk for i in images],
        "mode": mode,
        "strength": strength if mode == "img2img" else None,
        "strata": by_stratum,
    }


def reference_rows(batch: Batch, stratum_key: str, n: int) -> tuple[int | None, Any]:
    """The stratum's reference image id and its pixels as ``n`` identical float rows
    (n, 3, size, size) in [0, 1] for img2img; (None, None) for a text-to-image batch."""
    if not batch.reference:
        return None, None
    import torch

    image_id = int(batch.reference["strata"][stratum_key])
    image = Image.objects.select_related("dataset").get(pk=image_id)
    pixels = load_reference(
        image_local_path(image, image_cache_dir()), batch.size, image_id=image_id
    )
    rows = torch.from_numpy(pixels).permute(2, 0, 1).float().div(255)
    return image_id, rows[None].repeat(n, 1, 1, 1)


def model_label_file(run: Run) -> Path | None:
    """The label table the model's LoRA was trained with (as `lineage_label_file` finds it:
    beside the LoRA that is loaded), or None."""
    from fairskin.diffusion.labels_conditioning import FILENAME as LABEL_FILE

    lora = _lora_run(run.lineage())
    if lora is None or not artifacts.has_file(lora.artifacts_dir, LABEL_FILE):
        return None
    return artifacts.fetch(lora.artifacts_dir, include=lambda rel: rel == LABEL_FILE) / LABEL_FILE


def _lora_run(lineage: list[Run]) -> Run | None:
    """The run whose LoRA a lineage loads (`lora_run_dir`: the last one with a LoRA file),
    told from the store's manifests without fetching any weights."""
    from fairskin.diffusion.artifacts import LORA_FILE

    with_lora = [r for r in lineage if artifacts.has_file(r.artifacts_dir, LORA_FILE)]
    return with_lora[-1] if with_lora else None


def _adapter_files(rel: str) -> bool:
    from fairskin.diffusion.image_prompt import FILENAME as ADAPTER_FILE

    return rel == ADAPTER_FILE or rel.startswith("image_encoder/")


def check_label_guidance(
    run: Run, label_scale: float, *, references: bool, base: BaseModel
) -> None:
    """Refuse label guidance the model cannot give: a scale above 0 needs a model trained with
    label conditioning (a readable ``labels.safetensors`` beside its LoRA); img2img from
    reference images takes no label guidance (the two are not combined)."""
    if not label_scale:
        return
    from fairskin.diffusion.labels_conditioning import (
        LabelError,
        config_time_embedding_width,
        load_labels,
    )

    if references:
        raise BatchConfigError(
            "label guidance and reference images cannot be combined in one batch: set the "
            "label scale to 0 or leave out the reference images"
        )
    path = model_label_file(run)
    if path is None:
        raise BatchConfigError(
            f"run {run.pk} was not trained with label conditioning, so a label scale of "
            f"{label_scale:g} has nothing to guide: set it to 0, or train a LoRA or joint run "
            "with label_conditioning on"
        )
    try:
        width = load_labels(path).width
        expected = config_time_embedding_width(base.config("unet"))
    except (LabelError, BaseModelError, KeyError, TypeError, ValueError) as exc:
        raise BatchConfigError(f"run {run.pk}'s label table cannot be used: {exc}") from exc
    if width != expected:
        raise BatchConfigError(
            f"run {run.pk}'s label table cannot be used: its vectors are {width} wide but the "
            f"base model {run.base_model}'s UNet time embedding is {expected}"
        )


def label_pair(diagnosis: str, fst: int) -> tuple[str | None, int]:
    """A candidate's (diagnosis, skin type) label: OTHER has no diagnosis vector of its own."""
    return (diagnosis if diagnosis in LABEL_DIAGNOSES else None, fst)


def sample_conditioning(
    batch: Batch, diagnosis: str, fst: int, reference: int | None
) -> dict[str, Any]:
    """The Sample fields that record how a candidate was conditioned beyond its prompt."""
    from fairskin.diffusion.labels_conditioning import label_index

    guided = bool(batch.label_scale)
    return {
        "reference_image_id": reference,
        "reference_strength": batch.reference_strength if reference else None,
        "class_label": label_index(*label_pair(diagnosis, fst)) if guided else None,
        "label_scale": batch.label_scale if guided else None,
    }


def image_metadata(conditioning: dict[str, Any]) -> dict[str, Any]:
    """What the candidate's catalog image records of it (its dataset's own provenance)."""
    out: dict[str, Any] = {}
    if conditioning["reference_image_id"]:
        out["reference_image"] = conditioning["reference_image_id"]
    if conditioning["class_label"] is not None:
        out["class_label"] = conditioning["class_label"]
        out["label_scale"] = conditioning["label_scale"]
    return out


def batch_conditioning(batch: Batch) -> dict[str, Any]:
    """What the batch page says of the batch's conditioning: its label guidance and, per
    stratum, the reference image with the skin type it shows (another type when the stratum's
    own had none, `assign_references`)."""
    strata = (batch.reference or {}).get("strata", {})
    images = {
        i.pk: i for i in Image.objects.filter(pk__in=set(strata.values())).select_related("dataset")
    }
    rows = []
    for key, image_id in sorted(strata.items()):
        image = images.get(int(image_id))
        diagnosis, _, fst = key.partition(":")
        rows.append(
            {
                "diagnosis": diagnosis,
                "fst": int(fst),
                "image_id": int(image_id),
                "dataset": image.dataset.name if image else None,
                "image_fst": (image.fst_low if image and image.fst_low == image.fst_high else None),
            }
        )
    return {
        "label_scale": batch.label_scale,
        "references": rows,
        "reference_strength": batch.reference_strength,
        "reference_request": json.dumps((batch.reference or {}).get("request")),
        "distinct_references": len({r["image_id"] for r in rows}),
        "image_prompt": (batch.reference or {}).get("image_prompt"),
    }


def model_adapter_run(run: Run) -> Run | None:
    """The run whose image-prompt adapter the model's LoRA was trained with: the last run of
    its lineage that has a LoRA, when its folder holds ``ip_adapter.safetensors``."""
    from fairskin.diffusion.image_prompt import FILENAME as ADAPTER_FILE

    lineage = run.lineage()
    lora = _lora_run(lineage)
    if lora is None or not artifacts.has_file(lora.artifacts_dir, ADAPTER_FILE):
        return None
    return lora


def check_image_prompt(run: Run, base: BaseModel, *, scale: float) -> dict[str, Any]:
    """The adapter an image-prompt batch conditions on, checked against the base model before
    anything runs: the model's own (`model_adapter_run`), else the public IP-Adapter of
    ``FAIRSKIN_IP_ADAPTER_DIR``; refused when there is none, or it is not the basic IP-Adapter
    layout for this UNet and its image encoder. Returns its record (folder, file, sha256,
    tokens, scale) for the batch."""
    import torch
    from diffusers import UNet2DConditionModel

    from fairskin.diffusion.image_prompt import FILENAME as ADAPTER_FILE
    from fairskin.diffusion.image_prompt import (
        ImagePromptError,
        check_state,
        projection_dim,
        read_adapter_file,
    )

    own = model_adapter_run(run)
    if own is not None:
        folder = artifacts.fetch(own.artifacts_dir, include=_adapter_files)
        weight, source = ADAPTER_FILE, f"run {own.pk}"
    elif settings.FAIRSKIN_IP_ADAPTER_DIR:
        folder = Path(settings.FAIRSKIN_IP_ADAPTER_DIR)
        weight, source = settings.FAIRSKIN_IP_ADAPTER_WEIGHT, "FAIRSKIN_IP_ADAPTER_DIR"
    else:
        raise BatchConfigError(
            f"run {run.pk} trained no image-prompt adapter (image_prompt on a LoRA or joint "
            "run) and no public IP-Adapter is configured (FAIRSKIN_IP_ADAPTER_DIR: a folder with "
            "the SD v1.5 ip_adapter.safetensors and its image_encoder/), so the references "
            "cannot be image prompts; use img2img instead"
        )
    path = folder / weight
    try:
        state, _ = read_adapter_file(path)
        embed_dim = projection_dim(folder / "image_encoder")
        with torch.device("meta"):  # the UNet's layout from its config, no weights
            unet = UNet2DConditionModel.from_config(base.config("unet"))
        tokens, _ = check_state(state, unet, embed_dim, name=str(path))
    except (ImagePromptError, BaseModelError) as exc:
        raise BatchConfigError(f"the image-prompt adapter cannot be used: {exc}") from exc
    return {
        "folder": str(folder),
        "weight_name": weight,
        "source": source,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        # A run's own adapter is fetched from the store on each host; the public one is
        # FAIRSKIN_IP_ADAPTER_DIR, the same path on every host.
        "run_key": own.artifacts_dir if own is not None else "",
        "tokens": tokens,
        "scale": scale,
    }


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def generation_inputs(batch: Batch, diagnosis: str, fst: int, init: Any, n: int) -> dict[str, Any]:
    """The sampler's conditioning keywords for ``n`` candidates of one stratum whose reference
    pixels are ``init`` (`reference_rows`; None without references): an image prompt, or
    img2img rows at the batch's strength, and the labels with the batch's label scale. An
    image-prompt adapter whose file changed since the batch was created is refused."""
    prompt = (batch.reference or {}).get("image_prompt")
    if not prompt:
        return {
            "init_images": init,
            "strength": batch.reference_strength or 1.0,
            "labels": [label_pair(diagnosis, fst)] * n,
            "label_scale": batch.label_scale,
        }
    from fairskin.generation.sampler import ImagePrompt

    folder = (
        artifacts.fetch(prompt["run_key"], include=_adapter_files)
        if prompt.get("run_key")
        else Path(prompt["folder"])
    )
    path = folder / prompt["weight_name"]
    stat = path.stat()
    if _file_sha256(str(path), stat.st_mtime_ns, stat.st_size) != prompt["sha256"]:
        raise ValueError(
            f"the image-prompt adapter {path} changed since batch {batch.pk} was created "
            "(its sha256 differs from the one recorded): launch a new batch"
        )
    return {
        "image_prompt": ImagePrompt(folder, float(prompt["scale"]), init[0], prompt["weight_name"])
    }
