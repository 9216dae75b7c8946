"""The real-image reference candidates are scored against, built once per batch.

Per skin type it holds the Inception Gaussian of the real images, a feature sample for KID,
a few real images for LPIPS, and the real-vs-real values that relative thresholds are
percentiles of; plus CLIP embeddings of the training images for the memorization search. It
is built by streaming image files through the networks (each part reported as a progress phase
of its own, see ``PHASE_*``) and saved without pickle.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import numpy as np
import scipy.linalg
import torch

from fairskin.generation import reference_stats as stats_format
from fairskin.generation.extractors import Extractors
from fairskin.generation.perceptual import (
    TrainingImages,
    as_float,
    load_uint8,
    nearest_lpips,
    pairwise_lpips,
)
from fairskin.generation.similarity import EmbeddingIndex
from fairskin.labels import FST_TYPES
from fairskin.metrics.extractors import INCEPTION_FEATURES, PerceptualDistance
from fairskin.metrics.stats import StreamingGaussian
from fairskin.progress import Progress

# The Mahalanobis ridge, as in feature_distances_to_reference; the real-vs-real values must use
# the same one or a relative threshold compares different quantities.
FID_EPS = 1e-6
KID_SAMPLE_CAP = 500

# The parts of a reference build, each reported as a progress phase with its own count.
PHASE_INCEPTION = "Inception features of real images"
PHASE_LPIPS = "LPIPS and FID reference per skin type"
PHASE_CLIP = "CLIP embeddings of training images"
PHASE_MEMORIZATION = "Memorization index"


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
    # Held-out real images (disjoint from the above and from training), measured as candidates
    # are: per check, per FST, the finite values; and per FST, how many images were held out.
    held_out: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    held_out_counts: dict[int, int] = field(default_factory=dict)

    def values_for(self, check: str, fst: int) -> np.ndarray | None:
        """The real-vs-real values a relative threshold of `check` resolves from."""
        per_fst = self.real_vs_real.get(check, {})
        return per_fst.get(0 if check == "memorization" else fst)

    @cached_property
    def index(self) -> EmbeddingIndex | None:
        if not self.training_ids:
            return None
        return EmbeddingIndex(self.training_embeddings, self.training_ids)

    def training_images(self, device: torch.device) -> TrainingImages:
        """The training images by id, decoded on demand (for memorization searches)."""
        paths = dict(zip(self.training_ids, self.training_paths, strict=True))
        return TrainingImages(paths, self.size, device)

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
        for name, value in (
            ("size", size),
            ("lpips_images", lpips_images),
            ("batch_size", batch_size),
            ("memorization_neighbours", memorization_neighbours),
            ("memorization_sample", memorization_sample),
        ):
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
        lpips_rows = {
            fst: _seeded_subset(rows, lpips_images, seed, "lpips", fst)
            for fst, rows in by_fst.items()
        }
        sample_rows = {
            fst: _seeded_subset(rows, KID_SAMPLE_CAP, seed, "kid", fst)
            for fst, rows in by_fst.items()
        }
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
            pixels = load_uint8([real[i][0] for i in rows], size).to(device)
            features = extract(as_float(pixels))
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
        lpips_stack = {
            fst: torch.stack([kept_images[i] for i in rows]) for fst, rows in lpips_rows.items()
        }
        real_vs_real: dict[str, dict[int, np.ndarray]] = {
            "lpips_real": {},
            "fid": {},
            "memorization": {},
        }
        samples = {}
        tracker.phase(PHASE_LPIPS, len(by_fst))
        for fst in sorted(by_fst):
            real_vs_real["lpips_real"][fst] = _mean_lpips_to_the_others(
                distance, as_float(lpips_stack[fst])
            )
            stacked = np.stack([sampled[i] for i in sample_rows[fst]])
            real_vs_real["fid"][fst] = _leave_one_out_distances(stacked, gaussians[fst], FID_EPS)
            samples[fst] = stacked.astype(np.float32)
            tracker.advance(1, "skin types")

        training_paths = [str(path) for _, path in training]
        embed = extractors.clip[0]
        chunks = []
        tracker.phase(PHASE_CLIP, len(training_paths))
        for start in range(0, len(training_paths), batch_size):
            paths = training_paths[start : start + batch_size]
            chunks.append(embed(as_float(load_uint8(paths, size).to(device))))
            tracker.advance(len(paths), "images")
        embeddings = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)

        reference = cls(
            size=size,
            provenance={
                k: v
                for k, v in extractors.provenance().items()
                if k in ("inception", "lpips", "clip")
            },
            inception=gaussians,
            inception_sample=samples,
            lpips_images=lpips_stack,
            real_vs_real=real_vs_real,
            training_ids=training_ids,
            training_paths=training_paths,
            training_embeddings=embeddings.astype(np.float32),
            lpips_count=lpips_images,
            seed=seed,
        )
        real_vs_real["memorization"][0] = _training_nearest_lpips(
            reference,
            distance,
            device,
            sample=memorization_sample,
            neighbours=memorization_neighbours,
            batch_size=batch_size,
            tracker=tracker,
        )
        return reference

    def save(self, folder: str | Path) -> None:
        """JSON, npz and safetensors only: loading a reference never unpickles anything."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"training_embeddings": self.training_embeddings}
        gaussians = {}
        for fst, gaussian in self.inception.items():
            stored, mean, upper = stats_format.gaussian_parts(gaussian)
            arrays[stats_format.mean_key(fst)] = mean
            arrays[stats_format.m2_upper_key(fst)] = upper
            gaussians[str(fst)] = stored
        for fst, rows in self.inception_sample.items():
            arrays[stats_format.sample_key(fst)] = rows
        for check, per_fst in self.real_vs_real.items():
            for fst, values in per_fst.items():
                arrays[f"real_vs_real_{check}_{fst}"] = values
        for check, per_fst in self.held_out.items():
            for fst, values in per_fst.items():
                arrays[f"held_out_{check}_{fst}"] = np.asarray(values, dtype=np.float64)
        meta = {
            "format": stats_format.REFERENCE_FORMAT,
            "size": self.size,
            "seed": self.seed,
            "lpips_count": self.lpips_count,
            "provenance": self.provenance,
            "gaussians": gaussians,
            "real_vs_real": {
                check: sorted(per_fst) for check, per_fst in self.real_vs_real.items()
            },
            "training_ids": self.training_ids,
            "training_paths": self.training_paths,
            "held_out": {check: sorted(per_fst) for check, per_fst in self.held_out.items()},
            "held_out_counts": {str(fst): n for fst, n in self.held_out_counts.items()},
        }
        images = {f"fst_{fst}": t.contiguous().cpu() for fst, t in self.lpips_images.items()}
        # Each file is written whole under a temporary name and then renamed into place.
        # numpy's stub types savez's **kwds as its allow_pickle flag (bool); they are arrays.
        _replace(folder / stats_format.ARRAYS_FILE, lambda p: np.savez(p, **arrays))  # type: ignore[arg-type]
        _replace(folder / "lpips_images.safetensors", lambda p: save_file(images, str(p)))
        # The metadata last: a folder without it is no reference (read_meta refuses it).
        _replace(folder / stats_format.META_FILE, lambda p: p.write_text(json.dumps(meta)))

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> Reference:
        from safetensors.torch import load_file

        folder = Path(folder)
        meta = stats_format.read_meta(folder)
        with np.load(folder / stats_format.ARRAYS_FILE, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
        gaussians = stats_format.gaussians_from(meta, arrays)
        images = load_file(str(folder / "lpips_images.safetensors"), device=str(device))
        return cls(
            size=meta["size"],
            provenance=meta["provenance"],
            inception=gaussians,
            inception_sample={fst: arrays[stats_format.sample_key(fst)] for fst in gaussians},
            lpips_images={int(key.removeprefix("fst_")): t for key, t in images.items()},
            real_vs_real={
                check: {fst: arrays[f"real_vs_real_{check}_{fst}"] for fst in fsts}
                for check, fsts in meta["real_vs_real"].items()
            },
            training_ids=meta["training_ids"],
            training_paths=meta["training_paths"],
            training_embeddings=arrays["training_embeddings"],
            lpips_count=meta["lpips_count"],
            seed=meta["seed"],
            # References saved before held-out calibration have none.
            held_out={
                check: {int(fst): arrays[f"held_out_{check}_{fst}"] for fst in fsts}
                for check, fsts in meta.get("held_out", {}).items()
            },
            held_out_counts={int(k): int(n) for k, n in meta.get("held_out_counts", {}).items()},
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


def _seeded_subset(rows: list[int], cap: int, seed: int, purpose: str, fst: int) -> list[int]:
    """Up to `cap` of `rows`, chosen by a stream of its own, in input order."""
    if len(rows) <= cap:
        return list(rows)
    purpose_code = int.from_bytes(purpose.encode(), "little")
    rng = np.random.default_rng([seed, purpose_code, fst])
    return sorted(rng.choice(rows, size=cap, replace=False).tolist())


def _mean_lpips_to_the_others(distance: PerceptualDistance, images: torch.Tensor) -> np.ndarray:
    """Each image's mean LPIPS to the other images (the real-vs-real lpips_real values)."""
    k = images.shape[0]
    if k < 2:
        return np.zeros(0)
    first, second = torch.triu_indices(k, k, offset=1, device=images.device)
    pairs = pairwise_lpips(distance, images, images, first, second)
    # LPIPS is symmetric, so each unordered pair counts for both of its images.
    matrix = torch.zeros(k, k, device=images.device)
    matrix[first, second] = pairs
    matrix[second, first] = pairs
    return (matrix.sum(dim=1) / (k - 1)).double().cpu().numpy()


def _leave_one_out_distances(
    rows: np.ndarray, gaussian: StreamingGaussian, eps: float
) -> np.ndarray:
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
    return cast("np.ndarray", np.sqrt(np.maximum(squared, 0.0)))


def _training_nearest_lpips(
    reference: Reference,
    distance: PerceptualDistance,
    device: torch.device,
    *,
    sample: int,
    neighbours: int,
    batch_size: int,
    tracker: _Tracker,
) -> np.ndarray:
    """Nearest-neighbour LPIPS among training images, found the way candidates' are: the
    CLIP index proposes `neighbours` other images, LPIPS picks the nearest of them."""
    index = reference.index
    n = len(reference.training_ids)
    if index is None or n < 2:
        return np.zeros(0)
    chosen = _seeded_subset(list(range(n)), sample, reference.seed, "memorization", 0)
    tracker.phase(PHASE_MEMORIZATION, len(chosen))
    loader = reference.training_images(device)
    values = []
    for start in range(0, len(chosen), batch_size):
        rows = chosen[start : start + batch_size]
        found = index.nearest(reference.training_embeddings[rows], neighbours + 1)
        others = [
            [i for i, _ in hits if i != reference.training_ids[row]][:neighbours]
            for row, hits in zip(rows, found, strict=True)
        ]
        queries = as_float(loader.images([reference.training_ids[row] for row in rows]))
        # The index holds training_ids, which are str.
        values.append(nearest_lpips(distance, queries, cast("list[list[str]]", others), loader)[0])
        tracker.advance(len(rows), "training images")
    return np.concatenate(values)
