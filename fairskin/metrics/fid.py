"""Fréchet distance between feature Gaussians (FID when the features are Inception pool3).

d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))   (Dowson & Landau 1982; Heusel et al. 2017)

The number is only an FID when the features come from calibrated Inception weights; see
`fairskin.metrics.extractors` for how the weights are recorded alongside every value.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

from fairskin.metrics.stats import StreamingGaussian

# Imaginary parts of sqrtm(S1 S2) below this fraction of its largest entry are rounding noise
# (the exact root of a product of PSD matrices has real eigenvalues); larger ones mean the
# inputs were not covariances.
_IMAGINARY_TOLERANCE = 1e-3
# sqrtm's own accuracy check: ||R R - M|| / ||M||. Anything worse is treated as a failed root.
_RESIDUAL_TOLERANCE = 1e-4


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *,
    eps: float = 1e-6,
) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    When S1 S2 is singular (fewer samples than dimensions, a constant feature) its square root
    is ill-defined numerically, so, as the reference implementations do, both covariances get
    eps * I added and the distance is computed for those regularised Gaussians.
    """
    mu1, sigma1 = _checked_gaussian(mu1, sigma1, "first")
    mu2, sigma2 = _checked_gaussian(mu2, sigma2, "second")
    if mu1.shape != mu2.shape:
        raise ValueError(f"the Gaussians have different dimensions: {mu1.shape} vs {mu2.shape}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")

    # A covariance that fails Cholesky makes the product singular; skipping the doomed first
    # sqrtm saves most of the time at dim 2048 (each sqrtm takes tens of seconds on a CPU).
    root = None
    if _is_positive_definite(sigma1) and _is_positive_definite(sigma2):
        root = _product_sqrtm(sigma1, sigma2)
    if root is None:
        offset = eps * np.eye(mu1.shape[0])
        # Use the offset covariances in the traces too: mixing regularised and raw terms
        # leaves a spurious -2 * d * eps even for identical inputs.
        sigma1, sigma2 = sigma1 + offset, sigma2 + offset
        root = _product_sqrtm(sigma1, sigma2)
        if root is None:
            raise ValueError(
                f"could not compute sqrtm(sigma1 @ sigma2) even with {eps} * I added; "
                "try a larger eps"
            )

    diff = mu1 - mu2
    trace_terms = np.trace(sigma1) + np.trace(sigma2)
    distance = float(diff @ diff + trace_terms - 2.0 * np.trace(root))
    # The exact value is >= 0; a tiny negative one is cancellation between the trace terms.
    if distance < -1e-6 * max(trace_terms + float(diff @ diff), 1.0):
        raise ValueError(f"Fréchet distance came out negative ({distance}); inputs inconsistent")
    return max(distance, 0.0)


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two (n, dim) feature sets."""
    a = _checked_features(a, "a")
    b = _checked_features(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    return frechet_distance(
        a.mean(axis=0), np.cov(a, rowvar=False), b.mean(axis=0), np.cov(b, rowvar=False)
    )


def fid_from_statistics(a: StreamingGaussian, b: StreamingGaussian) -> float:
    """Fréchet distance between two stored (possibly merged) streaming statistics."""
    return frechet_distance(a.mean, a.covariance, b.mean, b.covariance)


def feature_distance_to_reference(
    features: np.ndarray, reference: StreamingGaussian, *, eps: float = 1e-6
) -> float:
    """Distance of one image's features to a reference feature distribution.

    A per-image FID is not a defined quantity: FID compares two distributions, and one image
    has no covariance. The quality filter needs a per-image score all the same, so this is the
    chosen stand-in: the Mahalanobis distance sqrt((x - mu)^T (Sigma + eps I)^-1 (x - mu)) of
    the image's features x to the Gaussian fitted to the real images of the same skin type.

    With fewer reference images than feature dimensions Sigma is singular and eps sets how
    strongly deviations outside the span of the reference images are penalised (1/sqrt(eps)
    per unit); pass a larger eps (a ridge) for small strata.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"features must be one vector of shape (dim,), got {x.shape}")
    return float(feature_distances_to_reference(x[None, :], reference, eps=eps)[0])


def feature_distances_to_reference(
    features: np.ndarray, reference: StreamingGaussian, *, eps: float = 1e-6
) -> np.ndarray:
    """`feature_distance_to_reference` for every row of a (n, dim) array.

    Factorising the dim x dim covariance is the expensive part, so score a batch at once.
    """
    x = _checked_features(features, "features", min_rows=1)
    if x.shape[1] != reference.dim:
        raise ValueError(f"features have dim {x.shape[1]}, the reference has {reference.dim}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    regularised = reference.covariance + eps * np.eye(reference.dim)
    try:
        factor = scipy.linalg.cho_factor(regularised)
    except np.linalg.LinAlgError as exc:
        raise ValueError(
            f"reference covariance + {eps} * I is not positive definite; try a larger eps"
        ) from exc
    diff = x - reference.mean
    solved = scipy.linalg.cho_solve(factor, diff.T).T
    squared = np.einsum("ij,ij->i", diff, solved)
    # Rounding can make an exact zero (x at the mean) slightly negative.
    return np.sqrt(np.maximum(squared, 0.0))


def _is_positive_definite(matrix: np.ndarray) -> bool:
    try:
        np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        return False
    return True


def _product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray) -> np.ndarray | None:
    """Real sqrtm(sigma1 @ sigma2), or None where the product is singular or the root fails."""
    product = sigma1 @ sigma2
    with warnings.catch_warnings():
        # scipy only warns on a singular matrix and may then return a finite but meaningless
        # root (entries near 1e291 for a nilpotent matrix), so a warning counts as failure.
        warnings.simplefilter("error", scipy.linalg.LinAlgWarning)
        try:
            root = scipy.linalg.sqrtm(product)
        except (scipy.linalg.LinAlgWarning, np.linalg.LinAlgError):
            return None
    if not np.isfinite(root).all():
        return None
    if np.iscomplexobj(root):
        largest_imaginary = np.abs(root.imag).max()
        if largest_imaginary > _IMAGINARY_TOLERANCE * max(np.abs(root).max(), 1e-300):
            raise ValueError(
                f"sqrtm(sigma1 @ sigma2) has a large imaginary component ({largest_imaginary:.3g}):"
                " the covariances are probably not positive semi-definite"
            )
        root = root.real
    product_norm = np.linalg.norm(product)
    if product_norm > 0 and np.linalg.norm(root @ root - product) > (
        _RESIDUAL_TOLERANCE * product_norm
    ):
        return None
    return root


def _checked_gaussian(mu: np.ndarray, sigma: np.ndarray, which: str) -> tuple[np.ndarray, ...]:
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1 or mu.shape[0] == 0:
        raise ValueError(f"the {which} mean must be a non-empty vector, got shape {mu.shape}")
    dim = mu.shape[0]
    if sigma.shape != (dim, dim):
        raise ValueError(
            f"the {which} covariance must have shape ({dim}, {dim}) to match its mean, "
            f"got {sigma.shape}"
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"the {which} Gaussian contains NaN or infinite values")
    scale = max(np.abs(sigma).max(), 1e-300)
    if np.abs(sigma - sigma.T).max() > 1e-8 * scale:
        raise ValueError(f"the {which} covariance is not symmetric")
    return mu, sigma


def _checked_features(features: np.ndarray, name: str, min_rows: int = 2) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a (n, dim) array, got shape {x.shape}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x
