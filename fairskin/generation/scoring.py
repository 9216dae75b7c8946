"""Quality scores for generated candidates, computed on the GPU tensors before PNG encoding.

Per candidate: resolution, brightness, mean LPIPS to real images of the same skin type,
nearest-neighbour LPIPS to the training images (memorization), the classifier's confidence in
the intended diagnosis, and a per-image "FID" (Mahalanobis distance of its Inception features
to the same-FST real Gaussian). The near-duplicate check depends on the images accepted before
it, so it is decided later by the caller (`plan.decide_stratum`) with `Scorer.is_duplicate`.

Everything that compares with real data comes from a `Reference` built once per batch from
image files and saved without pickle. A check whose network has random weights is measured and
stored but does not reject, unless the config lists it in `apply_uncalibrated`.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from fairskin.generation.checks import (
    CheckResult,
    Threshold,
    brightness_check,
    failed_reasons,
    resolution_check,
    threshold_check,
)
from fairskin.generation.scoring_config import (
    CHECK_NAMES,
    HIGHER_IS_WORSE,
    THRESHOLD_CHECKS,
    ScoringConfig,
    ScoringConfigError,
)
from fairskin.generation.similarity import EmbeddingIndex, is_near_duplicate
from fairskin.imaging.decode import decode_image_file
from fairskin.imaging.resize import to_square
from fairskin.labels import FST_TYPES
from fairskin.metrics.extractors import (
    DEFAULT_CLIP_MODEL,
    INCEPTION_FEATURES,
    Embedder,
    ExtractorInfo,
    FeatureExtractor,
    PerceptualDistance,
    clip_image_embedder,
    inception_features_extractor,
    lpips_metric,
    sha256_prefix,
)
from fairskin.metrics.fid import feature_distances_to_reference
from fairskin.metrics.stats import StreamingGaussian
from fairskin.progress import Progress

__all__ = ["CHECK_NAMES", "CandidateScore", "Extractors", "Reference", "Scorer",
           "ScoringConfig", "ScoringConfigError"]

# The Mahalanobis ridge, as in feature_distances_to_reference; the real-vs-real values must use
# the same one or a relative threshold compares different quantities.
FID_EPS = 1e-6
KID_SAMPLE_CAP = 500
_REFERENCE_FORMAT = 1
_LPIPS_CHUNK = 64  # image pairs per LPIPS forward pass: bounds memory at 512 px
_TRAINING_CACHE = 64  # decoded training images kept between batches
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

# The parts of a reference build, each reported as a progress phase with its own count.
PHASE_INCEPTION = "Inception features of real images"
PHASE_LPIPS = "LPIPS and FID reference per skin type"
PHASE_CLIP = "CLIP embeddings of training images"
PHASE_MEMORIZATION = "Memorization index"


# --- the networks ------------------------------------------------------------------------------


@dataclass
class Extractors:
    """The networks scoring needs, each with the provenance of its weights."""

    inception: tuple[FeatureExtractor, ExtractorInfo]
    lpips: tuple[PerceptualDistance, ExtractorInfo]
    clip: tuple[Embedder, ExtractorInfo]
    classifier: tuple[nn.Module, dict[str, Any], ExtractorInfo] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def load(cls, *, device: str | torch.device, inception_weights: str | None = None,
             lpips_weights: str | None = None, clip_model: str = DEFAULT_CLIP_MODEL,
             clip_weights: str | None = None,
             classifier_dir: str | Path | None = None) -> Extractors:
        from fairskin.classifier.train import MODEL_FILE, load_classifier

        device = torch.device(device)
        classifier = None
        if classifier_dir is not None:
            run_dir = Path(classifier_dir)
            model, manifest = load_classifier(run_dir, str(device))
            arch = manifest["config"]["arch"]
            # It was trained, so it counts as calibrated; the hash names which run it is.
            info = ExtractorInfo(f"classifier {arch}", sha256_prefix(run_dir / MODEL_FILE), True)
            classifier = (model, manifest, info)
        return cls(
            inception=inception_features_extractor(inception_weights, device=device),
            lpips=lpips_metric(lpips_weights, device=device),
            clip=clip_image_embedder(clip_model, clip_weights, device=device),
            classifier=classifier,
            device=device,
        )

    def provenance(self) -> dict[str, dict[str, Any]]:
        infos = {"inception": self.inception[1], "lpips": self.lpips[1], "clip": self.clip[1]}
        if self.classifier is not None:
            infos["classifier"] = self.classifier[2]
        return {key: {"name": info.name, "weights": info.weights,
                      "calibrated": info.calibrated, "label": info.label}
                for key, info in infos.items()}


# --- the real-image reference ------------------------------------------------------------------


@dataclass
class Reference:
    """What candidates are compared with, built once per batch from image files.

    Per skin type: the Inception Gaussian of its real images, a capped raw feature sample (for
    KID), up to `lpips_count` real images (uint8, at `size`), and the real-vs-real values that
    relative thresholds are percentiles of. Plus CLIP embeddings of the training images for the
    memorization search. A skin type without real images is simply absent.
    """

    size: int
    provenance: dict[str, dict[str, Any]]
    inception: dict[int, StreamingGaussian]  # Inception feature Gaussian per FST
    inception_sample: dict[int, np.ndarray]  # float32 (<= KID_SAMPLE_CAP, 2048) per FST, for KID
    lpips_images: dict[int, torch.Tensor]  # uint8 (k, 3, size, size) per FST
    # "lpips_real" and "fid": per FST; "memorization": the training set's, under key 0.
    real_vs_real: dict[str, dict[int, np.ndarray]]
    training_ids: list[str]
    training_paths: list[str]
    training_embeddings: np.ndarray  # float32 (n, D), L2-normalised
    lpips_count: int = 10
    seed: int = 0

    def values_for(self, check: str, fst: int) -> np.ndarray | None:
        """The real-vs-real values a relative threshold of `check` resolves from."""
        per_fst = self.real_vs_real.get(check, {})
        return per_fst.get(0 if check == "memorization" else fst)

    @cached_property
    def index(self) -> EmbeddingIndex | None:
        if not self.training_ids:
            return None
        return EmbeddingIndex(self.training_embeddings, self.training_ids)

    @classmethod
    def build(
        cls,
        extractors: Extractors,
        *,
        real: Sequence[tuple[str, int]],
        training: Sequence[tuple[str, str]],
        size: int,
        lpips_images: int = 10,
        seed: int = 0,
        batch_size: int = 16,
        progress: Progress | None = None,
        memorization_neighbours: int = 5,
        memorization_sample: int = 64,
    ) -> Reference:
        """Stream the real images (path, FST) and the training images (id, path) through the
        networks in batches of `batch_size`; memory stays bounded by the batch and the caps."""
        for name, value in (("size", size), ("lpips_images", lpips_images),
                            ("batch_size", batch_size),
                            ("memorization_neighbours", memorization_neighbours),
                            ("memorization_sample", memorization_sample)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive whole number, got {value!r}")
        real = [(str(path), fst) for path, fst in real]
        bad = sorted({fst for _, fst in real if fst not in FST_TYPES}, key=str)
        if bad:
            raise ValueError(f"real images need a Fitzpatrick type 1-6, got {bad}")
        training_ids = [str(i) for i, _ in training]
        if len(set(training_ids)) != len(training_ids):
            raise ValueError("training image ids must be unique")
        tracker = _Tracker(progress)

        by_fst: dict[int, list[int]] = {}
        for i, (_, fst) in enumerate(real):
            by_fst.setdefault(fst, []).append(i)
        lpips_rows = {fst: _seeded_subset(rows, lpips_images, seed, "lpips", fst)
                      for fst, rows in by_fst.items()}
        sample_rows = {fst: _seeded_subset(rows, KID_SAMPLE_CAP, seed, "kid", fst)
                       for fst, rows in by_fst.items()}
        to_sample = {i for rows in sample_rows.values() for i in rows}
        to_keep = {i for rows in lpips_rows.values() for i in rows}

        device = extractors.device
        extract = extractors.inception[0]
        gaussians = {fst: StreamingGaussian(INCEPTION_FEATURES) for fst in by_fst}
        sampled: dict[int, np.ndarray] = {}
        kept_images: dict[int, torch.Tensor] = {}
        tracker.phase(PHASE_INCEPTION, len(real))
        for start in range(0, len(real), batch_size):
            rows = list(range(start, min(start + batch_size, len(real))))
            pixels = _load_uint8([real[i][0] for i in rows], size).to(device)
            features = extract(_as_float(pixels))
            for fst in {real[i][1] for i in rows}:
                mine = [k for k, i in enumerate(rows) if real[i][1] == fst]
                gaussians[fst].update(features[mine])
                for k in mine:
                    # Copies: a view would keep its whole batch alive until the end.
                    if rows[k] in to_sample:
                        sampled[rows[k]] = features[k].copy()
                    if rows[k] in to_keep:
                        kept_images[rows[k]] = pixels[k].clone()
            tracker.advance(len(rows), "images")

        distance = extractors.lpips[0]
        lpips_stack = {fst: torch.stack([kept_images[i] for i in rows])
                       for fst, rows in lpips_rows.items()}
        real_vs_real: dict[str, dict[int, np.ndarray]] = {"lpips_real": {}, "fid": {},
                                                          "memorization": {}}
        samples = {}
        tracker.phase(PHASE_LPIPS, len(by_fst))
        for fst in sorted(by_fst):
            real_vs_real["lpips_real"][fst] = _mean_lpips_to_the_others(
                distance, _as_float(lpips_stack[fst]))
            rows = np.stack([sampled[i] for i in sample_rows[fst]])
            real_vs_real["fid"][fst] = _leave_one_out_distances(rows, gaussians[fst], FID_EPS)
            samples[fst] = rows.astype(np.float32)
            tracker.advance(1, "skin types")

        training_paths = [str(path) for _, path in training]
        embed = extractors.clip[0]
        chunks = []
        tracker.phase(PHASE_CLIP, len(training_paths))
        for start in range(0, len(training_paths), batch_size):
            paths = training_paths[start:start + batch_size]
            chunks.append(embed(_as_float(_load_uint8(paths, size).to(device))))
            tracker.advance(len(paths), "images")
        embeddings = (np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32))

        reference = cls(
            size=size,
            provenance={k: v for k, v in extractors.provenance().items()
                        if k in ("inception", "lpips", "clip")},
            inception=gaussians, inception_sample=samples, lpips_images=lpips_stack,
            real_vs_real=real_vs_real, training_ids=training_ids,
            training_paths=training_paths, training_embeddings=embeddings.astype(np.float32),
            lpips_count=lpips_images, seed=seed,
        )
        real_vs_real["memorization"][0] = _training_nearest_lpips(
            reference, distance, device, sample=memorization_sample,
            neighbours=memorization_neighbours, batch_size=batch_size, tracker=tracker)
        return reference

    def save(self, folder: str | Path) -> None:
        """JSON, npz and safetensors only: loading a reference never unpickles anything."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"training_embeddings": self.training_embeddings}
        gaussians = {}
        for fst, gaussian in self.inception.items():
            stored = gaussian.to_dict()
            arrays[f"gaussian_{fst}_mean"] = np.asarray(stored.pop("mean"))
            arrays[f"gaussian_{fst}_m2_upper"] = np.asarray(stored.pop("m2_upper"))
            gaussians[str(fst)] = stored
        for fst, rows in self.inception_sample.items():
            arrays[f"inception_sample_{fst}"] = rows
        for check, per_fst in self.real_vs_real.items():
            for fst, values in per_fst.items():
                arrays[f"real_vs_real_{check}_{fst}"] = values
        meta = {
            "format": _REFERENCE_FORMAT, "size": self.size, "seed": self.seed,
            "lpips_count": self.lpips_count, "provenance": self.provenance,
            "gaussians": gaussians,
            "real_vs_real": {check: sorted(per_fst) for check, per_fst in
                             self.real_vs_real.items()},
            "training_ids": self.training_ids, "training_paths": self.training_paths,
        }
        images = {f"fst_{fst}": t.contiguous().cpu() for fst, t in self.lpips_images.items()}
        # Each file is written whole under a temporary name and then renamed into place.
        _replace(folder / "arrays.npz", lambda p: np.savez(p, **arrays))
        _replace(folder / "lpips_images.safetensors", lambda p: save_file(images, str(p)))
        _replace(folder / "reference.json", lambda p: p.write_text(json.dumps(meta)))

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> Reference:
        from safetensors.torch import load_file

        folder = Path(folder)
        meta_path = folder / "reference.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no scoring reference in {folder} (reference.json missing)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != _REFERENCE_FORMAT:
            raise ValueError(f"unsupported scoring reference format {meta.get('format')!r}")
        with np.load(folder / "arrays.npz", allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
        gaussians = {
            int(fst): StreamingGaussian.from_dict({
                **stats, "mean": arrays[f"gaussian_{fst}_mean"],
                "m2_upper": arrays[f"gaussian_{fst}_m2_upper"]})
            for fst, stats in meta["gaussians"].items()
        }
        images = load_file(str(folder / "lpips_images.safetensors"), device=str(device))
        return cls(
            size=meta["size"],
            provenance=meta["provenance"],
            inception=gaussians,
            inception_sample={fst: arrays[f"inception_sample_{fst}"] for fst in gaussians},
            lpips_images={int(key.removeprefix("fst_")): t for key, t in images.items()},
            real_vs_real={check: {fst: arrays[f"real_vs_real_{check}_{fst}"] for fst in fsts}
                          for check, fsts in meta["real_vs_real"].items()},
            training_ids=meta["training_ids"],
            training_paths=meta["training_paths"],
            training_embeddings=arrays["training_embeddings"],
            lpips_count=meta["lpips_count"],
            seed=meta["seed"],
        )


class _Tracker:
    """Counts within the current phase of a reference build (a Progress may be absent)."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress, self.total, self.done = progress, 0, 0

    def phase(self, name: str, total: int) -> None:
        self.total, self.done = total, 0
        if self.progress is not None:
            self.progress.phase(name, total=total)

    def advance(self, n: int, unit: str) -> None:
        self.done += n
        if self.progress is not None:
            self.progress.update(self.done, self.total, unit)


def _replace(path: Path, write: Callable[[Path], object]) -> None:
    # The suffix stays last: np.savez would otherwise append ".npz" to the temporary name.
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    write(partial)
    partial.replace(path)


def _seeded_subset(rows: list[int], cap: int, seed: int, purpose: str,
                   fst: int) -> list[int]:
    """Up to `cap` of `rows`, chosen by a stream of its own, in input order."""
    if len(rows) <= cap:
        return list(rows)
    purpose_code = int.from_bytes(purpose.encode(), "little")
    rng = np.random.default_rng([seed, purpose_code, fst])
    return sorted(rng.choice(rows, size=cap, replace=False).tolist())


def _load_uint8(paths: Sequence[str], size: int) -> torch.Tensor:
    """(n, 3, size, size) uint8: decoded upright RGB, centre-cropped square and resized."""
    pixels = [np.asarray(to_square(decode_image_file(path), size), dtype=np.uint8)
              for path in paths]
    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()


def _as_float(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.float() / 255


def _pairwise_lpips(distance: PerceptualDistance, left: torch.Tensor, right: torch.Tensor,
                    left_index: torch.Tensor, right_index: torch.Tensor) -> torch.Tensor:
    """LPIPS of left[left_index[j]] vs right[right_index[j]] for every j, in chunks."""
    parts = [distance(left[left_index[s:s + _LPIPS_CHUNK]],
                      right[right_index[s:s + _LPIPS_CHUNK]])
             for s in range(0, len(left_index), _LPIPS_CHUNK)]
    return torch.cat(parts) if parts else torch.zeros(0, device=left.device)


def _mean_lpips_to_the_others(distance: PerceptualDistance, images: torch.Tensor) -> np.ndarray:
    """Each image's mean LPIPS to the other images (the real-vs-real lpips_real values)."""
    k = images.shape[0]
    if k < 2:
        return np.zeros(0)
    first, second = torch.triu_indices(k, k, offset=1, device=images.device)
    pairs = _pairwise_lpips(distance, images, images, first, second)
    # LPIPS is symmetric, so each unordered pair counts for both of its images.
    matrix = torch.zeros(k, k, device=images.device)
    matrix[first, second] = pairs
    matrix[second, first] = pairs
    return (matrix.sum(dim=1) / (k - 1)).double().cpu().numpy()


def _leave_one_out_distances(rows: np.ndarray, gaussian: StreamingGaussian,
                             eps: float) -> np.ndarray:
    """Distance of each real image (a row that is in `gaussian`) to the Gaussian of the others.

    The in-sample distance would be no reference for a new image: with fewer images than
    feature dimensions a real image lies in the span of the covariance it helped build, which
    bounds its distance by about sqrt(n), while any new image gets ~1/sqrt(eps) per unit off
    that span. So, like lpips_real, this leaves the image out. Removing x_i takes a rank-one
    term out of M2: with d = x_i - mu, M2_-i = M2 - n/(n-1) d d^T and x_i - mu_-i = n/(n-1) d.
    Sherman-Morrison on A = M2/(n-2) + eps I then gives every leave-one-out distance from one
    factorisation: d^T (A - c d d^T)^-1 d = q / (1 - c q), q = d^T A^-1 d, c = n/((n-1)(n-2)).
    """
    n = gaussian.count
    if n < 3 or rows.shape[0] == 0:
        return np.zeros(0)
    dim = gaussian.dim
    spread = gaussian.covariance * ((n - 1) / (n - 2)) + eps * np.eye(dim)
    factor = scipy.linalg.cho_factor(spread)
    diff = np.asarray(rows, dtype=np.float64) - gaussian.mean
    q = np.einsum("ij,ij->i", diff, scipy.linalg.cho_solve(factor, diff.T).T)
    c = n / ((n - 1) * (n - 2))
    remainder = 1.0 - c * q
    # The remainder is positive in exact arithmetic; one lost to rounding is dropped.
    keep = remainder > 1e-12
    squared = (n / (n - 1)) ** 2 * q[keep] / remainder[keep]
    return np.sqrt(np.maximum(squared, 0.0))


def _training_nearest_lpips(reference: Reference, distance: PerceptualDistance,
                            device: torch.device, *, sample: int, neighbours: int,
                            batch_size: int, tracker: _Tracker) -> np.ndarray:
    """Nearest-neighbour LPIPS among training images, found the way candidates' are: the
    CLIP index proposes `neighbours` other images, LPIPS picks the nearest of them."""
    index = reference.index
    n = len(reference.training_ids)
    if index is None or n < 2:
        return np.zeros(0)
    chosen = _seeded_subset(list(range(n)), sample, reference.seed, "memorization", 0)
    tracker.phase(PHASE_MEMORIZATION, len(chosen))
    loader = _TrainingImages(reference, device)
    values = []
    for start in range(0, len(chosen), batch_size):
        rows = chosen[start:start + batch_size]
        found = index.nearest(reference.training_embeddings[rows], neighbours + 1)
        others = [[i for i, _ in hits if i != reference.training_ids[row]][:neighbours]
                  for row, hits in zip(rows, found, strict=True)]
        queries = _as_float(loader.images([reference.training_ids[row] for row in rows]))
        values.append(_nearest_lpips(distance, queries, others, loader)[0])
        tracker.advance(len(rows), "training images")
    return np.concatenate(values)


class _TrainingImages:
    """Training images by id, decoded on demand with a small LRU cache."""

    def __init__(self, reference: Reference, device: torch.device) -> None:
        self.paths = dict(zip(reference.training_ids, reference.training_paths, strict=True))
        self.size = reference.size
        self.device = device
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def images(self, ids: Sequence[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(i for i in ids if i not in self.cache))
        if missing:
            loaded = _load_uint8([self.paths[i] for i in missing], self.size)
            for image_id, pixels in zip(missing, loaded, strict=True):
                self.cache[image_id] = pixels.clone()  # not a view pinning the whole stack
        stacked = torch.stack([self.cache[i] for i in ids])
        for image_id in ids:
            self.cache.move_to_end(image_id)
        while len(self.cache) > _TRAINING_CACHE:
            self.cache.popitem(last=False)
        return stacked.to(self.device)


def _nearest_lpips(distance: PerceptualDistance, queries: torch.Tensor,
                   neighbour_ids: list[list[str]],
                   loader: _TrainingImages) -> tuple[np.ndarray, list[str | None]]:
    """For each query image, the smallest LPIPS to its proposed neighbours, and which one."""
    unique = list(dict.fromkeys(i for ids in neighbour_ids for i in ids))
    if not unique:
        return np.full(len(neighbour_ids), np.nan), [None] * len(neighbour_ids)
    position = {image_id: k for k, image_id in enumerate(unique)}
    neighbours = _as_float(loader.images(unique))
    left = [q for q, ids in enumerate(neighbour_ids) for _ in ids]
    right = [position[i] for ids in neighbour_ids for i in ids]
    flat = _pairwise_lpips(
        distance, queries, neighbours,
        torch.tensor(left, dtype=torch.long, device=queries.device),
        torch.tensor(right, dtype=torch.long, device=queries.device),
    ).cpu().numpy()
    best_values, best_ids, offset = [], [], 0
    for ids in neighbour_ids:
        row = flat[offset:offset + len(ids)]
        offset += len(ids)
        k = int(np.argmin(row))
        best_values.append(float(row[k]))
        best_ids.append(ids[k])
    return np.asarray(best_values), best_ids


# --- scoring -----------------------------------------------------------------------------------


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
            "checks": [{"name": c.name, "value": _finite_or_none(float(c.value)),
                        "passed": bool(c.passed), "reason": c.reason,
                        "calibrated": bool(c.calibrated), "applied": bool(c.applied)}
                       for c in self.checks],
            "reasons": list(self.reasons),
        }


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class Scorer:
    """Scores batches of candidates against one reference with one set of networks."""

    def __init__(self, extractors: Extractors, reference: Reference, config: ScoringConfig,
                 *, size: int) -> None:
        if reference.size != size:
            raise ValueError(f"the reference was built at {reference.size} px but candidates "
                             f"are {size} px: rebuild it at the generation size")
        if config.lpips_reference_images != reference.lpips_count:
            raise ValueError(
                f"the reference holds up to {reference.lpips_count} LPIPS images per skin type "
                f"but the config asks for {config.lpips_reference_images}: rebuild it with "
                "lpips_images equal to lpips_reference_images")
        current = extractors.provenance()
        for key, built_with in reference.provenance.items():
            if current[key] != built_with:
                raise ValueError(f"the reference was built with {built_with['label']} but "
                                 f"the scorer has {current[key]['label']}: rebuild it")
        self.extractors = extractors
        self.reference = reference
        self.config = config
        self.size = size
        self.device = extractors.device
        self._calibration = self._decide_calibration()
        self._training = _TrainingImages(reference, self.device)
        self._real_images: dict[int, torch.Tensor] = {}

    def _decide_calibration(self) -> dict[str, dict[str, Any]]:
        inception, lpips, clip = (self.extractors.inception[1], self.extractors.lpips[1],
                                  self.extractors.clip[1])
        depends = {
            "lpips_real": (lpips.calibrated, lpips.label),
            "memorization": (lpips.calibrated and clip.calibrated,
                             f"{lpips.label} + {clip.label}"),
            "fid": (inception.calibrated, inception.label),
            "duplicate": (clip.calibrated, clip.label),
        }
        out = {name: {"calibrated": True, "applied": True, "extractor": "pixel statistics"}
               for name in ("resolution", "brightness")}
        for name, (calibrated, label) in depends.items():
            out[name] = {"calibrated": calibrated,
                         "applied": calibrated or name in self.config.apply_uncalibrated,
                         "extractor": label}
        if self.extractors.classifier is None:
            out["confidence"] = {"calibrated": False, "applied": False,
                                 "extractor": "none (no classifier given)"}
        else:
            out["confidence"] = {"calibrated": True, "applied": True,
                                 "extractor": self.extractors.classifier[2].label}
        return {name: out[name] for name in CHECK_NAMES}

    def calibration(self) -> dict[str, dict[str, Any]]:
        return {name: dict(entry) for name, entry in self._calibration.items()}

    def is_duplicate(self, embedding: np.ndarray, accepted_embeddings: Sequence[np.ndarray],
                     ) -> bool:
        """For `plan.decide_stratum(is_duplicate=...)`: never true while the check is off."""
        if not self._calibration["duplicate"]["applied"]:
            return False
        return is_near_duplicate(np.asarray(embedding), [np.asarray(e) for e in
                                                         accepted_embeddings],
                                 threshold=self.config.duplicate_cosine)

    @torch.no_grad()
    def score(self, images: torch.Tensor, *, diagnoses: Sequence[str],
              fsts: Sequence[int]) -> list[CandidateScore]:
        n = self._validate(images, diagnoses, fsts)
        fsts = [int(f) for f in fsts]
        x = images.to(device=self.device, dtype=torch.float32)
        comparable = x
        if x.shape[-2:] != (self.reference.size, self.reference.size):
            comparable = F.interpolate(x, size=(self.reference.size,) * 2, mode="bilinear",
                                       align_corners=False, antialias=True)

        resolution = resolution_check(x, self.size)
        brightness = brightness_check(x, self.config.brightness_low,
                                      self.config.brightness_high)
        features = self.extractors.inception[0](x)
        embeddings = self.extractors.clip[0](x)
        lpips_real = self._lpips_to_real(comparable, fsts)
        memorization, nearest = self._memorization(comparable, embeddings)
        confidence = self._confidence(x, diagnoses)
        fid = self._fid(features, fsts)

        scores = []
        for i in range(n):
            measured = {"lpips_real": lpips_real[i], "memorization": memorization[i],
                        "confidence": confidence[i], "fid": fid[i]}
            checks = [resolution[i], brightness[i]] + [
                self._judge(name, measured[name], fsts[i]) for name in THRESHOLD_CHECKS]
            metrics = {
                "brightness": brightness[i].value,
                "lpips_real": _finite_or_none(float(lpips_real[i])),
                "memorization_lpips": _finite_or_none(float(memorization[i])),
                "memorization_nearest": nearest[i],
                "confidence": _finite_or_none(float(confidence[i])),
                "fid": _finite_or_none(float(fid[i])),
            }
            scores.append(CandidateScore(
                metrics=metrics, checks=checks, reasons=failed_reasons(checks),
                clip_embedding=embeddings[i].astype(np.float32),
                inception_features=features[i].astype(np.float32)))
        return scores

    def _validate(self, images: torch.Tensor, diagnoses: Sequence[str],
                  fsts: Sequence[int]) -> int:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise ValueError(f"expected an (N, 3, H, W) image tensor, got {shape}")
        if not images.is_floating_point():
            raise ValueError(f"expected float images in [0, 1], got dtype {images.dtype}")
        n = images.shape[0]
        if len(diagnoses) != n or len(fsts) != n:
            raise ValueError(f"{n} images need {n} diagnoses and {n} skin types, got "
                             f"{len(diagnoses)} and {len(fsts)}")
        bad = sorted({f for f in fsts if f not in FST_TYPES}, key=str)
        if bad:
            raise ValueError(f"skin types must be 1-6, got {bad}")
        if self.extractors.classifier is not None:
            classes = self.extractors.classifier[1]["classes"]
            unknown = sorted(set(diagnoses) - set(classes))
            if unknown:
                raise ValueError(f"diagnoses {unknown} are not classes of the classifier "
                                 f"({', '.join(classes)})")
        return n

    def _judge(self, name: str, value: float, fst: int) -> CheckResult:
        calibration = self._calibration[name]
        calibrated, applied = calibration["calibrated"], calibration["applied"]
        if not math.isfinite(value):
            return CheckResult(name, float("nan"), True,
                               f"{name} not measurable: {self._unmeasurable(name, fst)}",
                               calibrated, False)
        threshold: Threshold = getattr(self.config, name)
        reference = None
        if threshold.mode == "relative":
            reference = self.reference.values_for(name, fst)
            if reference is None or len(reference) == 0:
                return CheckResult(name, float(value), True,
                                   f"{name} not judged: no real-vs-real values for FST {fst} "
                                   "to set its relative threshold", calibrated, False)
        return threshold_check(name, [value], threshold,
                               higher_is_worse=HIGHER_IS_WORSE[name], calibrated=calibrated,
                               enabled=applied, reference=reference)[0]

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
            pairs = _pairwise_lpips(self.extractors.lpips[0], images, real, left, right)
            out[rows] = pairs.view(len(rows), k).mean(dim=1)
        return out.double().cpu().numpy()

    def _real_for(self, fst: int) -> torch.Tensor | None:
        if fst not in self._real_images:
            stored = self.reference.lpips_images.get(fst)
            if stored is None or stored.shape[0] == 0:
                return None
            self._real_images[fst] = _as_float(stored.to(self.device))
        return self._real_images[fst]

    def _memorization(self, images: torch.Tensor,
                      embeddings: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
        index = self.reference.index
        if index is None:
            return np.full(len(images), np.nan), [None] * len(images)
        found = index.nearest(embeddings, self.config.memorization_neighbours)
        neighbour_ids = [[image_id for image_id, _ in hits] for hits in found]
        return _nearest_lpips(self.extractors.lpips[0], images, neighbour_ids, self._training)

    def _confidence(self, images: torch.Tensor, diagnoses: Sequence[str]) -> np.ndarray:
        if self.extractors.classifier is None:
            return np.full(len(images), np.nan)
        model, manifest, _ = self.extractors.classifier
        side = manifest["config"]["image_size"]
        x = images
        if x.shape[-2:] != (side, side):
            # The tensor counterpart of the torchvision Resize the classifier was trained with.
            x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False,
                              antialias=True)
        mean = torch.tensor(_IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        probabilities = torch.softmax(model((x - mean) / std).float(), dim=1)
        intended = torch.tensor([manifest["classes"].index(d) for d in diagnoses],
                                device=x.device)
        return probabilities.gather(1, intended[:, None]).squeeze(1).double().cpu().numpy()

    def _fid(self, features: np.ndarray, fsts: list[int]) -> np.ndarray:
        out = np.full(len(fsts), np.nan)
        for fst in sorted(set(fsts)):
            gaussian = self.reference.inception.get(fst)
            if gaussian is None or gaussian.count < 2:
                continue
            rows = [i for i, f in enumerate(fsts) if f == fst]
            out[rows] = feature_distances_to_reference(features[rows], gaussian, eps=FID_EPS)
        return out
