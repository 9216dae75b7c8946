"""Quality scores for generated candidates, computed on the GPU tensors before PNG encoding.

Per candidate: resolution, brightness, mean LPIPS to real images of the same skin type,
nearest-neighbour LPIPS to the training images (memorization), the classifier's confidence in
the intended diagnosis, and a per-image "FID" (Mahalanobis distance of its Inception features
to the same-FST real Gaussian). The near-duplicate check depends on the images accepted before
it, so it is decided later, with the stratum (`similarity.NearDuplicateCheck`).

Everything that compares with real data comes from a `Reference` (`fairskin.generation.reference`)
built once per batch from image files and saved without pickle. A check whose network has random
weights is measured and stored but does not reject, unless the config lists it in
`apply_uncalibrated`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from fairskin.generation.calibration import (
    MIN_HELD_OUT_PER_TYPE,
    calibration_pool,
    pool_label,
    pooled_values,
)
from fairskin.generation.checks import (
    CheckResult,
    Threshold,
    brightness_check,
    failed_reasons,
    resolution_check,
    threshold_check,
)
from fairskin.generation.extractors import Extractors
from fairskin.generation.perceptual import as_float, nearest_lpips, pairwise_lpips
from fairskin.generation.reference import FID_EPS, Reference
from fairskin.generation.scoring_config import (
    CHECK_NAMES,
    HIGHER_IS_WORSE,
    THRESHOLD_CHECKS,
    ScoringConfig,
)
from fairskin.labels import FST_TYPES
from fairskin.metrics.fid import feature_distances_to_reference

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class CandidateScore:
    # brightness, lpips_real, memorization_lpips, memorization_nearest (a training image id),
    # confidence, fid; None where not measurable.
    metrics: dict[str, float | str | None]
    checks: list[CheckResult]
    reasons: tuple[str, ...]
    clip_embedding: np.ndarray  # (D,) float32, L2-normalised
    inception_features: np.ndarray  # (2048,) float32

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": dict(self.metrics),
            "checks": [
                {
                    "name": c.name,
                    "value": _finite_or_none(float(c.value)),
                    "passed": bool(c.passed),
                    "reason": c.reason,
                    "calibrated": bool(c.calibrated),
                    "applied": bool(c.applied),
                }
                for c in self.checks
            ],
            "reasons": list(self.reasons),
        }


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class Scorer:
    """Scores batches of candidates against one reference with one set of networks."""

    def __init__(
        self, extractors: Extractors, reference: Reference, config: ScoringConfig, *, size: int
    ) -> None:
        if reference.size != size:
            raise ValueError(
                f"the reference was built at {reference.size} px but candidates "
                f"are {size} px: rebuild it at the generation size"
            )
        if config.lpips_reference_images != reference.lpips_count:
            raise ValueError(
                f"the reference holds up to {reference.lpips_count} LPIPS images per skin type "
                f"but the config asks for {config.lpips_reference_images}: rebuild it with "
                "lpips_images equal to lpips_reference_images"
            )
        current = extractors.provenance()
        for key, built_with in reference.provenance.items():
            if current[key] != built_with:
                raise ValueError(
                    f"the reference was built with {built_with['label']} but "
                    f"the scorer has {current[key]['label']}: rebuild it"
                )
        self.extractors = extractors
        self.reference = reference
        self.config = config
        self.size = size
        self.device = extractors.device
        self._calibration = self._decide_calibration()
        self._training = reference.training_images(self.device)
        self._real_images: dict[int, torch.Tensor] = {}

    def _decide_calibration(self) -> dict[str, dict[str, Any]]:
        inception, lpips, clip = (
            self.extractors.inception[1],
            self.extractors.lpips[1],
            self.extractors.clip[1],
        )
        depends = {
            "lpips_real": (lpips.calibrated, lpips.label),
            "memorization": (lpips.calibrated and clip.calibrated, f"{lpips.label} + {clip.label}"),
            "fid": (inception.calibrated, inception.label),
            "duplicate": (clip.calibrated, clip.label),
        }
        out = {
            name: {"calibrated": True, "applied": True, "extractor": "pixel statistics"}
            for name in ("resolution", "brightness")
        }
        for name, (calibrated, label) in depends.items():
            out[name] = {
                "calibrated": calibrated,
                "applied": calibrated or name in self.config.apply_uncalibrated,
                "extractor": label,
            }
        if self.extractors.classifier is None:
            out["confidence"] = {
                "calibrated": False,
                "applied": False,
                "extractor": "none (no classifier given)",
            }
        else:
            out["confidence"] = {
                "calibrated": True,
                "applied": True,
                "extractor": self.extractors.classifier[2].label,
            }
        return {name: out[name] for name in CHECK_NAMES}

    def calibration(self) -> dict[str, dict[str, Any]]:
        return {name: dict(entry) for name, entry in self._calibration.items()}

    @torch.no_grad()
    def score(
        self,
        images: torch.Tensor,
        *,
        diagnoses: Sequence[str],
        fsts: Sequence[int],
        references: torch.Tensor | None = None,
        reference_ids: Sequence[int | None] = (),
    ) -> list[CandidateScore]:
        """Every check of each candidate. With ``references`` (img2img: each candidate's own
        reference image, floats like ``images``) the memorization check also compares it with
        its reference: closer than the memorization limit, it is rejected as a copy."""
        n = self._validate(images, diagnoses, fsts)
        fsts = [int(f) for f in fsts]
        x = images.to(device=self.device, dtype=torch.float32)
        resolution = resolution_check(x, self.size)
        brightness = brightness_check(x, self.config.brightness_low, self.config.brightness_high)
        measured = self.measure(x, diagnoses=diagnoses, fsts=fsts)
        scores = []
        for i in range(n):
            checks = [resolution[i], brightness[i]] + [
                self._judge(name, measured[name][i], fsts[i]) for name in THRESHOLD_CHECKS
            ]
            metrics = {
                "brightness": brightness[i].value,
                "lpips_real": _finite_or_none(float(measured["lpips_real"][i])),
                "memorization_lpips": _finite_or_none(float(measured["memorization"][i])),
                "memorization_nearest": measured["nearest"][i],
                "confidence": _finite_or_none(float(measured["confidence"][i])),
                "fid": _finite_or_none(float(measured["fid"][i])),
            }
            if references is not None:
                copy = self._reference_copy(x[i], references[i], fsts[i], reference_ids[i])
                checks.append(copy)
                metrics["reference_lpips"] = _finite_or_none(copy.value)
            scores.append(
                CandidateScore(
                    metrics=metrics,
                    checks=checks,
                    reasons=failed_reasons(checks),
                    clip_embedding=measured["embeddings"][i].astype(np.float32),
                    inception_features=measured["features"][i].astype(np.float32),
                )
            )
        return scores

    @torch.no_grad()
    def measure(
        self, images: torch.Tensor, *, diagnoses: Sequence[str], fsts: Sequence[int]
    ) -> dict[str, Any]:
        """The measures the threshold checks judge (NaN where not measurable), with the
        Inception features, CLIP embeddings and nearest training ids: for candidates and, the
        same way, for held-out real images (a diagnosis the classifier lacks gets NaN)."""
        x = images.to(device=self.device, dtype=torch.float32)
        fsts = [int(f) for f in fsts]
        comparable = x
        if x.shape[-2:] != (self.reference.size, self.reference.size):
            comparable = F.interpolate(
                x,
                size=(self.reference.size,) * 2,
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        features = self.extractors.inception[0](x)
        embeddings = self.extractors.clip[0](x)
        memorization, nearest = self._memorization(comparable, embeddings)
        return {
            "lpips_real": self._lpips_to_real(comparable, fsts),
            "memorization": memorization,
            "nearest": nearest,
            "confidence": self._confidence(x, diagnoses),
            "fid": self._fid(features, fsts),
            "features": features,
            "embeddings": embeddings,
        }

    def _reference_copy(
        self, image: torch.Tensor, reference: torch.Tensor, fst: int, image_id: int | None
    ) -> CheckResult:
        """LPIPS from a candidate to its own reference, judged by the memorization limit."""
        ref = reference.to(device=self.device, dtype=torch.float32)[None]
        if ref.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"reference {tuple(ref.shape)} and image {tuple(image.shape)} differ")
        pair = torch.zeros(1, dtype=torch.long, device=self.device)
        value = float(pairwise_lpips(self.extractors.lpips[0], image[None], ref, pair, pair)[0])
        judged = self._judge("memorization", value, fst)
        reason = f"too close to its reference image {image_id}: {judged.reason}"
        return CheckResult(
            "reference_copy",
            judged.value,
            judged.passed,
            reason if judged.rejects else judged.reason,
            judged.calibrated,
            judged.applied,
        )

    def _validate(self, images: torch.Tensor, diagnoses: Sequence[str], fsts: Sequence[int]) -> int:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise ValueError(f"expected an (N, 3, H, W) image tensor, got {shape}")
        if not images.is_floating_point():
            raise ValueError(f"expected float images in [0, 1], got dtype {images.dtype}")
        n = images.shape[0]
        if len(diagnoses) != n or len(fsts) != n:
            raise ValueError(
                f"{n} images need {n} diagnoses and {n} skin types, got "
                f"{len(diagnoses)} and {len(fsts)}"
            )
        bad = sorted({f for f in fsts if f not in FST_TYPES}, key=str)
        if bad:
            raise ValueError(f"skin types must be 1-6, got {bad}")
        if self.extractors.classifier is not None:
            classes = self.extractors.classifier[1]["classes"]
            unknown = sorted(set(diagnoses) - set(classes))
            if unknown:
                raise ValueError(
                    f"diagnoses {unknown} are not classes of the classifier ({', '.join(classes)})"
                )
        return n

    def _judge(self, name: str, value: float, fst: int) -> CheckResult:
        calibration = self._calibration[name]
        calibrated, applied = calibration["calibrated"], calibration["applied"]
        if not math.isfinite(value):
            return CheckResult(
                name,
                float("nan"),
                True,
                f"{name} not measurable: {self._unmeasurable(name, fst)}",
                calibrated,
                False,
            )
        threshold: Threshold = getattr(self.config, name)
        reference, missing = self._threshold_values(name, threshold, fst)
        if missing:
            return CheckResult(
                name, float(value), True, f"{name} not judged: {missing}", calibrated, False
            )
        return threshold_check(
            name,
            [value],
            threshold,
            higher_is_worse=HIGHER_IS_WORSE[name],
            calibrated=calibrated,
            enabled=applied,
            reference=reference,
        )[0]

    def _threshold_values(
        self, name: str, threshold: Threshold, fst: int
    ) -> tuple[np.ndarray | None, str]:
        """The real values a non-absolute threshold is a percentile of, or why there are none."""
        if threshold.mode == "absolute":
            return None, ""
        if threshold.mode == "relative":
            values = self.reference.values_for(name, fst)
            if values is None or len(values) == 0:
                return None, (f"no real-vs-real values for FST {fst} to set its relative threshold")
            return values, ""
        per_type = self.reference.held_out.get(name, {})
        pool = calibration_pool(fst, {g: len(v) for g, v in per_type.items()})
        values = pooled_values(per_type, pool)
        if values.size < MIN_HELD_OUT_PER_TYPE:
            return None, (
                f"{values.size} held-out real images of {pool_label(pool)}, fewer than the "
                f"{MIN_HELD_OUT_PER_TYPE} its calibrated threshold needs"
            )
        return values, ""

    def _unmeasurable(self, name: str, fst: int) -> str:
        if name == "confidence":
            return "no classifier given"
        if name == "memorization":
            return "no training images in the reference"
        return f"no real images of FST {fst} in the reference"

    def _lpips_to_real(self, images: torch.Tensor, fsts: list[int]) -> np.ndarray:
        out = torch.full((len(fsts),), float("nan"), device=self.device)
        for fst in sorted(set(fsts)):
            real = self._real_for(fst)
            if real is None:
                continue
            rows = torch.tensor([i for i, f in enumerate(fsts) if f == fst], device=self.device)
            k = real.shape[0]
            left = rows.repeat_interleave(k)
            right = torch.arange(k, device=self.device).repeat(len(rows))
            pairs = pairwise_lpips(self.extractors.lpips[0], images, real, left, right)
            out[rows] = pairs.view(len(rows), k).mean(dim=1)
        return out.double().cpu().numpy()

    def _real_for(self, fst: int) -> torch.Tensor | None:
        if fst not in self._real_images:
            stored = self.reference.lpips_images.get(fst)
            if stored is None or stored.shape[0] == 0:
                return None
            self._real_images[fst] = as_float(stored.to(self.device))
        return self._real_images[fst]

    def _memorization(
        self, images: torch.Tensor, embeddings: np.ndarray
    ) -> tuple[np.ndarray, list[str | None]]:
        index = self.reference.index
        if index is None:
            return np.full(len(images), np.nan), [None] * len(images)
        found = index.nearest(embeddings, self.config.memorization_neighbours)
        neighbour_ids = [[image_id for image_id, _ in hits] for hits in found]
        # The index holds the reference's training_ids, which are str.
        return nearest_lpips(
            self.extractors.lpips[0], images, cast("list[list[str]]", neighbour_ids), self._training
        )

    def _confidence(self, images: torch.Tensor, diagnoses: Sequence[str]) -> np.ndarray:
        if self.extractors.classifier is None:
            return np.full(len(images), np.nan)
        model, manifest, _ = self.extractors.classifier
        side = manifest["config"]["image_size"]
        x = images
        if x.shape[-2:] != (side, side):
            # The tensor counterpart of the torchvision Resize the classifier was trained with.
            x = F.interpolate(
                x, size=(side, side), mode="bilinear", align_corners=False, antialias=True
            )
        mean = torch.tensor(_IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        probabilities = torch.softmax(model((x - mean) / std).float(), dim=1)
        classes = manifest["classes"]
        intended = torch.tensor(
            [classes.index(d) if d in classes else 0 for d in diagnoses], device=x.device
        )
        out = probabilities.gather(1, intended[:, None]).squeeze(1).double().cpu().numpy()
        out[[d not in classes for d in diagnoses]] = np.nan  # only held-out images get here
        return out

    def _fid(self, features: np.ndarray, fsts: list[int]) -> np.ndarray:
        out = np.full(len(fsts), np.nan)
        for fst in sorted(set(fsts)):
            gaussian = self.reference.inception.get(fst)
            if gaussian is None or gaussian.count < 2:
                continue
            rows = [i for i, f in enumerate(fsts) if f == fst]
            out[rows] = feature_distances_to_reference(features[rows], gaussian, eps=FID_EPS)
        return out
