"""Training losses: min-SNR weighted denoising loss and FairSkin's class diversity loss."""

from __future__ import annotations

from collections import deque

import torch
import torch.nn.functional as F


def min_snr_weights(snr: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample weights min(SNR, gamma) / SNR for epsilon prediction (Hang et al., 2023)."""
    return torch.clamp(snr, max=gamma) / snr


def denoising_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    snr: torch.Tensor | None = None,
    gamma: float | None = None,
) -> torch.Tensor:
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(
        dim=tuple(range(1, pred.ndim))
    )
    if gamma is not None and snr is not None:
        per_sample = per_sample * min_snr_weights(snr.float(), gamma)
    return per_sample.mean()


def predicted_clean_latents(
    noisy: torch.Tensor, eps: torch.Tensor, alphas_cumprod_t: torch.Tensor
) -> torch.Tensor:
    """x0 estimate from the noise prediction: (x_t - sqrt(1 - a) eps) / sqrt(a)."""
    a = alphas_cumprod_t.float().view(-1, *([1] * (noisy.ndim - 1)))
    return (noisy.float() - (1 - a).sqrt() * eps.float()) / a.sqrt()


def diversity_embedding(clean_latents: torch.Tensor, size: int = 4) -> torch.Tensor:
    """What the diversity loss compares: the predicted clean latent pooled to size x size.

    Why these embeddings: the loss should push apart what the model would draw, and the
    predicted clean latent is that drawing, available at every step at no extra cost. Pooling
    keeps the layout and colour of the lesion and skin and drops pixel noise. CLIP image
    features would need a VAE decode and a CLIP forward pass per sample and per step, and
    CLIP weights that this deployment may not have.
    """
    return F.adaptive_avg_pool2d(clean_latents, size).flatten(1)


class DiversityLoss:
    """Mean cosine similarity between embeddings of same-class samples (= 1 - mean cosine
    distance): high when a class collapses to one look, low when its samples vary.

    Compares each sample with the other same-class samples of its batch and with a pool of
    recent same-class embeddings (detached, at most ``pool_size`` per class), since a batch of
    four rarely holds two images of one class.
    """

    def __init__(self, pool_size: int = 16) -> None:
        self.pool_size = pool_size
        self.pools: dict[str, deque[torch.Tensor]] = {}

    def __call__(self, embeddings: torch.Tensor, labels: list[str]) -> torch.Tensor:
        normed = F.normalize(embeddings.float(), dim=1)
        terms = []
        for i, label in enumerate(labels):
            others = [normed[j] for j, other in enumerate(labels) if other == label and j != i]
            others += list(self.pools.get(label, ()))
            if others:
                terms.append((torch.stack(others).to(normed.device) @ normed[i]).mean())
        for i, label in enumerate(labels):
            pool = self.pools.setdefault(label, deque(maxlen=self.pool_size))
            pool.append(normed[i].detach().cpu())
        if not terms:
            return embeddings.sum() * 0.0  # keeps the graph, contributes nothing
        return torch.stack(terms).mean()

    def state(self) -> dict[str, list[torch.Tensor]]:
        return {label: list(pool) for label, pool in self.pools.items()}

    def restore(self, state: dict[str, list[torch.Tensor]]) -> None:
        self.pools = {label: deque(items, maxlen=self.pool_size) for label, items in state.items()}
