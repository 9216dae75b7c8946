"""Excess FID at equal counts: its N rule, its null centred on zero at any count while raw FID
is not, FID units for a known mean shift, seeded reproducibility and clear errors."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from fairskin.metrics import fid_from_features
from fairskin.metrics.excess_fid import equal_count, excess_fid


@pytest.fixture(autouse=True)
def one_blas_thread():
    # Many small products: BLAS threads only fight over the cores here.
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def test_the_common_size_leaves_two_disjoint_real_halves():
    assert equal_count(30, 40) == 20
    assert equal_count(500, 2000) == 500
    assert equal_count(12, 500) == 12
    assert equal_count(0, 10) == 0
    with pytest.raises(ValueError, match="n_real must be a non-negative integer"):
        equal_count(5, -1)


def test_null_is_centred_on_zero_at_small_counts_where_raw_fid_is_large():
    dim, medians, raw = 16, [], []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        synthetic, real = rng.normal(size=(12, dim)), rng.normal(size=(40, dim))
        result = excess_fid(synthetic, real, repeats=20, seed=seed)
        assert result.n == 12
        medians.append(result.median)
        raw.append(fid_from_features(synthetic, real))
        # The real-vs-real FID at this N is the bias removed: far from zero for identical sets.
        assert result.null_median > 5
        assert result.fid_median - result.null_median == pytest.approx(result.median, abs=5)
    medians_ = np.asarray(medians)
    # Raw FID of identical distributions at 12 vs 40 images sits far above zero ...
    assert np.mean(raw) > 10
    # ... the excess does not: its mean over seeds is within three standard errors of 0.
    assert abs(medians_.mean()) < 3 * medians_.std(ddof=1) / np.sqrt(len(medians_))
    assert (medians_ > 0).sum() in range(8, 23)  # symmetric: about half above zero


def test_a_known_mean_shift_is_measured_in_fid_units():
    rng = np.random.default_rng(7)
    dim, true_fid = 8, 40.0
    shift = np.full(dim, np.sqrt(true_fid / dim))  # ||shift||^2 = 40, the population FID
    synthetic = rng.normal(size=(400, dim)) + shift
    real = rng.normal(size=(800, dim))
    result = excess_fid(synthetic, real, repeats=20, seed=1)
    assert result.n == 400
    assert result.median == pytest.approx(true_fid, rel=0.1)
    assert result.low < result.median < result.high


def test_draws_are_seeded():
    rng = np.random.default_rng(3)
    synthetic, real = rng.normal(size=(30, 6)), rng.normal(size=(70, 6))
    first = excess_fid(synthetic, real, repeats=8, seed=[4, 5])
    assert first == excess_fid(synthetic, real, repeats=8, seed=[4, 5])
    assert first != excess_fid(synthetic, real, repeats=8, seed=[4, 6])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 21}, "size 21 needs 21 synthetic and 42 real rows"),
        ({"n": 1}, "common size must be an integer >= 2"),
        ({"repeats": 0}, "repeats must be a positive integer"),
        ({"level": 1.0}, "level must be in"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=message):
        excess_fid(rng.normal(size=(30, 4)), rng.normal(size=(40, 4)), **kwargs)


def test_mismatched_or_malformed_features_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="feature dimensions differ: 4 vs 5"):
        excess_fid(rng.normal(size=(30, 4)), rng.normal(size=(40, 5)))
    with pytest.raises(ValueError, match=r"synthetic must be a \(n, dim\) array"):
        excess_fid(rng.normal(size=30), rng.normal(size=(40, 4)))
    with pytest.raises(ValueError, match="common size must be an integer >= 2"):
        excess_fid(rng.normal(size=(30, 4)), rng.normal(size=(3, 4)))
