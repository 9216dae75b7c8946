"""The networks candidate scoring needs (Inception, LPIPS, CLIP and optionally the trained
classifier), loaded once, each with the provenance of its weights.

A `Reference` records the provenance it was built with, and a `Scorer` refuses networks whose
weights differ from it, so the two always compare like with like.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fairskin.metrics.extractors import (
    DEFAULT_CLIP_MODEL,
    Embedder,
    ExtractorInfo,
    FeatureExtractor,
    PerceptualDistance,
    clip_image_embedder,
    inception_features_extractor,
    lpips_metric,
    sha256_prefix,
)


@dataclass
class Extractors:
    """The networks scoring needs, each with the provenance of its weights."""

    inception: tuple[FeatureExtractor, ExtractorInfo]
    lpips: tuple[PerceptualDistance, ExtractorInfo]
    clip: tuple[Embedder, ExtractorInfo]
    classifier: tuple[nn.Module, dict[str, Any], ExtractorInfo] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def load(
        cls,
        *,
        device: str | torch.device,
        inception_weights: str | None = None,
        lpips_weights: str | None = None,
        clip_model: str = DEFAULT_CLIP_MODEL,
        clip_weights: str | None = None,
        classifier_dir: str | Path | None = None,
    ) -> Extractors:
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
        return {
            key: {
                "name": info.name,
                "weights": info.weights,
                "calibrated": info.calibrated,
                "label": info.label,
            }
            for key, info in infos.items()
        }
