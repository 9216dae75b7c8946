"""Streaming mean/covariance: equal to numpy on the concatenated data, exact shard merges,
lossless JSON storage."""

import json

import numpy as np
import pytest

from fairskin.metrics import StreamingGaussian


def feed(stats, data, sizes):
    start = 0
    for size in sizes:
        stats.update(data[start : start + size])
        start += size
    assert start == len(data)


def test_uneven_batches_match_numpy_on_concatenated_data():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(103, 7)) @ rng.normal(size=(7, 7)) + rng.normal(size=7)
    stats = StreamingGaussian(7)
    feed(stats, data, [1, 0, 40, 2, 60])
    assert stats.count == 103
    np.testing.assert_allclose(stats.mean, np.mean(data, axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats.covariance, np.cov(data, rowvar=False), rtol=1e-10, atol=1e-12)


def test_large_mean_small_spread_keeps_precision():
    # Raw sums of x and x x^T would cancel catastrophically here (x^2 ~ 1e16 vs a spread of 1).
    rng = np.random.default_rng(1)
    data = rng.normal(size=(500, 3)) + 1e8
    stats = StreamingGaussian(3)
    feed(stats, data, [100] * 5)
    np.testing.assert_allclose(stats.covariance, np.cov(data, rowvar=False), rtol=1e-6, atol=1e-6)


def test_merging_shards_equals_one_pass():
    rng = np.random.default_rng(2)
    data = rng.normal(size=(90, 5)) * np.arange(1, 6) + 3
    one_pass = StreamingGaussian(5)
    one_pass.update(data)
    shards = [StreamingGaussian(5) for _ in range(3)]
    feed(shards[0], data[:10], [10])
    feed(shards[1], data[10:55], [20, 25])
    feed(shards[2], data[55:], [35])
    total = StreamingGaussian(5)
    for shard in reversed(shards):  # order must not matter
        total.merge(shard)
    total.merge(StreamingGaussian(5))  # an empty shard changes nothing
    assert total.count == 90
    np.testing.assert_allclose(total.mean, one_pass.mean, rtol=1e-12)
    np.testing.assert_allclose(total.covariance, one_pass.covariance, rtol=1e-10)
    # The shards themselves are left as they were.
    assert shards[0].count == 10


def test_merge_with_itself_counts_the_data_twice():
    rng = np.random.default_rng(3)
    data = rng.normal(size=(20, 3))
    stats = StreamingGaussian(3)
    stats.update(data)
    stats.merge(stats)
    doubled = np.concatenate([data, data])
    assert stats.count == 40
    np.testing.assert_allclose(stats.covariance, np.cov(doubled, rowvar=False), rtol=1e-10)


def test_dict_round_trip_through_json_is_exact_and_keeps_accumulating():
    rng = np.random.default_rng(4)
    data = rng.normal(size=(60, 4))
    stats = StreamingGaussian(4)
    stats.update(data[:30])
    stored = json.loads(json.dumps(stats.to_dict()))
    restored = StreamingGaussian.from_dict(stored)
    assert restored.count == 30 and restored.dim == 4
    np.testing.assert_array_equal(restored.mean, stats.mean)
    np.testing.assert_array_equal(restored.covariance, stats.covariance)
    # Symmetric matrix stored once: dim * (dim + 1) / 2 values.
    assert len(stored["m2_upper"]) == 10
    restored.update(data[30:])
    np.testing.assert_allclose(restored.covariance, np.cov(data, rowvar=False), rtol=1e-10)


def test_empty_statistics_round_trip_and_refuse_to_report():
    restored = StreamingGaussian.from_dict(StreamingGaussian(2).to_dict())
    assert restored.count == 0
    with pytest.raises(ValueError, match="no vectors"):
        restored.mean  # noqa: B018
    restored.update(np.ones((1, 2)))
    with pytest.raises(ValueError, match="at least 2"):
        restored.covariance  # noqa: B018


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("m2_upper"), "missing"),
        (lambda d: d.update(format=99), "format"),
        (lambda d: d.update(mean=[0.0]), "expected 3 means"),
        (lambda d: d.update(m2_upper=[0.0] * 5), "upper-triangle"),
        (lambda d: d.update(count=-1), "count"),
        (lambda d: d.update(mean=[0.0, float("nan"), 0.0]), "NaN"),
    ],
)
def test_from_dict_rejects_corrupt_statistics(change, message):
    data = StreamingGaussian(3).to_dict()
    change(data)
    with pytest.raises(ValueError, match=message):
        StreamingGaussian.from_dict(data)


def test_bad_updates_are_rejected_and_change_nothing():
    stats = StreamingGaussian(3)
    stats.update(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        stats.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        stats.update(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        stats.update(np.array([[1.0, np.nan, 0.0]]))
    with pytest.raises(ValueError, match="merge dim 2"):
        stats.merge(StreamingGaussian(2))
    with pytest.raises(ValueError, match="positive integer"):
        StreamingGaussian(0)
    assert stats.count == 2
    np.testing.assert_array_equal(stats.covariance, np.zeros((3, 3)))
