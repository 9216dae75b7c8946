"""Mean pairwise cosine distance against a double loop, and its fixed points."""

import numpy as np
import pytest

from fairskin.metrics import mean_pairwise_cosine_distance


def brute_force(embeddings):
    n = len(embeddings)
    total, pairs = 0.0, 0
    for i in range(n):
        for j in range(i + 1, n):
            u, v = embeddings[i], embeddings[j]
            total += 1 - np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))
            pairs += 1
    return total / pairs


@pytest.mark.parametrize(("seed", "n", "dim"), [(0, 2, 3), (1, 7, 5), (2, 40, 16)])
def test_matches_double_loop(seed, n, dim):
    rng = np.random.default_rng(seed)
    # Positive offset so the mean cosine is far from zero and a wrong pair count would show.
    embeddings = rng.normal(size=(n, dim)) + 0.7
    assert mean_pairwise_cosine_distance(embeddings) == pytest.approx(brute_force(embeddings))


def test_identical_vectors_have_zero_diversity_whatever_their_length():
    v = np.array([0.3, -1.2, 2.0])
    assert mean_pairwise_cosine_distance(np.stack([v, v, 5 * v, v])) == pytest.approx(0, abs=1e-12)


def test_orthogonal_vectors_are_at_distance_one_and_opposite_at_two():
    assert mean_pairwise_cosine_distance(np.eye(6)) == pytest.approx(1.0)
    assert mean_pairwise_cosine_distance(np.array([[1.0, 2.0], [-1.0, -2.0]])) == pytest.approx(2.0)


def test_fewer_than_two_or_zero_vectors_are_rejected():
    with pytest.raises(ValueError, match="at least 2"):
        mean_pairwise_cosine_distance(np.ones((1, 4)))
    with pytest.raises(ValueError, match="zero vectors"):
        mean_pairwise_cosine_distance(np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"\(n, dim\)"):
        mean_pairwise_cosine_distance(np.ones(4))
