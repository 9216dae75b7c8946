"""KID: the unbiased MMD^2 estimator against a brute-force double loop, near zero for equal
distributions, positive for shifted ones, reproducible by seed."""

import numpy as np
import pytest

from fairskin.metrics import kernel_inception_distance


def brute_force_unbiased_mmd2(x, y):
    d = x.shape[1]

    def k(u, v):
        return (float(np.dot(u, v)) / d + 1.0) ** 3

    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_whole_set_subsets_equal_the_brute_force_estimate():
    # subset_size 100 is capped at the 12 rows available, so every subset is a permutation of
    # the full sets and the estimate is the same for all of them.
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(12, 5)), rng.normal(size=(12, 5)) * 1.5 + 0.2
    mean, std = kernel_inception_distance(a, b, n_subsets=5)
    assert mean == pytest.approx(brute_force_unbiased_mmd2(a, b), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-10)


def test_subsets_are_capped_at_the_smaller_set():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(8, 3)), rng.normal(size=(30, 3)) + 0.3
    capped = kernel_inception_distance(a, b, subset_size=50, n_subsets=6, seed=3)
    assert capped == kernel_inception_distance(a, b, subset_size=8, n_subsets=6, seed=3)
    # Different rows of b are drawn each time, so the estimates genuinely vary.
    assert capped[1] > 0


def test_same_distribution_is_near_zero_and_a_shift_is_clearly_positive():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(600, 16)), rng.normal(size=(600, 16))
    same, same_std = kernel_inception_distance(a, b, subset_size=50, n_subsets=100)
    shifted, shifted_std = kernel_inception_distance(a, b + 0.5, subset_size=50, n_subsets=100)
    # Small subsets on purpose: the biased V-statistic (diagonal kept) averages about 0.4 here,
    # the unbiased estimate stays within a few thousandths of zero.
    assert abs(same) < 0.03
    assert same_std > 0
    assert shifted > 0.5 and shifted > 3 * shifted_std


def test_seeded_and_reproducible():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(80, 4)), rng.normal(size=(90, 4)) + 0.1
    first = kernel_inception_distance(a, b, subset_size=20, n_subsets=10, seed=7)
    assert kernel_inception_distance(a, b, subset_size=20, n_subsets=10, seed=7) == first
    assert kernel_inception_distance(a, b, subset_size=20, n_subsets=10, seed=8) != first


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "message"),
    [
        (np.ones((5, 3)), np.ones((5, 4)), {}, "dimensions differ"),
        (np.ones((1, 3)), np.ones((5, 3)), {}, "at least 2 rows"),
        (np.ones((5, 3)), np.ones((5, 3)), {"subset_size": 1}, "subset_size"),
        (np.ones((5, 3)), np.ones((5, 3)), {"n_subsets": 0}, "n_subsets"),
        (np.ones(5), np.ones((5, 3)), {}, r"\(n, dim\)"),
    ],
)
def test_invalid_inputs(a, b, kwargs, message):
    with pytest.raises(ValueError, match=message):
        kernel_inception_distance(a, b, **kwargs)
