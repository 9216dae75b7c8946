import numpy as np
import pytest

from fairskin.generation.plan import decide_stratum
from fairskin.generation.scoring_config import ScoringConfig
from fairskin.generation.similarity import EmbeddingIndex, NearDuplicateCheck, is_near_duplicate


def test_nearest_neighbours_match_a_brute_force_search():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(500, 32))
    queries = rng.normal(size=(7, 32))
    index = EmbeddingIndex(train, [f"img{i}" for i in range(500)])
    found = index.nearest(queries, k=4)
    for query, hits in zip(queries, found, strict=True):
        cos = train @ query / (np.linalg.norm(train, axis=1) * np.linalg.norm(query))
        expected = [f"img{i}" for i in np.argsort(-cos)[:4]]
        assert [h[0] for h in hits] == expected
        assert hits[0][1] == pytest.approx(cos.max(), abs=1e-5)


def test_a_copied_training_image_is_its_own_nearest_neighbour():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(100, 16))
    hits = EmbeddingIndex(train, list(range(100))).nearest(train[42] * 3.0, k=1)[0]
    assert hits == [(42, pytest.approx(1.0, abs=1e-5))]


def test_near_duplicates_by_cosine():
    a = np.array([1.0, 0.0, 0.0])
    assert not is_near_duplicate(a, [])
    assert is_near_duplicate(a * 2, [np.array([0.0, 1.0, 0.0]), a])
    assert not is_near_duplicate(np.array([1.0, 1.0, 0.0]), [a])  # cosine 0.707
    with pytest.raises(ValueError, match="zero vector"):
        is_near_duplicate(np.zeros(3), [a])


def test_duplicate_check_plugs_into_seed_order_acceptance():
    e = {i: np.eye(3)[i % 2] for i in range(4)}  # 0 and 2 alike, 1 and 3 alike
    decision = decide_stratum(
        4, 4, {i: ((), e[i]) for i in range(4)}, is_duplicate=is_near_duplicate
    )
    assert decision.accepted == [0, 1] and decision.shortfall == 2


def test_a_batchs_duplicate_check_applies_as_its_clip_calibration_and_config_say():
    a, close, far = np.array([1.0, 0.0]), np.array([1.0, 0.2]), np.array([1.0, 1.0])
    default = ScoringConfig.build(None)
    # Uncalibrated CLIP and not asked for: nothing is a duplicate, not even the same vector.
    off = NearDuplicateCheck.for_batch(default, clip_calibrated=False)
    assert not off.applied and not off(a, [a])
    calibrated = NearDuplicateCheck.for_batch(default, clip_calibrated=True)
    assert calibrated.applied and calibrated.threshold == default.duplicate_cosine == 0.95
    assert calibrated(a, [far, a]) and calibrated(close, [a])  # cosine 0.981
    assert not calibrated(far, [a]) and not calibrated(a, [])  # cosine 0.707
    asked = NearDuplicateCheck.for_batch(
        ScoringConfig.build({"apply_uncalibrated": ["duplicate"], "duplicate_cosine": 0.99}),
        clip_calibrated=False,
    )
    assert asked.applied and asked(a, [a]) and not asked(close, [a])  # its own threshold
