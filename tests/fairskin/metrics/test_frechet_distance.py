"""Fréchet distance: closed-form cases, an independent eigendecomposition reference, and the
singular / invalid inputs that trip up naive implementations."""

import numpy as np
import pytest
import scipy.linalg

from fairskin.metrics import (
    StreamingGaussian,
    feature_distance_to_reference,
    feature_distances_to_reference,
    fid_from_features,
    fid_from_statistics,
    frechet_distance,
)


def reference_frechet(mu1, sigma1, mu2, sigma2):
    """The reference implementations' way (pytorch-fid, clean-fid): the general matrix square
    root scipy.linalg.sqrtm of S1 S2, real part. Well defined for positive definite inputs."""
    root = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    diff = mu1 - mu2
    return diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(root)


def random_spd(rng, dim):
    a = rng.normal(size=(dim, dim))
    return a @ a.T / dim + 0.1 * np.eye(dim)


def test_identical_gaussians_are_at_distance_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.normal(size=8), random_spd(rng, 8)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


def test_same_covariance_shifted_means_gives_squared_mean_distance():
    rng = np.random.default_rng(1)
    sigma = random_spd(rng, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = float(np.sum((mu1 - mu2) ** 2))
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("a", "b"), [(1.0, 3.0), (0.5, 0.2), (2.0, 2.0)])
def test_one_dimensional_gaussians(a, b):
    # N(0, a^2) vs N(0, b^2): a^2 + b^2 - 2ab = (a - b)^2.
    zero = np.zeros(1)
    got = frechet_distance(zero, np.array([[a * a]]), zero, np.array([[b * b]]))
    assert got == pytest.approx((a - b) ** 2, abs=1e-12)


def test_diagonal_covariances():
    s1 = np.array([1.0, 4.0, 9.0, 0.25])
    s2 = np.array([4.0, 1.0, 9.0, 1.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    expected = np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2) + np.sum((mu1 - mu2) ** 2)
    # (1-2)^2 + (2-1)^2 + 0 + (0.5-1)^2 = 2.25, plus means 1 + 4 = 5 -> 7.25
    assert expected == pytest.approx(7.25)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(7.25)


@pytest.mark.parametrize(("seed", "dim"), [(0, 2), (1, 5), (2, 16), (3, 40)])
def test_matches_eigendecomposition_reference_on_random_spd(seed, dim):
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    s1, s2 = random_spd(rng, dim), random_spd(rng, dim)
    expected = reference_frechet(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    # A distance: symmetric in its arguments.
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-8)


def test_rank_deficient_covariances_give_the_exact_value():
    # Fewer samples than dimensions: both covariances are singular. The reference's sqrtm
    # needs an eps * I offset there; the value is approached as eps -> 0, and met exactly here.
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(20, 64)), rng.normal(size=(20, 64)) + 0.3
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    got = frechet_distance(a.mean(0), s1, b.mean(0), s2)
    offsets = [
        reference_frechet(a.mean(0), s1 + e * np.eye(64), b.mean(0), s2 + e * np.eye(64))
        for e in (1e-2, 1e-4, 1e-6)
    ]
    errors = [abs(o - got) for o in offsets]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3 * got
    # With the raw rows the same value comes from a small singular value problem.
    assert fid_from_features(a, b) == pytest.approx(got, rel=1e-7)


def test_identical_singular_covariances_give_zero_not_a_negative_offset_artefact():
    # Mixing offset and raw covariances would leave -2 * dim * eps here.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(10, 64))
    sigma = np.cov(x, rowvar=False)
    assert frechet_distance(x.mean(0), sigma, x.mean(0), sigma) == pytest.approx(0.0, abs=1e-7)


def test_singular_product_of_non_singular_looking_parts():
    # diag(1, 0) @ diag(0, 1) is the zero matrix; exact distance 1 + 1 - 0 = 2, with no
    # garbage from an ill-defined square root.
    zero = np.zeros(2)
    got = frechet_distance(zero, np.diag([1.0, 0.0]), zero, np.diag([0.0, 1.0]))
    assert got == pytest.approx(2.0, abs=1e-12)


def test_not_positive_semidefinite_input_raises_instead_of_being_clipped():
    zero = np.zeros(2)
    with pytest.raises(ValueError, match="not positive semi-definite"):
        frechet_distance(zero, np.diag([1.0, -1.0]), zero, np.eye(2))


@pytest.mark.parametrize(
    ("mu1", "sigma1", "mu2", "sigma2", "message"),
    [
        (np.zeros(3), np.eye(3), np.zeros(2), np.eye(2), "different dimensions"),
        (np.zeros(3), np.eye(2), np.zeros(3), np.eye(3), "shape"),
        (np.zeros((3, 1)), np.eye(3), np.zeros(3), np.eye(3), "vector"),
        (np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2), "symmetric"),
        (np.array([np.nan, 0.0]), np.eye(2), np.zeros(2), np.eye(2), "NaN"),
    ],
)
def test_invalid_gaussians_are_rejected(mu1, sigma1, mu2, sigma2, message):
    with pytest.raises(ValueError, match=message):
        frechet_distance(mu1, sigma1, mu2, sigma2)


def test_fid_from_features_uses_sample_mean_and_unbiased_covariance():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(50, 4)), rng.normal(size=(70, 4)) * 2 + 1
    expected = reference_frechet(a.mean(0), np.cov(a.T), b.mean(0), np.cov(b.T))
    assert fid_from_features(a, b) == pytest.approx(expected, rel=1e-8)
    assert fid_from_features(a, b) > fid_from_features(a, a[::-1]) == pytest.approx(0, abs=1e-9)


def test_fid_from_features_rejects_bad_shapes():
    with pytest.raises(ValueError, match="dimensions differ"):
        fid_from_features(np.ones((5, 3)), np.ones((5, 4)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        fid_from_features(np.ones((1, 3)), np.ones((5, 3)))


@pytest.mark.parametrize(("n1", "n2", "dim"), [(5, 9, 32), (30, 12, 64), (3, 3, 512)])
def test_the_small_svd_path_of_fid_from_features_equals_the_covariance_path(n1, n2, dim):
    # (3, 3, 512): far fewer images than feature dimensions, the regime of Inception's 2048
    # at small counts; 512 keeps the covariance path (cubic in the width) under a second.
    rng = np.random.default_rng(n1 * n2)
    a, b = rng.normal(size=(n1, dim)), rng.normal(size=(n2, dim)) * 1.5 + 0.2
    via_covariances = frechet_distance(
        a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    )
    assert fid_from_features(a, b) == pytest.approx(via_covariances, rel=1e-7)


def test_fid_from_statistics_matches_features():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(40, 5)), rng.normal(size=(30, 5)) + 0.5
    sa, sb = StreamingGaussian(5), StreamingGaussian(5)
    sa.update(a[:13])
    sa.update(a[13:])
    sb.update(b)
    assert fid_from_statistics(sa, sb) == pytest.approx(fid_from_features(a, b), rel=1e-9)


def test_feature_distance_to_reference_is_mahalanobis():
    rng = np.random.default_rng(8)
    real = rng.normal(size=(200, 3)) * np.array([1.0, 5.0, 0.2])
    reference = StreamingGaussian(3)
    reference.update(real)
    at_mean = feature_distance_to_reference(reference.mean, reference)
    outlier = feature_distance_to_reference(reference.mean + np.array([0, 0, 2.0]), reference)
    assert at_mean == pytest.approx(0.0, abs=1e-6)
    assert outlier > 5
    # The same Euclidean step counts less along the high-variance axis.
    along_wide = feature_distance_to_reference(reference.mean + np.array([0, 2.0, 0]), reference)
    assert along_wide < outlier
    x = rng.normal(size=3)
    inverse = np.linalg.inv(reference.covariance + 1e-6 * np.eye(3))
    d = x - reference.mean
    assert feature_distance_to_reference(x, reference) == pytest.approx(np.sqrt(d @ inverse @ d))


def test_batched_distances_equal_one_at_a_time():
    rng = np.random.default_rng(9)
    reference = StreamingGaussian(4)
    reference.update(rng.normal(size=(30, 4)))
    points = rng.normal(size=(5, 4)) * 3
    batched = feature_distances_to_reference(points, reference)
    singles = [feature_distance_to_reference(p, reference) for p in points]
    np.testing.assert_allclose(batched, singles, rtol=1e-12)


def test_feature_distance_rejects_mismatched_dimensions():
    reference = StreamingGaussian(4)
    reference.update(np.random.default_rng(10).normal(size=(10, 4)))
    with pytest.raises(ValueError, match="dim"):
        feature_distance_to_reference(np.zeros(3), reference)
    with pytest.raises(ValueError, match="one vector"):
        feature_distance_to_reference(np.zeros((2, 4)), reference)
