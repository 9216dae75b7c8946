"""Generation metrics: FID and KID from (streamed) features, embedding diversity, and the
provenance of the feature extractor that every stored value must carry.

The maths is NumPy/SciPy only and re-exported here. `fairskin.metrics.extractors` imports torch
and torchvision, so it is left for callers to import explicitly: a web process reading stored
statistics should not pay for loading torch.
"""

from fairskin.metrics.diversity import mean_pairwise_cosine_distance
from fairskin.metrics.fid import (
    feature_distance_to_reference,
    feature_distances_to_reference,
    fid_from_features,
    fid_from_statistics,
    frechet_distance,
)
from fairskin.metrics.kid import kernel_inception_distance
from fairskin.metrics.stats import StreamingGaussian

__all__ = [
    "StreamingGaussian",
    "feature_distance_to_reference",
    "feature_distances_to_reference",
    "fid_from_features",
    "fid_from_statistics",
    "frechet_distance",
    "kernel_inception_distance",
    "mean_pairwise_cosine_distance",
]
